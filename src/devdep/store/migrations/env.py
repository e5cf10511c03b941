"""Alembic's entry point: runs the migrations on the connection `Store` hands it.

The store always passes an open connection in `config.attributes`, so there is
no alembic.ini and no offline (SQL script) mode.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from devdep.store.models import Base

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("the store's migrations run only through Store.migrate()")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite can alter a table only by copying it; batch mode does that.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
