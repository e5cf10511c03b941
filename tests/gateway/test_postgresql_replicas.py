"""Two gateway replicas sharing one real PostgreSQL store: a session opened on
one is known to the other, and when it expires exactly one replica ends it
and runs the termination hooks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from devdep.gateway.hooks import TerminationHooks
from devdep.gateway.server import Gateway, build_gateway
from tests.gateway.fakes import FakeClock, FakeVerifier, gateway_settings, identity_for
from tests.store.postgresql import postgresql_url

__all__ = ["postgresql_url"]

pytestmark = pytest.mark.integration


@pytest.fixture
def replicas(
    postgresql_url: str,
) -> Iterator[tuple[Gateway, Gateway, FakeClock, list[str]]]:
    clock = FakeClock()
    ended: list[str] = []
    built = []
    for _ in range(2):
        hooks = TerminationHooks()
        hooks.subscribe(ended.append)
        verifier = FakeVerifier({"alice-token": identity_for("alice@acme.corp")})
        built.append(
            build_gateway(
                gateway_settings(postgresql_url),
                verifier=verifier,
                hooks=hooks,
                clock=clock,
            )
        )
    yield built[0], built[1], clock, ended
    with built[0].store.engine.begin() as connection:
        for table in ("session_footprints", "sessions", "used_token_ids"):
            connection.execute(sa.text(f"DELETE FROM {table}"))
    for gateway in built:
        gateway.close()


def test_replicas_share_sessions_and_end_each_once(
    replicas: tuple[Gateway, Gateway, FakeClock, list[str]],
) -> None:
    first, second, clock, ended = replicas
    opened = TestClient(first.app, client=("198.51.100.42", 1)).post(
        "/v1/sessions", json={"token": "alice-token"}
    )
    assert opened.status_code == 201
    document = opened.json()
    assert datetime.fromisoformat(document["expires_at"]) - datetime.fromisoformat(
        document["created_at"]
    ) == timedelta(minutes=15)
    headers = {"Authorization": f"Bearer {document['credential']}"}

    seen = TestClient(second.app, client=("203.0.113.9", 1)).get(
        f"/v1/sessions/{document['ticket']}", headers=headers
    )
    assert seen.status_code == 200
    assert {f["address"] for f in seen.json()["footprints"]} == {
        "198.51.100.42",
        "203.0.113.9",
    }

    clock.advance(minutes=15)
    swept = first.service.sweep() + second.service.sweep()
    assert swept == [document["ticket"]]
    assert ended == [document["ticket"]]
    again = TestClient(second.app).get("/v1/sessions/current", headers=headers)
    assert again.status_code == 401 and again.json()["error"] == "expired"
    assert ended == [document["ticket"]]
