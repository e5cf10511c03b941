"""The errors of devdep.auth, each a subclass of one of devdep's exit-code errors.

::

    AuthError
     ├── IdentityConfigError          UsageError         2  bad identity settings
     ├── ProviderNotConfigured        UsageError         2  CI variables missing
     ├── TokenRejected                OidcTimeout      101  an ID token failed a rule
     │    └── IdentityProviderUnavailable                   no keys could be fetched
     ├── TokenRequestFailed           OidcTimeout      101  getting a token failed
     └── DomainRefused                DomainRestricted 102  public or unlisted domain

A rejected token maps to 101 because the answer to it is the same as to an
expired session: authenticate again with a fresh token.
"""

from __future__ import annotations

from devdep.errors import DevdepError, DomainRestricted, OidcTimeout, UsageError

REAUTHENTICATE_HINT = "authenticate again with 'devdep-cli auth'"


class AuthError(DevdepError):
    """The root of devdep.auth's errors; never raised itself."""


class IdentityConfigError(AuthError, UsageError):
    """The identity settings (issuers, domains, bound claims) are invalid."""


class ProviderNotConfigured(AuthError, UsageError):
    """A token provider lacks what it needs, such as its CI variables."""


class TokenRejected(AuthError, OidcTimeout):
    """An ID token failed one of the verifier's rules; `rule` names which."""

    def __init__(self, rule: str, reason: str, *, hint: str | None = None) -> None:
        super().__init__(
            f"ID token rejected ({rule}): {reason}",
            hint=hint or REAUTHENTICATE_HINT,
        )
        self.rule = rule
        self.reason = reason


class IdentityProviderUnavailable(TokenRejected):
    """The issuer's discovery document or keys could not be fetched, and no
    earlier good keys are cached."""

    def __init__(self, issuer: str, reason: str) -> None:
        super().__init__(
            "idp-unavailable",
            f"cannot fetch the keys of {issuer}: {reason}",
            hint="try again later; the identity provider did not answer",
        )
        self.issuer = issuer


class TokenRequestFailed(AuthError, OidcTimeout):
    """Obtaining an ID token from a provider failed, was denied or expired."""


class DomainRefused(AuthError, DomainRestricted):
    """The identity's email domain is public, blocked, or not allowed."""

    CODE = "CRITICAL ERROR: INVALID_ENTITY_DOMAIN"

    def __init__(self, domain: str, reason: str) -> None:
        super().__init__(
            f"{self.CODE}: {reason}",
            hint="sign in with your corporate identity",
        )
        self.domain = domain
        self.reason = reason
