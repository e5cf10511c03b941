"""Which credential the Vault provider uses, read from the environment."""

from __future__ import annotations

from devdep.config.schema import Secrets
from devdep.secrets.vault import DEFAULT_TIMEOUT, VaultSettings

SECRETS = Secrets.model_validate(
    {
        "provider": "hashicorp-vault",
        "address": "https://vault.acme.com:8200/",
        "mappings": [{"env": "DB_PASSKEY", "source": "prod/db/password"}],
    }
)


def test_devdep_vault_token_comes_before_vault_token() -> None:
    both = VaultSettings.from_config(
        SECRETS, {"DEVDEP_VAULT_TOKEN": "s.devdep", "VAULT_TOKEN": "s.vault"}
    )
    only_vault = VaultSettings.from_config(SECRETS, {"VAULT_TOKEN": "s.vault"})
    assert (both.token, both.token_variable) == ("s.devdep", "DEVDEP_VAULT_TOKEN")
    assert (only_vault.token, only_vault.token_variable) == ("s.vault", "VAULT_TOKEN")


def test_approle_and_jwt_settings_and_their_defaults() -> None:
    settings = VaultSettings.from_config(
        SECRETS,
        {
            "DEVDEP_VAULT_ROLE_ID": "role",
            "DEVDEP_VAULT_SECRET_ID": "secret-id",
            "DEVDEP_VAULT_RUN_POLICIES": " ci-read , ci-meta ,",
        },
    )
    assert settings.token is None
    assert (settings.role_id, settings.secret_id) == ("role", "secret-id")
    assert settings.approle_mount == "approle"
    assert (settings.jwt_role, settings.jwt_mount) == (None, "jwt")
    assert settings.run_policies == ("ci-read", "ci-meta")
    assert settings.address == "https://vault.acme.com:8200"
    assert settings.timeout == DEFAULT_TIMEOUT


def test_the_repr_holds_no_credential() -> None:
    settings = VaultSettings.from_config(
        SECRETS, {"DEVDEP_VAULT_TOKEN": "s.devdep", "DEVDEP_VAULT_SECRET_ID": "sid"}
    )
    assert "s.devdep" not in repr(settings) and "sid" not in repr(settings)


def test_a_bad_timeout_falls_back_to_the_default() -> None:
    assert (
        VaultSettings.from_config(SECRETS, {"DEVDEP_VAULT_TIMEOUT": "3"}).timeout == 3
    )
    for bad in ("0", "-1", "1.5", "soon"):
        settings = VaultSettings.from_config(SECRETS, {"DEVDEP_VAULT_TIMEOUT": bad})
        assert settings.timeout == DEFAULT_TIMEOUT
