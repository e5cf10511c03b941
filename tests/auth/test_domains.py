"""The corporate-domain policy: public providers, look-alikes, normalisation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devdep.auth.domains import (
    PUBLIC_EMAIL_DOMAINS,
    check_email_domain,
    domain_within,
    normalise_domain,
)
from devdep.auth.errors import DomainRefused
from devdep.auth.settings import IdentitySettings
from devdep.errors import ExitCode, exit_code_for

ISSUER = {"name": "corp", "issuer": "https://idp.acme.corp", "audience": "devdep-cli"}


def policy(allowed: list[str], blocked: list[str] | None = None) -> IdentitySettings:
    return IdentitySettings.model_validate(
        {
            "allowed_domains": allowed,
            "blocked_domains": blocked or [],
            "issuers": [ISSUER],
        }
    )


ACME = policy(["acme.corp", "bücher.example"])


def refusal(email: str, settings: IdentitySettings = ACME) -> DomainRefused:
    with pytest.raises(DomainRefused) as caught:
        check_email_domain(email, settings)
    return caught.value


@pytest.mark.parametrize(
    "domain",
    [
        "gmail.com",
        "googlemail.com",
        "outlook.com",
        "hotmail.com",
        "live.com",
        "yahoo.com",
        "icloud.com",
        "proton.me",
        "aol.com",
        "protonmail.com",
        "msn.com",
        "ymail.com",
        "gmx.de",
        "gmx.net",
        "mail.ru",
        "yandex.ru",
        "yandex.com",
    ],
)
def test_the_public_list_covers_the_big_providers(domain: str) -> None:
    assert domain in PUBLIC_EMAIL_DOMAINS
    assert refusal(f"alice@{domain}").reason == f"{domain} is a public email domain"


def test_every_public_domain_is_already_normalised() -> None:
    for domain in PUBLIC_EMAIL_DOMAINS:
        assert normalise_domain(domain) == domain


@pytest.mark.parametrize(
    ("given_domain", "normalised"),
    [
        ("ACME.Corp", "acme.corp"),
        ("acme.corp.", "acme.corp"),
        ("ACME.CORP.", "acme.corp"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("acme\u3002corp", "acme.corp"),  # ideographic full stop
        ("\uff41\uff43\uff4d\uff45.corp", "acme.corp"),  # full-width letters
        ("gmail.com\u200b", "gmail.com"),  # a zero-width space is no disguise
    ],
)
def test_domains_are_normalised(given_domain: str, normalised: str) -> None:
    assert normalise_domain(given_domain) == normalised


@pytest.mark.parametrize(
    "bad",
    [
        "",
        ".",
        "acme..corp",
        ".acme.corp",
        "acme.corp..",
        "acme corp",
        " acme.corp",
        "ex_ample.com",
        "[127.0.0.1]",
        "-acme.corp",
        "a" * 64 + ".corp",
    ],
)
def test_malformed_domains_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        normalise_domain(bad)


@pytest.mark.parametrize(
    ("email", "domain"),
    [
        ("alice@acme.corp", "acme.corp"),
        ("ALICE@ACME.CORP", "acme.corp"),
        ("alice@acme.corp.", "acme.corp"),
        ("alice@eu.acme.corp", "eu.acme.corp"),
        ("alice@build.eu.acme.corp", "build.eu.acme.corp"),
        ("jürgen@bücher.example", "xn--bcher-kva.example"),
        ("j@BÜCHER.EXAMPLE.", "xn--bcher-kva.example"),
        ("j@xn--bcher-kva.example", "xn--bcher-kva.example"),
        ('"odd@local"@acme.corp', "acme.corp"),
    ],
)
def test_allowed_domains_and_their_subdomains_pass(email: str, domain: str) -> None:
    assert check_email_domain(email, ACME) == domain


@pytest.mark.parametrize(
    ("email", "reason"),
    [
        ("alice@acme.corp.gmail.com", "public"),
        ("alice@ACME.CORP.GMAIL.COM.", "public"),
        ("alice@mail.google.gmail.com", "public"),
        ("alice@GMAIL.COM", "public"),
        ("alice@gmail.com.", "public"),
        ("alice@acme.corp@gmail.com", "public"),
        ("alice@evilacme.corp", "not one of the allowed"),
        ("alice@acme.corp.evil.example", "not one of the allowed"),
        ("alice@acme-corp.example", "not one of the allowed"),
        ("alice@corp", "not one of the allowed"),
        ("alice@\u0430cme.corp", "not one of the allowed"),  # Cyrillic a
        ("alice@acme.c\u043erp", "not one of the allowed"),  # Cyrillic o
        ("alice@xn--cme-5cd.corp", "not one of the allowed"),
    ],
)
def test_look_alikes_and_public_domains_are_refused(email: str, reason: str) -> None:
    assert reason in refusal(email).reason


@pytest.mark.parametrize(
    "email",
    ["alice", "alice@", "@acme.corp", "alice@acme..corp", "alice@ acme.corp", ""],
)
def test_malformed_addresses_are_refused(email: str) -> None:
    refusal(email)


def test_a_block_beats_an_allow() -> None:
    settings = policy(["acme.corp"], blocked=["Contractors.ACME.corp."])

    assert check_email_domain("alice@acme.corp", settings) == "acme.corp"
    assert "blocked" in refusal("bob@contractors.acme.corp", settings).reason
    assert "blocked" in refusal("bob@eu.contractors.acme.corp", settings).reason
    assert check_email_domain("carol@notcontractors.acme.corp", settings)


def test_the_refusal_carries_the_brief_code_and_maps_to_102() -> None:
    error = refusal("alice@gmail.com")

    assert error.message == (
        "CRITICAL ERROR: INVALID_ENTITY_DOMAIN: gmail.com is a public email domain"
    )
    assert error.domain == "gmail.com"
    assert exit_code_for(error) is ExitCode.ERR_DOMAIN_RESTRICTED


def test_domain_within_compares_whole_labels() -> None:
    assert domain_within("eu.acme.corp", ["acme.corp"]) == "acme.corp"
    assert domain_within("evilacme.corp", ["acme.corp"]) is None
    assert domain_within("acme.corp", ["cme.corp"]) is None


@settings(max_examples=300, deadline=None)
@given(email=st.text(max_size=60))
def test_any_text_is_either_an_allowed_domain_or_refused(email: str) -> None:
    try:
        domain = check_email_domain(email, ACME)
    except DomainRefused:
        return
    assert domain in {"acme.corp", "xn--bcher-kva.example"} or domain.endswith(
        (".acme.corp", ".xn--bcher-kva.example")
    )


@settings(max_examples=200, deadline=None)
@given(
    local=st.text(min_size=1, max_size=10).filter(lambda s: "@" not in s),
    label=st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True),
)
def test_a_label_glued_in_front_of_an_allowed_domain_never_passes(
    local: str, label: str
) -> None:
    with pytest.raises(DomainRefused):
        check_email_domain(f"{local}@{label}acme.corp", ACME)
