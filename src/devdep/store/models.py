"""The tables of the store, as SQLAlchemy's typed ORM declares them.

The migrations in `devdep/store/migrations` create these tables; a change
here needs a new migration there.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    Enum,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from devdep.store.tickets import ticket_for
from devdep.store.types import UtcDateTime

# Explicit constraint names, so migrations can refer to them on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class SessionState(enum.StrEnum):
    """A session is active until it expires or is revoked; both are final."""

    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UtcDateTime()}  # noqa: RUF012


class SessionRecord(Base):
    """One session: who authenticated, through which issuer, and until when."""

    __tablename__ = "sessions"
    # Without AUTOINCREMENT SQLite may hand out the number of a deleted session
    # again, and a ticket must never name two sessions.
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject: Mapped[str] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(String(320))
    issuer: Mapped[str] = mapped_column(Text)
    issuer_name: Mapped[str] = mapped_column(String(255))
    provider: Mapped[str] = mapped_column(String(32))
    # SHA-256 of the bearer credential, hex; the credential itself is never kept.
    credential_hash: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[SessionState] = mapped_column(
        Enum(
            SessionState,
            native_enum=False,
            length=16,
            values_callable=lambda states: [state.value for state in states],
        ),
        index=True,
    )
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    ended_at: Mapped[datetime | None]

    footprints: Mapped[list[ClientFootprint]] = relationship(
        back_populates="session",
        cascade="all, delete-orphan",
        order_by="ClientFootprint.first_seen",
    )

    @property
    def ticket(self) -> str:
        return ticket_for(self.id)


class ClientFootprint(Base):
    """A client address a session was used from, with when and how often."""

    __tablename__ = "session_footprints"
    __table_args__ = (UniqueConstraint("session_id", "address"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    address: Mapped[str] = mapped_column(String(64))
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]
    requests: Mapped[int] = mapped_column(Integer, default=1)

    session: Mapped[SessionRecord] = relationship(back_populates="footprints")


class UsedTokenId(Base):
    """An ID token's `jti`, kept until the token expires so it is accepted once."""

    __tablename__ = "used_token_ids"
    __table_args__ = (UniqueConstraint("issuer", "jti"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issuer: Mapped[str] = mapped_column(Text)
    jti: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime] = mapped_column(index=True)
