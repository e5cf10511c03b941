"""The errors of devdep.secrets, each a subclass of one of devdep's exit-code errors.

Every failure to resolve a secret mapping exits 201 (ERR_VAULT_MISMATCH) and
names the mapping, `DB_PASSKEY <- prod/database/api-user/password`, and the
reason. A problem with the local store's own files is the user's to fix and
exits 2::

    SecretsError
     ├── SecretResolutionError     VaultMismatch  201  a mapping cannot be resolved
     │    ├── VaultUnreachable                         connection refused, timed out
     │    ├── VaultDnsFailure                          the host name does not resolve
     │    ├── VaultTlsFailure                          handshake or certificate failed
     │    ├── VaultAuthFailed                          no credentials, or refused
     │    ├── VaultForbidden                           403 on the secret
     │    ├── SecretPathMissing                        no secret at that path
     │    ├── SecretKeyMissing                         the secret lacks the key
     │    └── VaultProtocolError                       any other answer from Vault
     └── LocalStoreError           UsageError       2  the local store's files
"""

from __future__ import annotations

from collections.abc import Sequence

from devdep.config.schema import SecretMapping
from devdep.errors import DevdepError, UsageError, VaultMismatch


def describe_mapping(mapping: SecretMapping) -> str:
    """`ENV <- source`: how every message names a mapping."""
    return f"{mapping.env} <- {mapping.source}"


class SecretsError(DevdepError):
    """The root of devdep.secrets' errors; never raised itself."""


class SecretResolutionError(SecretsError, VaultMismatch):
    """One or more mappings could not be resolved; `mappings` names them.

    A failure before any single secret is read (the address, the login) stops
    every mapping, so all of them are named.
    """

    default_hint = "check the secrets section of devdep.yaml and the Vault token"

    def __init__(
        self,
        mappings: Sequence[SecretMapping],
        reason: str,
        *,
        hint: str | None = None,
    ) -> None:
        described = ", ".join(describe_mapping(mapping) for mapping in mappings)
        subject = f"cannot resolve {described}" if described else "cannot open Vault"
        super().__init__(f"{subject}: {reason}", hint=hint or self.default_hint)
        self.mappings = list(mappings)
        self.reason = reason


class VaultUnreachable(SecretResolutionError):
    default_hint = "check the secrets address in devdep.yaml and that Vault is up"


class VaultDnsFailure(SecretResolutionError):
    default_hint = "check the host name of the secrets address in devdep.yaml"


class VaultTlsFailure(SecretResolutionError):
    default_hint = (
        "check the server's certificate; point DEVDEP_VAULT_CACERT at the CA "
        "bundle that signed it"
    )


class VaultAuthFailed(SecretResolutionError):
    default_hint = (
        "set DEVDEP_VAULT_TOKEN, or DEVDEP_VAULT_ROLE_ID and DEVDEP_VAULT_SECRET_ID, "
        "or log in so that the run has an OIDC token for JWT auth"
    )


class VaultForbidden(SecretResolutionError):
    default_hint = "grant the token's policy 'read' on the secret's path"


class SecretPathMissing(SecretResolutionError):
    default_hint = "check the mapping's source and the secrets mount in devdep.yaml"


class SecretKeyMissing(SecretResolutionError):
    default_hint = "the source ends with the key inside the secret: path/to/secret/key"


class VaultProtocolError(SecretResolutionError):
    default_hint = "check the Vault server's log"


class LocalStoreError(SecretsError, UsageError):
    """The local secret store, or its key, is unreadable, corrupt or unsafe."""
