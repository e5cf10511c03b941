"""The OpenBao identity provider fixture serves discovery and JWKS, and the
tokens it mints verify against them with a JOSE library of its own."""

from __future__ import annotations

import httpx
import jwt
import pytest

from tests.support.oidc import OidcProvider, configure_identity_provider


@pytest.mark.integration
def test_discovery_names_the_issuer_and_its_keys(oidc_provider: OidcProvider) -> None:
    discovery = httpx.get(oidc_provider.discovery_url, timeout=10).json()

    assert discovery["issuer"] == oidc_provider.issuer
    assert discovery["jwks_uri"] == oidc_provider.jwks_url
    assert "RS256" in discovery["id_token_signing_alg_values_supported"]


@pytest.mark.integration
def test_a_minted_token_verifies_against_the_published_keys(
    oidc_provider: OidcProvider,
) -> None:
    token = oidc_provider.issue_id_token("alice@acme.corp")

    header = jwt.get_unverified_header(token)
    keys = jwt.PyJWKSet.from_dict(httpx.get(oidc_provider.jwks_url, timeout=10).json())
    claims = jwt.decode(
        token,
        keys[header["kid"]].key,
        algorithms=["RS256"],
        audience=oidc_provider.audience,
        issuer=oidc_provider.issuer,
        options={"require": ["exp", "iat", "sub"]},
    )

    assert header["alg"] == "RS256"
    assert claims["email"] == "alice@acme.corp"
    assert claims["email_verified"] is True
    assert claims["exp"] - claims["iat"] == 3600


@pytest.mark.integration
def test_every_token_differs_and_each_email_is_its_own_entity(
    oidc_provider: OidcProvider,
) -> None:
    first = oidc_provider.issue_id_token("bob@acme.corp")
    second = oidc_provider.issue_id_token("bob@acme.corp")
    other = oidc_provider.issue_id_token("carol@gmail.com")

    def claims(token: str) -> dict[str, object]:
        return jwt.decode(token, options={"verify_signature": False})

    assert first != second
    assert claims(first)["sub"] == claims(second)["sub"]
    assert claims(other)["sub"] != claims(first)["sub"]
    assert claims(other)["email"] == "carol@gmail.com"


@pytest.mark.integration
def test_a_second_provider_on_the_same_server_reuses_its_entities(
    oidc_provider: OidcProvider,
) -> None:
    again = configure_identity_provider(oidc_provider.server)

    first = oidc_provider.issue_id_token("dave@acme.corp")
    second = again.issue_id_token("dave@acme.corp")

    def subject(token: str) -> object:
        return jwt.decode(token, options={"verify_signature": False})["sub"]

    assert again.issuer == oidc_provider.issuer
    assert subject(first) == subject(second)
