"""The root of devdep's exceptions and the one table that turns them into exit codes.

Every package raises its own subclasses of the seven errors below, so the CLI
never needs to know where an error came from to pick its exit code::

    DevdepError
     ├── JobFailed              1  ERR_JOB_FAILED
     ├── UsageError             2  ERR_USAGE
     ├── OidcTimeout          101  ERR_OIDC_TIMEOUT
     ├── DomainRestricted     102  ERR_DOMAIN_RESTRICTED
     ├── VaultMismatch        201  ERR_VAULT_MISMATCH
     ├── VmBootFailed         301  ERR_VM_BOOT_FAILED
     └── EgressViolation      401  ERR_EGRESS_VIOLATION

An exception that is not a DevdepError is a bug in devdep; the CLI reports it
as an internal error with exit code 70 (EX_SOFTWARE) and never hides it behind
one of the codes above.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """The process exit codes of `devdep-cli`, documented in docs/exit-codes.md."""

    SUCCESS = 0
    ERR_JOB_FAILED = 1
    ERR_USAGE = 2
    ERR_OIDC_TIMEOUT = 101
    ERR_DOMAIN_RESTRICTED = 102
    ERR_VAULT_MISMATCH = 201
    ERR_VM_BOOT_FAILED = 301
    ERR_EGRESS_VIOLATION = 401

    # Not part of the product's contract: an unexpected exception, i.e. a bug.
    INTERNAL_ERROR = 70


class DevdepError(Exception):
    """The root of every error devdep raises on purpose.

    `message` is one line. `details` are further lines that belong to it, such
    as every error found in a devdep.yaml. `hint` is one line telling the user
    what to do about it.
    """

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        details: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details or []


class JobFailed(DevdepError):
    """A pipeline step exited non-zero, or the pipeline ran past its timeout."""


class UsageError(DevdepError):
    """Bad command-line arguments or an invalid devdep.yaml."""


class OidcTimeout(DevdepError):
    """The session's trust window ran out, or the OIDC handshake expired."""


class DomainRestricted(DevdepError):
    """The identity's email domain is public or not allowed."""


class VaultMismatch(DevdepError):
    """A secret mapping could not be resolved against its provider."""


class VmBootFailed(DevdepError):
    """The micro-VM could not be started, or its guest never reported ready."""


class EgressViolation(DevdepError):
    """The guest tried to reach a destination its egress allowlist does not name."""


_EXIT_CODE_BY_ERROR: dict[type[DevdepError], ExitCode] = {
    JobFailed: ExitCode.ERR_JOB_FAILED,
    UsageError: ExitCode.ERR_USAGE,
    OidcTimeout: ExitCode.ERR_OIDC_TIMEOUT,
    DomainRestricted: ExitCode.ERR_DOMAIN_RESTRICTED,
    VaultMismatch: ExitCode.ERR_VAULT_MISMATCH,
    VmBootFailed: ExitCode.ERR_VM_BOOT_FAILED,
    EgressViolation: ExitCode.ERR_EGRESS_VIOLATION,
}


def exit_code_for(error: BaseException) -> ExitCode:
    """The exit code for `error`; the seven mapped classes never inherit from
    each other, so at most one of them matches."""
    for error_type, code in _EXIT_CODE_BY_ERROR.items():
        if isinstance(error, error_type):
            return code
    return ExitCode.INTERNAL_ERROR
