"""The store against a real PostgreSQL: migrations, sessions, state changes and
used token ids behave as on SQLite, with UTC-aware datetimes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from devdep.store.database import Store
from devdep.store.models import Base, SessionState
from devdep.store.sessions import NewSession, SessionStore

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 3, 12, 0, 0, 654321, tzinfo=UTC)


def test_the_store_works_on_postgresql(postgresql_url: str) -> None:
    store = Store(postgresql_url)
    try:
        assert store.backend == "postgresql"
        assert {"sessions", "session_footprints", "used_token_ids"} <= set(
            sa.inspect(store.engine).get_table_names()
        )
        # A second open runs the migrations again, which must be a no-op.
        Store(postgresql_url).close()

        sessions = SessionStore(store)
        opened = sessions.open(
            NewSession(
                subject="alice",
                email="alice@acme.corp",
                issuer="https://idp.acme.corp",
                issuer_name="corp",
                provider="oidc",
                credential_hash="c" * 64,
            ),
            client_ip="198.51.100.42",
            now=NOW,
            lifetime=timedelta(minutes=15),
        )
        sessions.record_footprint(opened.number, "198.51.100.42", NOW)
        sessions.record_footprint(opened.number, "2001:db8::1", NOW)

        stored = sessions.find_by_credential("c" * 64)
        assert stored is not None
        assert stored.ticket == opened.ticket
        assert stored.created_at == NOW
        assert stored.created_at.tzinfo is not None
        assert stored.expires_at - stored.created_at == timedelta(minutes=15)
        assert {f.address: f.requests for f in stored.footprints} == {
            "198.51.100.42": 2,
            "2001:db8::1": 1,
        }

        assert sessions.expire_due(NOW + timedelta(minutes=15)) == [opened.ticket]
        assert sessions.expire(opened.number, NOW) is False
        assert sessions.get(opened.number).state is SessionState.EXPIRED  # type: ignore[union-attr]

        expires = NOW + timedelta(minutes=5)
        assert sessions.remember_token_id("https://idp.acme.corp", "j1", expires, NOW)
        assert not sessions.remember_token_id(
            "https://idp.acme.corp", "j1", expires, NOW
        )
    finally:
        with store.engine.begin() as connection:
            for table in ("session_footprints", "sessions", "used_token_ids"):
                connection.execute(sa.text(f"DELETE FROM {table}"))
        store.close()


def test_the_migrated_postgresql_schema_matches_the_models(postgresql_url: str) -> None:
    store = Store(postgresql_url)
    try:
        with store.engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True}
            )
            assert compare_metadata(context, Base.metadata) == []
    finally:
        store.close()
