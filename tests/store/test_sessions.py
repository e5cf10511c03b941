"""The session store on SQLite: tickets, exact expiry, footprints, state changes
and used token ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from devdep.errors import UsageError
from devdep.store.database import Store, StoreError, normalise_url
from devdep.store.models import SessionState
from devdep.store.sessions import TOKEN_ID_RETENTION, NewSession, SessionStore
from devdep.store.tickets import parse_ticket, ticket_for

NOW = datetime(2026, 12, 3, 12, 0, 0, 123456, tzinfo=UTC)
FIFTEEN_MINUTES = timedelta(minutes=15)


def new_session(credential_hash: str = "a" * 64) -> NewSession:
    return NewSession(
        subject="alice",
        email="alice@acme.corp",
        issuer="https://idp.acme.corp",
        issuer_name="corp",
        provider="oidc",
        credential_hash=credential_hash,
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    opened = Store(f"sqlite:///{tmp_path / 'gateway.db'}")
    yield opened
    opened.close()


@pytest.fixture
def sessions(store: Store) -> SessionStore:
    return SessionStore(store)


def test_the_migrations_create_every_table(store: Store) -> None:
    tables = set(sa.inspect(store.engine).get_table_names())

    assert {"sessions", "session_footprints", "used_token_ids"} <= tables
    with store.engine.connect() as connection:
        assert connection.scalar(
            sa.text("SELECT version_num FROM alembic_version")
        ) == ("0001")


def test_opening_a_store_again_keeps_its_sessions(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    first = Store(url)
    SessionStore(first).open(
        new_session(), client_ip="127.0.0.1", now=NOW, lifetime=FIFTEEN_MINUTES
    )
    first.close()

    second = Store(url)
    assert SessionStore(second).get(1) is not None
    second.close()


def test_a_session_gets_a_ticket_and_expires_exactly_its_lifetime_later(
    sessions: SessionStore,
) -> None:
    opened = sessions.open(
        new_session(), client_ip="192.0.2.7", now=NOW, lifetime=FIFTEEN_MINUTES
    )

    stored = sessions.get(opened.number)
    assert stored is not None
    assert stored.ticket == "DEP-1"
    assert stored.state is SessionState.ACTIVE
    assert stored.expires_at - stored.created_at == FIFTEEN_MINUTES
    assert stored.created_at == NOW
    assert stored.created_at.tzinfo is not None
    assert stored.remaining(NOW + timedelta(minutes=5)) == timedelta(minutes=10)
    assert [f.address for f in stored.footprints] == ["192.0.2.7"]


def test_tickets_count_up(sessions: SessionStore) -> None:
    tickets = [
        sessions.open(
            new_session(str(n) * 64), client_ip="::1", now=NOW, lifetime=FIFTEEN_MINUTES
        ).ticket
        for n in range(3)
    ]

    assert tickets == ["DEP-1", "DEP-2", "DEP-3"]


def test_only_the_credential_hash_is_stored(
    store: Store, sessions: SessionStore
) -> None:
    sessions.open(
        new_session("f" * 64), client_ip="127.0.0.1", now=NOW, lifetime=FIFTEEN_MINUTES
    )

    found = sessions.find_by_credential("f" * 64)
    assert found is not None and found.ticket == "DEP-1"
    assert sessions.find_by_credential("e" * 64) is None
    with store.engine.connect() as connection:
        assert connection.scalar(sa.text("SELECT credential_hash FROM sessions")) == (
            "f" * 64
        )


def test_footprints_count_requests_per_address(sessions: SessionStore) -> None:
    opened = sessions.open(
        new_session(), client_ip="198.51.100.42", now=NOW, lifetime=FIFTEEN_MINUTES
    )
    later = NOW + timedelta(seconds=30)

    sessions.record_footprint(opened.number, "198.51.100.42", later)
    sessions.record_footprint(opened.number, "203.0.113.9", later)
    sessions.record_footprint(opened.number, "198.51.100.42", later)

    stored = sessions.get(opened.number)
    assert stored is not None
    by_address = {f.address: f for f in stored.footprints}
    assert by_address["198.51.100.42"].requests == 3
    assert by_address["198.51.100.42"].first_seen == NOW
    assert by_address["198.51.100.42"].last_seen == later
    assert by_address["203.0.113.9"].requests == 1


def test_a_session_ends_once(sessions: SessionStore) -> None:
    opened = sessions.open(
        new_session(), client_ip="127.0.0.1", now=NOW, lifetime=FIFTEEN_MINUTES
    )

    assert sessions.revoke(opened.number, NOW) is True
    assert sessions.revoke(opened.number, NOW) is False
    assert sessions.expire(opened.number, NOW) is False
    stored = sessions.get(opened.number)
    assert stored is not None
    assert stored.state is SessionState.REVOKED
    assert stored.ended_at == NOW
    assert stored.remaining(NOW) == timedelta(0)


def test_expire_due_ends_only_sessions_whose_time_is_up(sessions: SessionStore) -> None:
    short = sessions.open(
        new_session("1" * 64),
        client_ip="127.0.0.1",
        now=NOW,
        lifetime=timedelta(minutes=1),
    )
    long = sessions.open(
        new_session("2" * 64), client_ip="127.0.0.1", now=NOW, lifetime=FIFTEEN_MINUTES
    )

    assert sessions.expire_due(NOW + timedelta(seconds=59)) == []
    assert sessions.expire_due(NOW + timedelta(minutes=1)) == [short.ticket]
    assert sessions.expire_due(NOW + timedelta(minutes=2)) == []
    assert sessions.get(short.number).state is SessionState.EXPIRED  # type: ignore[union-attr]
    assert sessions.get(long.number).state is SessionState.ACTIVE  # type: ignore[union-attr]


def test_a_token_id_is_accepted_once_per_issuer(sessions: SessionStore) -> None:
    expires = NOW + timedelta(minutes=5)

    assert sessions.remember_token_id("https://a", "jti-1", expires, NOW)
    assert not sessions.remember_token_id("https://a", "jti-1", expires, NOW)
    assert sessions.remember_token_id("https://b", "jti-1", expires, NOW)


def test_a_very_long_token_id_is_kept_by_its_digest(sessions: SessionStore) -> None:
    long_id = "x" * 5000
    expires = NOW + timedelta(minutes=5)

    assert sessions.remember_token_id("https://a", long_id, expires, NOW)
    assert not sessions.remember_token_id("https://a", long_id, expires, NOW)
    assert sessions.remember_token_id("https://a", long_id + "y", expires, NOW)


def test_token_ids_are_pruned_after_expiry_and_retention(
    sessions: SessionStore,
) -> None:
    expires = NOW + timedelta(minutes=1)
    sessions.remember_token_id("https://a", "jti-1", expires, NOW)

    assert sessions.prune_token_ids(expires) == 0
    assert (
        sessions.prune_token_ids(expires + TOKEN_ID_RETENTION + timedelta(seconds=1))
        == 1
    )
    assert sessions.remember_token_id(
        "https://a", "jti-1", expires, expires + TOKEN_ID_RETENTION * 2
    )


def test_naive_datetimes_are_refused(sessions: SessionStore) -> None:
    with pytest.raises(sa.exc.StatementError, match="timezone-aware"):
        sessions.open(
            new_session(),
            client_ip="127.0.0.1",
            now=datetime(2026, 12, 3, 12, 0),
            lifetime=FIFTEEN_MINUTES,
        )


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:////var/lib/devdep/gateway.db", "sqlite+pysqlite"),
        ("sqlite:///gateway.db", "sqlite+pysqlite"),
        ("postgresql+psycopg://devdep@db.acme.corp/devdep", "postgresql+psycopg"),
        ("postgresql://devdep@db.acme.corp/devdep", "postgresql+psycopg"),
    ],
)
def test_store_urls_that_are_accepted(url: str, driver: str) -> None:
    assert normalise_url(url).drivername == driver


@pytest.mark.parametrize(
    "url", ["mysql://root@localhost/devdep", "postgresql+asyncpg://x@y/z", "not a url"]
)
def test_store_urls_that_are_refused(url: str) -> None:
    with pytest.raises(StoreError) as raised:
        normalise_url(url)
    assert isinstance(raised.value, UsageError)


def test_an_unopenable_store_is_a_clean_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")

    with pytest.raises(StoreError, match="cannot create the store"):
        Store(f"sqlite:///{blocker}/gateway.db")


def test_tickets_parse_back_to_their_number() -> None:
    assert ticket_for(42) == "DEP-42"
    assert parse_ticket("DEP-42") == 42
    for wrong in ("DEP-0", "DEP-", "dep-1", "DEP-01", "DEP-1x", "42", "DEP--1"):
        assert parse_ticket(wrong) is None


def test_a_store_that_is_not_a_database_is_a_clean_error(tmp_path: Path) -> None:
    not_a_database = tmp_path / "gateway.db"
    not_a_database.write_bytes(b"this is not SQLite" * 100)

    with pytest.raises(StoreError, match="cannot open or migrate"):
        Store(f"sqlite:///{not_a_database}")


def test_a_new_sqlite_store_is_private(tmp_path: Path) -> None:
    database = tmp_path / "state" / "gateway.db"

    Store(f"sqlite:///{database}").close()

    assert database.stat().st_mode & 0o777 == 0o600
    assert database.parent.stat().st_mode & 0o777 == 0o700
