"""TokenVerifier: every rule, with keys the tests generate and a JWKS served at
the HTTP seam."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devdep.auth.errors import (
    DomainRefused,
    IdentityConfigError,
    IdentityProviderUnavailable,
    TokenRejected,
)
from devdep.auth.settings import IdentitySettings
from devdep.auth.tokens import MemoryReplayGuard, TokenVerifier
from devdep.errors import ExitCode, exit_code_for
from tests.auth.fake_idp import (
    CORP_AUDIENCE,
    CORP_ISSUER,
    NOW,
    FakeIdentityProvider,
    FakeMonotonic,
    b64url,
    hmac_token,
    new_key,
    unsigned_token,
)

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
GITLAB_ISSUER = "https://gitlab.acme.corp"


def corp_settings(**extra: Any) -> IdentitySettings:
    return IdentitySettings.model_validate(
        {
            "allowed_domains": ["acme.corp"],
            "issuers": [
                {"name": "corp", "issuer": CORP_ISSUER, "audience": CORP_AUDIENCE}
            ],
            **extra,
        }
    )


def make_verifier(
    idp: FakeIdentityProvider,
    settings: IdentitySettings | None = None,
    monotonic: FakeMonotonic | None = None,
    **options: Any,
) -> TokenVerifier:
    return TokenVerifier(
        settings or corp_settings(),
        http=idp.client(),
        clock=lambda: NOW,
        monotonic=monotonic or FakeMonotonic(),
        **options,
    )


def rejected_rule(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(TokenRejected) as caught:
        verifier.verify(token)
    return caught.value.rule


@pytest.fixture
def idp() -> FakeIdentityProvider:
    return FakeIdentityProvider()


@pytest.fixture
def verifier(idp: FakeIdentityProvider) -> TokenVerifier:
    return make_verifier(idp)


# --- what passes -------------------------------------------------------------


def test_a_valid_rs256_token_gives_the_identity_and_how_it_was_checked(
    idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    identity = verifier.verify(idp.token(jti="id-1"))

    assert identity.issuer_name == "corp"
    assert identity.issuer == CORP_ISSUER
    assert identity.subject == "00u1a2b3c4"
    assert identity.email == "alice@acme.corp"
    assert (identity.algorithm, identity.key_type, identity.key_size) == (
        "RS256",
        "RSA",
        2048,
    )
    assert identity.key_id == idp.keys[0].kid
    assert identity.token_id == "id-1"
    assert identity.expires_at == NOW + timedelta(seconds=300)
    assert identity.claims["email_verified"] is True


@pytest.mark.parametrize(
    ("algorithm", "key_type", "key_size"),
    [("ES256", "EC", 256), ("EdDSA", "OKP", 256)],
)
def test_es256_and_eddsa_are_accepted(
    algorithm: str, key_type: str, key_size: int
) -> None:
    key = new_key(algorithm)
    idp = FakeIdentityProvider(keys=[key])

    identity = make_verifier(idp).verify(idp.token(key))

    assert (identity.algorithm, identity.key_type, identity.key_size) == (
        algorithm,
        key_type,
        key_size,
    )


def test_an_audience_list_containing_ours_passes(
    idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    identity = verifier.verify(idp.token(aud=["other-app", CORP_AUDIENCE]))

    assert identity.subject == "00u1a2b3c4"


def test_clock_skew_within_the_leeway_passes(
    idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    now = int(NOW.timestamp())

    verifier.verify(idp.token(exp=now - 59))
    verifier.verify(idp.token(iat=now + 59, exp=now + 300))


def test_the_leeway_cannot_exceed_sixty_seconds(idp: FakeIdentityProvider) -> None:
    with pytest.raises(IdentityConfigError, match="leeway"):
        make_verifier(idp, leeway=timedelta(seconds=61))


# --- algorithm pinning -------------------------------------------------------


def test_alg_none_is_refused(
    idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    for alg in ("none", "None", "NONE"):
        token = unsigned_token({"alg": alg, "kid": idp.keys[0].kid}, idp.claims())
        assert rejected_rule(verifier, token) == "algorithm"


def test_hs256_signed_with_the_rsa_public_key_is_refused(
    idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    key = idp.keys[0]
    claims = idp.claims()
    header = {"alg": "HS256", "kid": key.kid, "typ": "JWT"}
    secrets = [key.public_pem, json.dumps(key.public_jwk).encode()]

    for secret in secrets:
        assert (
            rejected_rule(verifier, hmac_token(header, claims, secret)) == "algorithm"
        )
    assert idp.jwks_fetches == 0, "refused before any key was looked up"


@pytest.mark.parametrize(
    "algorithm", ["HS384", "HS512", "RS384", "RS512", "PS256", "ES384"]
)
def test_every_other_algorithm_is_refused(
    algorithm: str, idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    header = {"alg": algorithm, "kid": idp.keys[0].kid}
    token = hmac_token(header, idp.claims(), b"whatever")

    assert rejected_rule(verifier, token) == "algorithm"


def test_a_token_whose_alg_does_not_fit_the_key_is_refused() -> None:
    rsa_key = new_key("RS256", kid="shared")
    ec_key = new_key("ES256", kid="shared")
    idp = FakeIdentityProvider(keys=[rsa_key])

    token = idp.token(ec_key)

    assert rejected_rule(make_verifier(idp), token) == "unknown-key"


def test_critical_header_extensions_are_refused(
    idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    token = idp.token(headers={"crit": ["exp"], "exp": 1})

    assert rejected_rule(verifier, token) == "malformed"


# --- signature ---------------------------------------------------------------


def test_a_token_signed_by_another_key_with_the_same_kid_is_refused(
    idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    impostor = new_key("RS256", kid=idp.keys[0].kid)

    assert rejected_rule(verifier, idp.token(impostor)) == "signature"


def test_a_tampered_payload_is_refused(
    idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    header, _, signature = idp.token().split(".")
    forged = b64url(json.dumps(idp.claims(email="root@acme.corp")).encode())

    assert rejected_rule(verifier, f"{header}.{forged}.{signature}") == "signature"


def test_rsa_keys_under_2048_bits_are_never_used() -> None:
    weak = new_key("RS256", bits=1024)
    idp = FakeIdentityProvider(keys=[weak])
    with pytest.warns(jwt.warnings.InsecureKeyLengthWarning):
        token = idp.token(weak)

    assert rejected_rule(make_verifier(idp), token) == "unknown-key"


# --- issuer and audience -----------------------------------------------------


@pytest.mark.parametrize(
    "issuer",
    [
        CORP_ISSUER + "/",
        "http://idp.acme.corp",
        "https://IDP.acme.corp",
        "https://idp.acme.corp.evil.example",
        "https://idp.acme.corp:443",
        "",
        None,
    ],
)
def test_an_issuer_that_is_not_exactly_the_configured_one_is_refused(
    issuer: str | None, idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    token = idp.token(iss=issuer) if issuer is not None else idp.token(iss=None)

    assert rejected_rule(verifier, token) == "issuer"


@pytest.mark.parametrize("audience", ["other-app", ["a", "b"], None, "", 7, [7]])
def test_a_wrong_or_missing_audience_is_refused(
    audience: object, idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    assert rejected_rule(verifier, idp.token(aud=audience)) == "audience"


# --- times and subject -------------------------------------------------------


def test_an_expired_token_is_refused(
    idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    now = int(NOW.timestamp())

    assert rejected_rule(verifier, idp.token(iat=now - 600, exp=now - 61)) == "expiry"


def test_a_token_issued_in_the_future_is_refused(
    idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    now = int(NOW.timestamp())

    assert (
        rejected_rule(verifier, idp.token(iat=now + 61, exp=now + 600)) == "issued-at"
    )


def test_a_token_not_valid_before_a_later_time_is_refused(
    idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    now = int(NOW.timestamp())

    assert rejected_rule(verifier, idp.token(nbf=now + 120)) == "not-before"


@pytest.mark.parametrize(
    ("claim", "rule"), [("exp", "expiry"), ("iat", "issued-at"), ("sub", "subject")]
)
def test_exp_iat_and_sub_are_required(
    claim: str, rule: str, idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    assert rejected_rule(verifier, idp.token(**{claim: None})) == rule


@pytest.mark.parametrize(
    ("claim", "value", "rule"),
    [
        ("exp", "tomorrow", "expiry"),
        ("exp", True, "expiry"),
        ("exp", 1e300, "expiry"),
        ("iat", "now", "issued-at"),
        ("sub", "", "subject"),
        ("sub", 42, "subject"),
    ],
)
def test_claims_of_the_wrong_type_are_refused(
    claim: str,
    value: Any,
    rule: str,
    idp: FakeIdentityProvider,
    verifier: TokenVerifier,
) -> None:
    assert rejected_rule(verifier, idp.token(**{claim: value})) == rule


# --- replay ------------------------------------------------------------------


def test_a_replayed_jti_is_refused(
    idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    token = idp.token(jti="once")
    verifier.verify(token)

    assert rejected_rule(verifier, token) == "replay"
    assert (
        rejected_rule(verifier, idp.token(jti="once", sub="someone-else")) == "replay"
    )


def test_a_token_without_jti_is_usable_once(
    idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    token = idp.token(jti=None)
    verifier.verify(token)

    assert rejected_rule(verifier, token) == "replay"


def test_the_replay_guard_gets_the_issuer_the_jti_and_the_expiry(
    idp: FakeIdentityProvider,
) -> None:
    calls: list[tuple[str, str, datetime]] = []

    def guard(issuer: str, jti: str, expires_at: datetime) -> bool:
        calls.append((issuer, jti, expires_at))
        return len(calls) == 1

    verifier = make_verifier(idp, replay_guard=guard)
    verifier.verify(idp.token(jti="j-1"))

    assert rejected_rule(verifier, idp.token(jti="j-2")) == "replay"
    assert calls[0] == (CORP_ISSUER, "j-1", NOW + timedelta(seconds=300))


def test_a_refused_token_does_not_use_up_its_jti(
    idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    with pytest.raises(DomainRefused):
        verifier.verify(idp.token(jti="j", email="alice@gmail.com"))

    verifier.verify(idp.token(jti="j"))


def test_the_memory_replay_guard_forgets_a_jti_once_its_token_expired() -> None:
    now = [NOW]
    guard = MemoryReplayGuard(clock=lambda: now[0])
    expiry = NOW + timedelta(minutes=5)

    assert guard("iss", "j", expiry)
    assert not guard("iss", "j", expiry)
    now[0] = expiry + timedelta(minutes=2)
    assert guard("iss", "j", now[0] + timedelta(minutes=5))


# --- keys: discovery, cache, refresh -----------------------------------------


def test_discovery_then_jwks_are_fetched_once_and_cached(
    idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    for _ in range(3):
        verifier.verify(idp.token())

    assert (idp.discovery_fetches, idp.jwks_fetches) == (1, 1)


def test_an_unknown_kid_is_refused_even_after_a_refresh(
    idp: FakeIdentityProvider,
) -> None:
    clock = FakeMonotonic()
    verifier = make_verifier(idp, monotonic=clock, jwks_refresh_cooldown=60)
    verifier.verify(idp.token())
    stranger = new_key("RS256", kid="never-published")

    clock.advance(61)
    assert rejected_rule(verifier, idp.token(stranger)) == "unknown-key"
    assert idp.jwks_fetches == 2, "one refresh for the unknown kid"


def test_unknown_kids_refresh_at_most_once_per_cooldown(
    idp: FakeIdentityProvider,
) -> None:
    clock = FakeMonotonic()
    verifier = make_verifier(idp, monotonic=clock, jwks_refresh_cooldown=60)
    verifier.verify(idp.token())
    clock.advance(61)

    for index in range(5):
        stranger = new_key("RS256", kid=f"made-up-{index}")
        assert rejected_rule(verifier, idp.token(stranger)) == "unknown-key"
        clock.advance(5)
    assert idp.jwks_fetches == 2

    clock.advance(60)
    assert rejected_rule(verifier, idp.token(new_key(kid="later"))) == "unknown-key"
    assert idp.jwks_fetches == 3


def test_a_rotated_key_is_picked_up_by_the_refresh(idp: FakeIdentityProvider) -> None:
    clock = FakeMonotonic()
    verifier = make_verifier(idp, monotonic=clock)
    verifier.verify(idp.token())
    rotated = new_key("ES256")
    idp.keys.append(rotated)
    clock.advance(61)

    identity = verifier.verify(idp.token(rotated))

    assert identity.key_id == rotated.kid


def test_the_last_good_keys_are_kept_while_the_idp_is_down(
    idp: FakeIdentityProvider,
) -> None:
    clock = FakeMonotonic()
    verifier = make_verifier(idp, monotonic=clock, jwks_max_age=3600)
    verifier.verify(idp.token())
    idp.down = True

    clock.advance(7200)  # past the cache's age: a refresh is tried and fails
    identity = verifier.verify(idp.token())
    clock.advance(61)
    rule = rejected_rule(verifier, idp.token(new_key(kid="new")))

    assert identity.key_id == idp.keys[0].kid
    assert rule == "unknown-key"


def test_an_idp_down_from_the_start_is_reported_and_not_hammered(
    idp: FakeIdentityProvider,
) -> None:
    idp.down = True
    clock = FakeMonotonic()
    verifier = make_verifier(idp, monotonic=clock)

    for _ in range(3):
        with pytest.raises(IdentityProviderUnavailable):
            verifier.verify(idp.token())

    idp.down = False
    clock.advance(61)
    assert verifier.verify(idp.token()).subject == "00u1a2b3c4"
    assert idp.discovery_fetches == 1


def test_a_discovery_document_for_another_issuer_is_refused(
    idp: FakeIdentityProvider,
) -> None:
    idp.discovery_issuer = "https://evil.example"

    with pytest.raises(IdentityProviderUnavailable, match="names issuer"):
        make_verifier(idp).verify(idp.token())


def test_metadata_summary_names_the_documents_and_keys(
    idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    summary = verifier.metadata_summary("corp")

    assert summary["discovery_url"] == CORP_ISSUER + "/.well-known/openid-configuration"
    assert summary["jwks_uri"] == idp.jwks_uri
    assert summary["keys"] == "1"
    assert summary["algorithms"] == "RS256"
    assert summary["keys_fetched_at"] == NOW.isoformat()


# --- email identities --------------------------------------------------------


@pytest.mark.parametrize("verified", [False, "true", None, 1])
def test_an_email_not_verified_by_the_issuer_is_refused(
    verified: object, idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    assert (
        rejected_rule(verifier, idp.token(email_verified=verified)) == "email-verified"
    )


def test_a_corporate_identity_needs_an_email(
    idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    assert rejected_rule(verifier, idp.token(email=None)) == "email"


def test_a_public_email_domain_is_refused_with_the_domain_error(
    idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    with pytest.raises(DomainRefused) as caught:
        verifier.verify(idp.token(email="alice@gmail.com"))

    assert caught.value.message.startswith("CRITICAL ERROR: INVALID_ENTITY_DOMAIN")
    assert exit_code_for(caught.value) is ExitCode.ERR_DOMAIN_RESTRICTED


def test_a_rejected_token_means_authenticate_again(
    idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    with pytest.raises(TokenRejected) as caught:
        verifier.verify(idp.token(aud="other"))

    assert exit_code_for(caught.value) is ExitCode.ERR_OIDC_TIMEOUT
    assert "devdep-cli auth" in (caught.value.hint or "")


# --- CI issuers and bound claims ---------------------------------------------


def ci_settings() -> IdentitySettings:
    return IdentitySettings.model_validate(
        {
            "allowed_domains": ["acme.corp"],
            "issuers": [
                {
                    "name": "github",
                    "issuer": GITHUB_ISSUER,
                    "audience": "devdep-github-actions",
                    "bound_claims": {
                        "repository_owner_id": "123",
                        "ref": "refs/heads/main",
                    },
                },
                {
                    "name": "github-release",
                    "issuer": GITHUB_ISSUER,
                    "audience": "devdep-release",
                    "bound_claims": {"sub": "repo:acme/api:environment:prod%3Aeu"},
                },
                {
                    "name": "gitlab",
                    "issuer": GITLAB_ISSUER,
                    "audience": "devdep-gitlab-actions",
                    "bound_claims": {
                        "project_path": "acme/api",
                        "ref_protected": "true",
                    },
                },
            ],
        }
    )


def github_claims(**overrides: Any) -> dict[str, Any]:
    claims = {
        "aud": "devdep-github-actions",
        "sub": "repo:acme/api:ref:refs/heads/main",
        "repository": "acme/api",
        "repository_id": "987654",
        "repository_owner": "acme",
        "repository_owner_id": "123",
        "ref": "refs/heads/main",
        "ref_type": "branch",
        "workflow": "deploy",
        "job_workflow_ref": "acme/api/.github/workflows/deploy.yml@refs/heads/main",
        "runner_environment": "github-hosted",
        "email": None,
        "email_verified": None,
    }
    claims.update(overrides)
    return claims


def gitlab_claims(**overrides: Any) -> dict[str, Any]:
    claims = {
        "aud": "devdep-gitlab-actions",
        "sub": "project_path:acme/api:ref_type:branch:ref:main",
        "namespace_id": "42",
        "namespace_path": "acme",
        "project_id": "77",
        "project_path": "acme/api",
        "pipeline_source": "push",
        "ref": "main",
        "ref_type": "branch",
        "ref_protected": "true",
        "user_email": "alice@acme.corp",
        "email": None,
        "email_verified": None,
    }
    claims.update(overrides)
    return claims


@pytest.fixture
def github() -> FakeIdentityProvider:
    return FakeIdentityProvider(issuer=GITHUB_ISSUER)


@pytest.fixture
def gitlab() -> FakeIdentityProvider:
    return FakeIdentityProvider(issuer=GITLAB_ISSUER)


def test_a_github_token_matching_every_bound_claim_passes(
    github: FakeIdentityProvider,
) -> None:
    identity = make_verifier(github, ci_settings()).verify(
        github.token(**github_claims())
    )

    assert identity.issuer_name == "github"
    assert identity.subject == "repo:acme/api:ref:refs/heads/main"
    assert identity.email is None


@pytest.mark.parametrize(
    "mismatch",
    [
        {"ref": "refs/heads/dev"},
        {"ref": "refs/heads/main "},
        {"repository_owner_id": "1234"},
        {"repository_owner_id": 123.0},
        {"repository_owner_id": None},
        {"ref": ["refs/heads/main"]},
    ],
)
def test_a_github_token_with_one_bound_claim_off_is_refused(
    mismatch: dict[str, Any], github: FakeIdentityProvider
) -> None:
    token = github.token(**github_claims(**mismatch))

    assert rejected_rule(make_verifier(github, ci_settings()), token) == "bound-claims"


def test_a_sub_with_an_encoded_colon_matches_only_exactly(
    github: FakeIdentityProvider,
) -> None:
    verifier = make_verifier(github, ci_settings())
    exact = "repo:acme/api:environment:prod%3Aeu"

    identity = verifier.verify(
        github.token(**github_claims(aud="devdep-release", sub=exact))
    )
    decoded = github.token(
        **github_claims(aud="devdep-release", sub="repo:acme/api:environment:prod:eu")
    )
    spliced = github.token(
        **github_claims(
            aud="devdep-release", sub="repo:acme/api:environment:prod%3Aeu:x"
        )
    )

    assert identity.issuer_name == "github-release"
    assert rejected_rule(verifier, decoded) == "bound-claims"
    assert rejected_rule(verifier, spliced) == "bound-claims"


def test_a_gitlab_token_matching_every_bound_claim_passes(
    gitlab: FakeIdentityProvider,
) -> None:
    verifier = make_verifier(gitlab, ci_settings())

    identity = verifier.verify(gitlab.token(**gitlab_claims()))
    as_boolean = verifier.verify(gitlab.token(**gitlab_claims(ref_protected=True)))

    assert identity.issuer_name == "gitlab"
    assert identity.subject == "project_path:acme/api:ref_type:branch:ref:main"
    assert as_boolean.issuer_name == "gitlab"


def test_a_gitlab_sub_with_an_encoded_colon_passes_untouched(
    gitlab: FakeIdentityProvider,
) -> None:
    sub = "project_path:acme/api:ref_type:tag:ref:release%3A1.0"

    identity = make_verifier(gitlab, ci_settings()).verify(
        gitlab.token(**gitlab_claims(sub=sub, ref="release:1.0", ref_type="tag"))
    )

    assert identity.subject == sub


@pytest.mark.parametrize(
    "mismatch",
    [
        {"ref_protected": "false"},
        {"ref_protected": False},
        {"project_path": "acme/api-fork"},
        {"project_path": "ACME/api"},
        # A sub that merely mentions the project proves nothing about it.
        {"project_path": None, "sub": "project_path:acme/api:ref_type:branch:ref:main"},
    ],
)
def test_a_gitlab_token_with_one_bound_claim_off_is_refused(
    mismatch: dict[str, Any], gitlab: FakeIdentityProvider
) -> None:
    token = gitlab.token(**gitlab_claims(**mismatch))

    assert rejected_rule(make_verifier(gitlab, ci_settings()), token) == "bound-claims"


def test_a_ci_token_for_another_audience_of_the_same_issuer_is_refused(
    github: FakeIdentityProvider,
) -> None:
    token = github.token(**github_claims(aud="devdep-cli"))

    assert rejected_rule(make_verifier(github, ci_settings()), token) == "audience"


# --- arbitrary input ---------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    ["", "a", "a.b", "a.b.c", "..", "....", "eyJ.eyJ.", "ä.ö.ü", "x" * 20000],
)
def test_garbage_is_refused_as_malformed(token: str, verifier: TokenVerifier) -> None:
    assert rejected_rule(verifier, token) == "malformed"


def test_a_payload_that_is_not_an_object_is_refused(
    idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    key = idp.keys[0]
    token = jwt.api_jws.encode(
        b"[1, 2, 3]", key.private_key, algorithm="RS256", headers={"kid": key.kid}
    )

    assert rejected_rule(verifier, token) == "malformed"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    header=st.dictionaries(st.sampled_from(["alg", "kid", "typ", "crit"]), json_values),
    claims=st.dictionaries(
        st.sampled_from(["iss", "aud", "sub", "exp", "iat", "email", "jti"]),
        json_values,
    ),
    signature=st.binary(max_size=64),
)
def test_arbitrary_headers_and_claims_only_ever_raise_our_errors(
    header: dict[str, Any], claims: dict[str, Any], signature: bytes
) -> None:
    idp = FakeIdentityProvider(keys=[STATIC_KEY])
    token = ".".join(
        [
            b64url(json.dumps(header).encode()),
            b64url(json.dumps(claims).encode()),
            b64url(signature),
        ]
    )

    with pytest.raises((TokenRejected, DomainRefused)):
        make_verifier(idp).verify(token)


@settings(max_examples=150, deadline=None)
@given(token=st.text(max_size=200))
def test_arbitrary_text_only_ever_raises_our_errors(token: str) -> None:
    idp = FakeIdentityProvider(keys=[STATIC_KEY])

    with pytest.raises((TokenRejected, DomainRefused)):
        make_verifier(idp).verify(token)


STATIC_KEY = new_key("RS256", kid="static")


def test_verified_expiry_is_timezone_aware(
    idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    assert verifier.verify(idp.token()).expires_at.tzinfo is UTC
