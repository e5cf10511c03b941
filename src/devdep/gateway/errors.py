"""The errors of devdep.gateway, on the server and in its client.

::

    GatewayError
     ├── GatewayConfigError    UsageError     2  the gateway.yaml is invalid
     ├── ListenError           UsageError     2  the listen address cannot be bound
     ├── TlsError              UsageError     2  certificate or key unusable
     ├── GatewayUnreachable    UsageError     2  no answer from the gateway
     ├── GatewayRequestFailed  UsageError     2  the gateway refused a request
     ├── NotAuthenticated      OidcTimeout  101  no, or an unknown, credential
     ├── SessionEnded          OidcTimeout  101  the session expired or was revoked
     ├── TokenRefused          OidcTimeout  101  the gateway rejected the ID token
     └── EntityDomainRefused   DomainRestricted 102  the gateway refused the domain

An unreachable gateway is a usage error (2) rather than a job failure (1): the
CLI cannot tell a wrong --gateway URL from a gateway that is down, and exit 1
stays reserved for a pipeline's own failure.
"""

from __future__ import annotations

from devdep.errors import DevdepError, DomainRestricted, OidcTimeout, UsageError

REAUTHENTICATE_HINT = "run 'devdep-cli auth' again to open a new session"


class GatewayError(DevdepError):
    """The root of devdep.gateway's errors; never raised itself."""


class GatewayConfigError(GatewayError, UsageError):
    """The gateway's configuration file is unreadable or invalid."""


class ListenError(GatewayError, UsageError):
    """The gateway cannot listen on its configured address."""


class TlsError(GatewayError, UsageError):
    """The configured certificate or private key cannot be loaded."""


class GatewayUnreachable(GatewayError, UsageError):
    """The gateway did not answer, or answered something that is not its API."""


class GatewayRequestFailed(GatewayError, UsageError):
    """The gateway answered a request with an error that is not about identity."""


class NotAuthenticated(GatewayError, OidcTimeout):
    """A request carried no session credential, or one no session has."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, hint=REAUTHENTICATE_HINT)


class SessionEnded(GatewayError, OidcTimeout):
    """The session has expired or was revoked; `state` says which."""

    def __init__(self, ticket: str, state: str) -> None:
        super().__init__(f"session {ticket} has {state}", hint=REAUTHENTICATE_HINT)
        self.ticket = ticket
        self.state = state


class TokenRefused(GatewayError, OidcTimeout):
    """The gateway rejected the ID token the client presented."""


class EntityDomainRefused(GatewayError, DomainRestricted):
    """The gateway refused the identity's email domain."""
