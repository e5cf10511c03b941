"""The gateway's endpoints, with a fake token verifier at the seam and a clock
the tests move; the real verifier is covered by test_integration.py."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from devdep.auth.errors import DomainRefused, IdentityProviderUnavailable
from devdep.gateway.credentials import hash_credential
from devdep.gateway.hooks import TerminationHooks
from devdep.gateway.server import Gateway, build_gateway
from tests.gateway.fakes import FakeClock, FakeVerifier, gateway_settings, identity_for

CLIENT_IP = "198.51.100.42"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def verifier() -> FakeVerifier:
    return FakeVerifier(
        {
            "alice-token": identity_for("alice@acme.corp"),
            "bob-token": identity_for("bob@acme.corp"),
            "gmail-token": DomainRefused("gmail.com", "gmail.com is a public domain"),
            "down-token": IdentityProviderUnavailable(
                "https://idp.acme.corp", "connection refused"
            ),
        }
    )


@pytest.fixture
def ended() -> list[str]:
    return []


@pytest.fixture
def gateway(
    tmp_path: Path, verifier: FakeVerifier, clock: FakeClock, ended: list[str]
) -> Iterator[Gateway]:
    hooks = TerminationHooks()
    hooks.subscribe(ended.append)
    built = build_gateway(
        gateway_settings(f"sqlite:///{tmp_path / 'gateway.db'}"),
        verifier=verifier,
        hooks=hooks,
        clock=clock,
    )
    yield built
    built.close()


@pytest.fixture
def client(gateway: Gateway) -> TestClient:
    return TestClient(gateway.app, client=(CLIENT_IP, 50000))


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def open_session(client: TestClient, token: str = "alice-token") -> dict[str, object]:
    answer = client.post("/v1/sessions", json={"token": token, "provider": "oidc"})
    assert answer.status_code == 201, answer.text
    document: dict[str, object] = answer.json()
    return document


def test_a_token_exchange_opens_a_fifteen_minute_session(
    client: TestClient, gateway: Gateway
) -> None:
    opened = open_session(client)

    assert opened["ticket"] == "DEP-1"
    assert opened["state"] == "active"
    assert opened["subject"] == "sub-alice"
    assert opened["client_ip"] == CLIENT_IP
    created = datetime.fromisoformat(str(opened["created_at"]))
    expires = datetime.fromisoformat(str(opened["expires_at"]))
    assert expires - created == timedelta(minutes=15)
    assert opened["remaining_seconds"] == 900.0
    handshake = opened["handshake"]
    assert isinstance(handshake, dict)
    assert handshake["identity"] == "alice@acme.corp"
    assert handshake["signature"] == {
        "result": "PASS",
        "algorithm": "RS256",
        "key_type": "RSA",
        "key_size": 2048,
        "key_id": "key-1",
    }
    assert handshake["compliance_window_seconds"] == 900.0

    credential = str(opened["credential"])
    with gateway.store.engine.connect() as connection:
        stored = connection.scalar(sa.text("SELECT credential_hash FROM sessions"))
    assert stored == hash_credential(credential)
    assert credential not in stored


def test_the_current_session_shows_lifetime_and_footprints(
    client: TestClient, clock: FakeClock
) -> None:
    credential = str(open_session(client)["credential"])
    clock.advance(minutes=5)

    answer = client.get("/v1/sessions/current", headers=bearer(credential))

    assert answer.status_code == 200
    session = answer.json()
    assert session["ticket"] == "DEP-1"
    assert session["remaining_seconds"] == 600.0
    assert session["runs"] == []
    assert [(f["address"], f["requests"]) for f in session["footprints"]] == [
        (CLIENT_IP, 2)
    ]


def test_a_new_client_address_adds_a_footprint(
    client: TestClient, gateway: Gateway
) -> None:
    credential = str(open_session(client)["credential"])
    elsewhere = TestClient(gateway.app, client=("203.0.113.9", 40000))

    answer = elsewhere.get("/v1/sessions/DEP-1", headers=bearer(credential))

    assert answer.status_code == 200
    assert {f["address"] for f in answer.json()["footprints"]} == {
        CLIENT_IP,
        "203.0.113.9",
    }


def test_a_session_expires_exactly_at_its_end(
    client: TestClient, clock: FakeClock, ended: list[str]
) -> None:
    credential = str(open_session(client)["credential"])

    clock.advance(minutes=15, microseconds=-1)
    assert (
        client.get("/v1/sessions/current", headers=bearer(credential)).status_code
        == 200
    )
    assert ended == []

    clock.advance(microseconds=1)
    answer = client.get("/v1/sessions/current", headers=bearer(credential))
    assert answer.status_code == 401
    assert answer.json()["error"] == "expired"
    assert answer.json()["ticket"] == "DEP-1"
    assert ended == ["DEP-1"]

    # Every later use answers expired too, and the hook does not run again.
    again = client.get("/v1/sessions/DEP-1", headers=bearer(credential))
    assert again.status_code == 401 and again.json()["error"] == "expired"
    assert ended == ["DEP-1"]


def test_the_sweep_expires_sessions_and_runs_the_hook(
    client: TestClient, gateway: Gateway, clock: FakeClock, ended: list[str]
) -> None:
    open_session(client, "alice-token")
    clock.advance(minutes=10)
    open_session(client, "bob-token")

    clock.advance(minutes=5)
    assert gateway.service.sweep() == ["DEP-1"]
    assert ended == ["DEP-1"]
    clock.advance(minutes=10)
    assert gateway.service.sweep() == ["DEP-2"]
    assert gateway.service.sweep() == []
    assert ended == ["DEP-1", "DEP-2"]


def test_revoking_ends_the_session_and_runs_the_hook(
    client: TestClient, ended: list[str]
) -> None:
    credential = str(open_session(client)["credential"])

    revoked = client.delete("/v1/sessions/current", headers=bearer(credential))

    assert revoked.status_code == 200
    assert revoked.json()["state"] == "revoked"
    assert revoked.json()["remaining_seconds"] == 0
    assert ended == ["DEP-1"]
    after = client.get("/v1/sessions/current", headers=bearer(credential))
    assert after.status_code == 401 and after.json()["error"] == "revoked"


def test_a_hook_that_fails_does_not_stop_the_others(
    client: TestClient, gateway: Gateway, clock: FakeClock, ended: list[str]
) -> None:
    def broken(_ticket: str) -> None:
        raise RuntimeError("the VM host is gone")

    gateway.hooks.subscribe(broken)
    gateway.hooks.subscribe(ended.append)
    open_session(client)
    clock.advance(minutes=16)

    assert gateway.service.sweep() == ["DEP-1"]
    assert ended == ["DEP-1", "DEP-1"]


def test_another_sessions_ticket_is_forbidden(client: TestClient) -> None:
    alice = str(open_session(client, "alice-token")["credential"])
    open_session(client, "bob-token")

    answer = client.get("/v1/sessions/DEP-2", headers=bearer(alice))

    assert answer.status_code == 403
    assert answer.json()["error"] == "forbidden"


@pytest.mark.parametrize("ticket", ["DEP-0", "42", "dep-1", "DEP-1%0a", "x" * 300])
def test_a_malformed_ticket_is_not_found(client: TestClient, ticket: str) -> None:
    answer = client.get(f"/v1/sessions/{ticket}", headers=bearer("x" * 43))
    assert answer.status_code == 404


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not-a-credential"},
        {"Authorization": "Bearer " + "A" * 43},
    ],
)
def test_a_missing_or_unknown_credential_is_unauthenticated(
    client: TestClient, headers: dict[str, str]
) -> None:
    answer = client.get("/v1/sessions/current", headers=headers)

    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthenticated"
    assert answer.headers["www-authenticate"] == "Bearer"


def test_a_public_domain_is_refused_with_the_critical_error(client: TestClient) -> None:
    answer = client.post("/v1/sessions", json={"token": "gmail-token"})

    assert answer.status_code == 403
    assert answer.json()["error"] == "CRITICAL ERROR: INVALID_ENTITY_DOMAIN"
    assert answer.json()["domain"] == "gmail.com"


def test_a_rejected_token_names_the_rule(client: TestClient) -> None:
    answer = client.post("/v1/sessions", json={"token": "forged"})

    assert answer.status_code == 401
    assert answer.json()["error"] == "token_rejected"
    assert answer.json()["rule"] == "malformed"


def test_an_unreachable_identity_provider_is_a_503(client: TestClient) -> None:
    answer = client.post("/v1/sessions", json={"token": "down-token"})

    assert answer.status_code == 503
    assert answer.json()["error"] == "idp_unavailable"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"", 400),
        (b"{", 400),
        (b"\xff\xfe", 400),
        (b"[" * 100_000, 413),
        (b"[" * 5_000 + b"]" * 5_000, 400),
        (b"[]", 422),
        (b'{"token": 1}', 422),
        (b'{"token": ""}', 422),
        (b'{"token": "alice-token", "provider": "saml"}', 422),
        (b'{"token": "alice-token", "admin": true}', 422),
    ],
)
def test_malformed_bodies_are_clean_client_errors(
    client: TestClient, body: bytes, status: int
) -> None:
    answer = client.post(
        "/v1/sessions", content=body, headers={"Content-Type": "application/json"}
    )

    assert answer.status_code == status
    assert answer.json()["error"]
    assert "alice-token" not in answer.text


def test_unknown_routes_and_methods_answer_json(client: TestClient) -> None:
    assert client.get("/v2/anything").json()["error"] == "not_found"
    assert client.put("/v1/sessions").json()["error"] == "method_not_allowed"


def test_the_issuers_are_listed_for_the_cli(client: TestClient) -> None:
    assert client.get("/v1/issuers").json() == {
        "issuers": [
            {
                "name": "corp",
                "kind": "corporate",
                "issuer": "https://idp.acme.corp",
                "audience": "devdep-cli",
            }
        ]
    }


def test_one_info_line_per_request_and_no_secret_in_the_log(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="devdep.gateway"):
        credential = str(open_session(client)["credential"])
        client.get("/v1/sessions/current", headers=bearer(credential))

    request_lines = [r for r in caplog.records if r.name == "devdep.gateway.app"]
    assert [r.getMessage().split()[:3] for r in request_lines] == [
        ["POST", "/v1/sessions", "201"],
        ["GET", "/v1/sessions/current", "200"],
    ]
    assert all(r.levelno == logging.INFO for r in request_lines)
    assert credential not in caplog.text
    assert "alice-token" not in caplog.text
