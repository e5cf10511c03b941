"""Test doubles at the gateway's seams: a token verifier that knows a fixed set
of tokens, and a clock the test moves. The real verifier is exercised by the
integration tests against OpenBao."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from devdep.auth.errors import TokenRejected
from devdep.auth.settings import IdentitySettings, IssuerSettings
from devdep.auth.tokens import VerifiedIdentity
from devdep.gateway.config import GatewaySettings

ISSUER = "https://idp.acme.corp"


def identity_settings() -> IdentitySettings:
    return IdentitySettings(
        allowed_domains=["acme.corp"],
        issuers=[IssuerSettings(name="corp", issuer=ISSUER, audience="devdep-cli")],
    )


def gateway_settings(store: str, **overrides: object) -> GatewaySettings:
    return GatewaySettings.model_validate(
        {"store": store, "identity": identity_settings(), **overrides}
    )


def identity_for(email: str, **overrides: object) -> VerifiedIdentity:
    values: dict[str, object] = {
        "issuer_name": "corp",
        "issuer": ISSUER,
        "subject": "sub-" + email.split("@", maxsplit=1)[0],
        "email": email,
        "algorithm": "RS256",
        "key_type": "RSA",
        "key_size": 2048,
        "key_id": "key-1",
        "token_id": None,
        "expires_at": datetime(2030, 1, 1, tzinfo=UTC),
        "claims": {"email": email},
    }
    values.update(overrides)
    return VerifiedIdentity(**values)  # type: ignore[arg-type]


@dataclass
class FakeVerifier:
    """Answers each token it was given with its identity or error."""

    answers: dict[str, VerifiedIdentity | Exception] = field(default_factory=dict)

    def verify(self, token: str) -> VerifiedIdentity:
        answer = self.answers.get(token)
        if answer is None:
            raise TokenRejected("malformed", "not a token this test knows")
        if isinstance(answer, Exception):
            raise answer
        return answer

    def metadata_summary(self, issuer_name: str) -> dict[str, str]:
        return {
            "name": issuer_name,
            "issuer": ISSUER,
            "discovery_url": f"{ISSUER}/.well-known/openid-configuration",
        }


@dataclass
class FakeClock:
    now: datetime = datetime(2026, 12, 3, 13, 0, 0, 250000, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)
