"""The gateway's durable state: sessions, their client IP footprints, and the ID
token ids already used, kept in SQLite or PostgreSQL through SQLAlchemy.

- `devdep.store.database`: `Store`, the engine and the migrations;
- `devdep.store.sessions`: `SessionStore`, the only code that reads or writes
  the session tables;
- `devdep.store.models`: the tables; `devdep.store.tickets`: DEP-<n> tickets.

This module imports nothing, so that reading a ticket does not load SQLAlchemy.
"""
