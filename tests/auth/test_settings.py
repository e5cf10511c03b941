"""Identity settings: what is refused when they load."""

from __future__ import annotations

from typing import Any

import pytest

from devdep.auth.errors import IdentityConfigError
from devdep.auth.settings import IdentitySettings, parse_identity_settings
from devdep.errors import ExitCode, exit_code_for

CORP = {"name": "corp", "issuer": "https://idp.acme.corp", "audience": "devdep-cli"}
GITHUB = {
    "name": "github",
    "issuer": "https://token.actions.githubusercontent.com",
    "audience": "devdep-github-actions",
    "bound_claims": {"repository_owner_id": "123", "ref": "refs/heads/main"},
}


def settings_with(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"allowed_domains": ["acme.corp"], "issuers": [CORP, GITHUB]}
    data.update(overrides)
    return data


def problems(data: dict[str, Any]) -> str:
    with pytest.raises(IdentityConfigError) as caught:
        parse_identity_settings(data)
    assert exit_code_for(caught.value) is ExitCode.ERR_USAGE
    return "\n".join(caught.value.details)


def test_the_documented_example_loads() -> None:
    settings = parse_identity_settings(
        settings_with(
            issuers=[
                CORP,
                GITHUB,
                {
                    "name": "gitlab",
                    "issuer": "https://gitlab.acme.corp",
                    "audience": "devdep-gitlab-actions",
                    "bound_claims": {
                        "project_path": "acme/api",
                        "ref_protected": "true",
                    },
                },
            ]
        )
    )

    assert [issuer.kind for issuer in settings.issuers] == ["corporate", "ci", "ci"]
    assert settings.issuer_named("gitlab").bound_claims["ref_protected"] == "true"


@pytest.mark.parametrize("value", [True, 123, 1.5])
def test_unquoted_yaml_scalars_in_bound_claims_are_refused(value: object) -> None:
    github = {**GITHUB, "bound_claims": {"repository_owner_id": value}}

    assert "must be a quoted string" in problems(settings_with(issuers=[github]))


@pytest.mark.parametrize("value", ["refs/heads/*", "refs/heads/ma?n", "*"])
def test_a_wildcard_in_a_bound_claim_is_refused(value: str) -> None:
    github = {**GITHUB, "bound_claims": {"repository_owner_id": "123", "ref": value}}

    found = problems(settings_with(issuers=[github]))

    assert "issuers.0.bound_claims" in found
    assert "wildcard" in found


@pytest.mark.parametrize(
    "bound_claims",
    [{"ref": "refs/heads/main"}, {"environment": "prod", "ref_type": "branch"}],
)
def test_ci_bound_claims_must_pin_a_repository_or_project(
    bound_claims: dict[str, str],
) -> None:
    found = problems(settings_with(issuers=[{**GITHUB, "bound_claims": bound_claims}]))

    assert "pin no repository or project" in found


def test_a_ci_issuer_without_bound_claims_is_refused() -> None:
    found = problems(
        settings_with(issuers=[{**GITHUB, "bound_claims": {}, "kind": "ci"}])
    )

    assert "without bound_claims" in found


@pytest.mark.parametrize(
    ("issuer", "message"),
    [
        ("http://idp.acme.corp", "must use https"),
        ("ftp://idp.acme.corp", "not an https URL"),
        ("idp.acme.corp", "not an https URL"),
        ("https://idp.acme.corp?x=1", "query"),
        ("https://user@idp.acme.corp", "user info"),
    ],
)
def test_an_issuer_must_be_an_https_url(issuer: str, message: str) -> None:
    found = problems(settings_with(issuers=[{**CORP, "issuer": issuer}]))

    assert message in found


@pytest.mark.parametrize(
    "issuer",
    [
        "http://127.0.0.1:8200/v1/identity/oidc",
        "http://localhost:9000",
        "http://[::1]:1",
    ],
)
def test_plain_http_is_allowed_on_loopback(issuer: str) -> None:
    settings = parse_identity_settings(
        settings_with(issuers=[{**CORP, "issuer": issuer}])
    )

    assert settings.issuers[0].issuer == issuer


def test_the_issuer_is_kept_exactly_as_written() -> None:
    written = "https://idp.acme.corp/"

    settings = parse_identity_settings(
        settings_with(issuers=[{**CORP, "issuer": written}])
    )

    assert settings.issuers[0].issuer == written


@pytest.mark.parametrize(
    ("domain", "message"),
    [
        ("gmail.com", "public email domain"),
        ("GMAIL.COM.", "public email domain"),
        ("corp.gmail.com", "public email domain"),
        ("*.acme.corp", "wildcard"),
        ("corp", "top-level domain"),
        ("acme..corp", "not a valid domain name"),
    ],
)
def test_allowed_domains_must_be_corporate_domain_names(
    domain: str, message: str
) -> None:
    assert message in problems(settings_with(allowed_domains=[domain]))


def test_listed_domains_are_normalised() -> None:
    settings = parse_identity_settings(
        settings_with(
            allowed_domains=["ACME.Corp."], blocked_domains=["BÜCHER.example"]
        )
    )

    assert settings.allowed_domains == ["acme.corp"]
    assert settings.blocked_domains == ["xn--bcher-kva.example"]


def test_issuer_names_must_be_unique() -> None:
    assert "unique: corp" in problems(settings_with(issuers=[CORP, CORP]))


def test_issuer_and_audience_pairs_must_be_unique() -> None:
    twin = {**CORP, "name": "corp-2"}

    assert "distinct audience" in problems(settings_with(issuers=[CORP, twin]))


def test_a_corporate_issuer_needs_allowed_domains() -> None:
    assert "needs allowed_domains" in problems(settings_with(allowed_domains=[]))


def test_a_ci_only_gateway_needs_no_allowed_domains() -> None:
    settings = IdentitySettings.model_validate({"issuers": [GITHUB]})

    assert settings.allowed_domains == []


@pytest.mark.parametrize(
    "data",
    [
        settings_with(unknown=1),
        settings_with(issuers=[{**CORP, "audiences": ["x"]}]),
        settings_with(issuers=[]),
        settings_with(issuers=[{**CORP, "name": "has space"}]),
        settings_with(issuers=[{**CORP, "audience": ""}]),
        settings_with(issuers=[{**GITHUB, "bound_claims": {"repository": ""}}]),
        settings_with(issuers=[{**GITHUB, "bound_claims": {"repository": ["a"]}}]),
    ],
)
def test_other_mistakes_are_usage_errors(data: dict[str, Any]) -> None:
    assert problems(data)
