"""Secrets for runs: providers (Vault/OpenBao, local), sealed memfds, redaction.

A value is read from its provider into an anonymous sealed memfd, handed to the
guest over the agent channel, and redacted from everything the host shows or
stores. docs/secrets.md describes the whole path.
"""

from devdep.secrets.errors import (
    LocalStoreError,
    SecretKeyMissing,
    SecretPathMissing,
    SecretResolutionError,
    SecretsError,
    VaultAuthFailed,
    VaultDnsFailure,
    VaultForbidden,
    VaultProtocolError,
    VaultTlsFailure,
    VaultUnreachable,
)
from devdep.secrets.local import LocalSecretStore
from devdep.secrets.memfd import SealedSecret
from devdep.secrets.redaction import (
    LogRedaction,
    RedactingStream,
    Redactor,
    install_log_redaction,
    remove_log_redaction,
)
from devdep.secrets.session import SecretSession, check_mappings

__all__ = [
    "LocalSecretStore",
    "LocalStoreError",
    "LogRedaction",
    "RedactingStream",
    "Redactor",
    "SealedSecret",
    "SecretKeyMissing",
    "SecretPathMissing",
    "SecretResolutionError",
    "SecretSession",
    "SecretsError",
    "VaultAuthFailed",
    "VaultDnsFailure",
    "VaultForbidden",
    "VaultProtocolError",
    "VaultTlsFailure",
    "VaultUnreachable",
    "check_mappings",
    "install_log_redaction",
    "remove_log_redaction",
]
