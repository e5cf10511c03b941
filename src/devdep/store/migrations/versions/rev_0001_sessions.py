"""Sessions, their client IP footprints, and used ID token ids.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("issuer", sa.Text(), nullable=False),
        sa.Column("issuer_name", sa.String(255), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("credential_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
        sa.UniqueConstraint(
            "credential_hash", name=op.f("uq_sessions_credential_hash")
        ),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_sessions_state"), "sessions", ["state"])
    op.create_index(op.f("ix_sessions_expires_at"), "sessions", ["expires_at"])

    op.create_table(
        "session_footprints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_session_footprints_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_session_footprints")),
        sa.UniqueConstraint(
            "session_id", "address", name=op.f("uq_session_footprints_session_id")
        ),
    )
    op.create_index(
        op.f("ix_session_footprints_session_id"), "session_footprints", ["session_id"]
    )

    op.create_table(
        "used_token_ids",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("issuer", sa.Text(), nullable=False),
        sa.Column("jti", sa.String(255), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_used_token_ids")),
        sa.UniqueConstraint("issuer", "jti", name=op.f("uq_used_token_ids_issuer")),
    )
    op.create_index(
        op.f("ix_used_token_ids_expires_at"), "used_token_ids", ["expires_at"]
    )


def downgrade() -> None:
    op.drop_table("used_token_ids")
    op.drop_table("session_footprints")
    op.drop_table("sessions")
