"""The verifier against a real identity provider: OpenBao's identity OIDC,
discovery and JWKS fetched over HTTP, tokens signed by OpenBao."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import pytest

from devdep.auth.errors import DomainRefused, TokenRejected
from devdep.auth.settings import IdentitySettings
from devdep.auth.tokens import TokenVerifier, signing_keys_from_jwks
from tests.support.oidc import OidcProvider

pytestmark = pytest.mark.integration


@pytest.fixture
def verifier(oidc_provider: OidcProvider) -> Iterator[TokenVerifier]:
    settings = IdentitySettings.model_validate(
        {
            "allowed_domains": ["acme.corp"],
            "issuers": [oidc_provider.issuer_config("openbao")],
        }
    )
    with TokenVerifier(settings) as verifier:
        yield verifier


def test_an_acme_corp_identity_is_accepted(
    oidc_provider: OidcProvider, verifier: TokenVerifier
) -> None:
    identity = verifier.verify(oidc_provider.issue_id_token("alice@acme.corp"))

    assert identity.issuer_name == "openbao"
    assert identity.issuer == oidc_provider.issuer
    assert identity.email == "alice@acme.corp"
    assert (identity.algorithm, identity.key_type, identity.key_size) == (
        "RS256",
        "RSA",
        2048,
    )
    assert identity.key_id


def test_a_gmail_identity_is_refused_for_its_domain(
    oidc_provider: OidcProvider, verifier: TokenVerifier
) -> None:
    with pytest.raises(DomainRefused) as caught:
        verifier.verify(oidc_provider.issue_id_token("mallory@gmail.com"))

    assert caught.value.message.startswith("CRITICAL ERROR: INVALID_ENTITY_DOMAIN")


def test_an_openbao_token_is_usable_once(
    oidc_provider: OidcProvider, verifier: TokenVerifier
) -> None:
    token = oidc_provider.issue_id_token("alice@acme.corp")
    verifier.verify(token)

    with pytest.raises(TokenRejected) as caught:
        verifier.verify(token)
    assert caught.value.rule == "replay"


def test_an_altered_openbao_token_is_refused(
    oidc_provider: OidcProvider, verifier: TokenVerifier
) -> None:
    header, payload, signature = oidc_provider.issue_id_token("bob@acme.corp").split(
        "."
    )
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["email"] = "boss@acme.corp"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()

    with pytest.raises(TokenRejected) as caught:
        verifier.verify(f"{header}.{forged}.{signature}")
    assert caught.value.rule == "signature"


def test_the_metadata_summary_names_openbao_documents(
    oidc_provider: OidcProvider, verifier: TokenVerifier
) -> None:
    summary = verifier.metadata_summary("openbao")

    assert summary["discovery_url"] == oidc_provider.discovery_url
    assert summary["jwks_uri"] == oidc_provider.jwks_url
    assert "RS256" in summary["algorithms"]


@pytest.mark.parametrize(("algorithm", "key_type"), [("ES256", "EC"), ("EdDSA", "OKP")])
def test_openbao_ec_and_ed25519_keys_are_usable(
    oidc_provider: OidcProvider, algorithm: str, key_type: str
) -> None:
    name = f"devdep-test-{algorithm.lower()}"
    with oidc_provider.server.client() as admin:
        created = admin.post(
            f"/v1/identity/oidc/key/{name}",
            json={"algorithm": algorithm, "rotation_period": "24h"},
        )
        assert created.status_code < 300, created.text
        # OpenBao publishes a key only once a role signs with it.
        role = admin.post(f"/v1/identity/oidc/role/{name}", json={"key": name})
        assert role.status_code < 300, role.text
        jwks = httpx.get(oidc_provider.jwks_url, timeout=10).json()

    keys = signing_keys_from_jwks(jwks)

    assert any(k.algorithm == algorithm and k.key_type == key_type for k in keys)
