"""Opening the store: the database URL, the engine, and the schema migrations.

Two URL forms are accepted: `sqlite:///relative.db` or `sqlite:////abs/path.db`,
and `postgresql+psycopg://user:password@host:port/database` (a bare
`postgresql://` means the same driver). The schema is brought up to date with
Alembic every time a store is opened, so a gateway never serves an old schema.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import sqlalchemy
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from devdep.errors import UsageError

logger = logging.getLogger(__name__)

MIGRATIONS = "devdep.store:migrations"

# Serialises migrations between gateway replicas starting at the same time
# against one PostgreSQL; any constant works, as long as all replicas agree.
_MIGRATION_LOCK_KEY = 0x64657664  # "devd"


class StoreError(UsageError):
    """The store URL is unusable, or the database cannot be opened or migrated."""


def normalise_url(url: str) -> URL:
    """Parse a store URL, refusing every database and driver but the two supported."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(
            f"the store URL {url!r} is not a database URL",
            hint="use sqlite:////path/to/gateway.db or "
            "postgresql+psycopg://user@host/database",
        ) from exc

    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        return parsed.set(drivername="sqlite+pysqlite")
    if parsed.drivername in ("postgresql", "postgresql+psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    raise StoreError(
        f"the store URL uses {parsed.drivername!r}, which devdep does not support",
        hint="use sqlite:////path/to/gateway.db or "
        "postgresql+psycopg://user@host/database",
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the sweeper write while request threads read; foreign keys are
    # off by default in SQLite and the footprints' cascade needs them.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _create_engine(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database and database != ":memory:":
            directory = Path(database).parent
            try:
                directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the store's directory {directory}: "
                    f"{exc.strerror or exc}",
                    hint="check the store URL, or create the directory",
                ) from exc
            # The store names who holds which session; SQLite gives its -wal
            # and -shm files the mode of the database, so creating the file
            # 0600 keeps all three private.
            with contextlib.suppress(OSError):  # existing file, or reported below
                os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        engine = sqlalchemy.create_engine(
            url,
            # Request handlers run in a thread pool and the sweeper in another
            # thread; the pool hands each connection to one thread at a time.
            connect_args={"check_same_thread": False, "timeout": 30},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sqlalchemy.create_engine(url, pool_pre_ping=True)


class Store:
    """An open database with an up-to-date schema."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = normalise_url(url)
        self.engine = _create_engine(self.url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if migrate:
            self.migrate()

    @property
    def backend(self) -> str:
        """ "sqlite" or "postgresql"."""
        return self.url.get_backend_name()

    def describe(self) -> str:
        """The URL with any password hidden, for logs and messages."""
        return self.url.render_as_string(hide_password=True)

    def session(self) -> Session:
        """A new ORM session; use it as a context manager."""
        return self._sessions()

    def migrate(self) -> None:
        """Apply every migration not yet applied."""
        config = Config()
        config.set_main_option("script_location", MIGRATIONS)
        try:
            with self.engine.begin() as connection:
                if self.backend == "postgresql":
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"),
                        {"key": _MIGRATION_LOCK_KEY},
                    )
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except SQLAlchemyError as exc:
            cause = getattr(exc, "orig", None) or exc
            reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            raise StoreError(
                f"cannot open or migrate the store {self.describe()}: {reason}",
                hint="check the store URL, and that the database is running and "
                "writable",
            ) from exc
        logger.info("store %s is at the latest schema", self.describe())

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
