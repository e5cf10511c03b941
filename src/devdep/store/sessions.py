"""Reading and writing sessions, their client IP footprints, and used token ids.

Every state change is a conditional UPDATE (`... WHERE state = 'active'`), so
when several gateway replicas or the sweeper race to end the same session,
exactly one of them sees it change and runs the session's termination hooks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from devdep.store.database import Store
from devdep.store.models import (
    ClientFootprint,
    SessionRecord,
    SessionState,
    UsedTokenId,
)
from devdep.store.tickets import ticket_for

# A used token id is kept this long past its token's expiry: longer than any
# clock leeway the verifier allows, so a token accepted late is still refused
# the second time.
TOKEN_ID_RETENTION = timedelta(minutes=5)
_MAX_STORED_JTI = 255


@dataclass(frozen=True)
class Footprint:
    """A client address a session was used from."""

    address: str
    first_seen: datetime
    last_seen: datetime
    requests: int


@dataclass(frozen=True)
class SessionView:
    """A session as read from the store, detached from the database."""

    number: int
    subject: str
    email: str | None
    issuer: str
    issuer_name: str
    provider: str
    state: SessionState
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None
    footprints: tuple[Footprint, ...]

    @property
    def ticket(self) -> str:
        return ticket_for(self.number)

    @property
    def lifetime(self) -> timedelta:
        return self.expires_at - self.created_at

    def is_due(self, now: datetime) -> bool:
        """Whether the session is still marked active but its time is up."""
        return self.state is SessionState.ACTIVE and now >= self.expires_at

    def remaining(self, now: datetime) -> timedelta:
        """The time left, zero once the session has ended or run out."""
        if self.state is not SessionState.ACTIVE:
            return timedelta(0)
        return max(self.expires_at - now, timedelta(0))


@dataclass(frozen=True)
class NewSession:
    """What a successful token exchange knows about the session it opens."""

    subject: str
    email: str | None
    issuer: str
    issuer_name: str
    provider: str
    credential_hash: str


def _view(record: SessionRecord) -> SessionView:
    return SessionView(
        number=record.id,
        subject=record.subject,
        email=record.email,
        issuer=record.issuer,
        issuer_name=record.issuer_name,
        provider=record.provider,
        state=record.state,
        created_at=record.created_at,
        expires_at=record.expires_at,
        ended_at=record.ended_at,
        footprints=tuple(
            Footprint(f.address, f.first_seen, f.last_seen, f.requests)
            for f in record.footprints
        ),
    )


def _stored_jti(jti: str) -> str:
    # A jti is the IdP's string of any length; a long one is kept by its digest,
    # which is as unique and fits the column on every database.
    if len(jti) <= _MAX_STORED_JTI:
        return jti
    return "sha256:" + hashlib.sha256(jti.encode("utf-8", "surrogatepass")).hexdigest()


class SessionStore:
    """The session tables of a `Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def open(
        self,
        new: NewSession,
        *,
        client_ip: str,
        now: datetime,
        lifetime: timedelta,
    ) -> SessionView:
        """Store an active session that ends exactly `lifetime` after `now`."""
        with self.store.session() as db, db.begin():
            record = SessionRecord(
                subject=new.subject,
                email=new.email,
                issuer=new.issuer,
                issuer_name=new.issuer_name,
                provider=new.provider,
                credential_hash=new.credential_hash,
                state=SessionState.ACTIVE,
                created_at=now,
                expires_at=now + lifetime,
                ended_at=None,
            )
            record.footprints.append(
                ClientFootprint(
                    address=client_ip, first_seen=now, last_seen=now, requests=1
                )
            )
            db.add(record)
            db.flush()
            return _view(record)

    def get(self, number: int) -> SessionView | None:
        with self.store.session() as db:
            record = db.get(
                SessionRecord, number, options=[selectinload(SessionRecord.footprints)]
            )
            return _view(record) if record else None

    def find_by_credential(self, credential_hash: str) -> SessionView | None:
        with self.store.session() as db:
            record = db.scalar(
                select(SessionRecord)
                .where(SessionRecord.credential_hash == credential_hash)
                .options(selectinload(SessionRecord.footprints))
            )
            return _view(record) if record else None

    def record_footprint(self, number: int, client_ip: str, now: datetime) -> None:
        """Count one request of session `number` from `client_ip`."""
        with self.store.session() as db, db.begin():
            if self._bump_footprint(db, number, client_ip, now):
                return
            try:
                with db.begin_nested():
                    db.add(
                        ClientFootprint(
                            session_id=number,
                            address=client_ip,
                            first_seen=now,
                            last_seen=now,
                            requests=1,
                        )
                    )
            except IntegrityError:
                # Another request from the same new address got there first.
                self._bump_footprint(db, number, client_ip, now)

    @staticmethod
    def _bump_footprint(
        db: Session, number: int, client_ip: str, now: datetime
    ) -> bool:
        result = db.execute(
            update(ClientFootprint)
            .where(
                ClientFootprint.session_id == number,
                ClientFootprint.address == client_ip,
            )
            .values(last_seen=now, requests=ClientFootprint.requests + 1)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def _end(self, number: int, state: SessionState, now: datetime) -> bool:
        with self.store.session() as db, db.begin():
            result = db.execute(
                update(SessionRecord)
                .where(
                    SessionRecord.id == number,
                    SessionRecord.state == SessionState.ACTIVE,
                )
                .values(state=state, ended_at=now)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def expire(self, number: int, now: datetime) -> bool:
        """Mark session `number` expired; False when it had already ended."""
        return self._end(number, SessionState.EXPIRED, now)

    def revoke(self, number: int, now: datetime) -> bool:
        """Mark session `number` revoked; False when it had already ended."""
        return self._end(number, SessionState.REVOKED, now)

    def expire_due(self, now: datetime) -> list[str]:
        """Mark every active session whose time is up as expired; return the
        tickets this call changed, oldest first."""
        with self.store.session() as db:
            due = db.scalars(
                select(SessionRecord.id)
                .where(
                    SessionRecord.state == SessionState.ACTIVE,
                    SessionRecord.expires_at <= now,
                )
                .order_by(SessionRecord.id)
            ).all()
        return [ticket_for(number) for number in due if self.expire(number, now)]

    def remember_token_id(
        self, issuer: str, jti: str, expires_at: datetime, now: datetime
    ) -> bool:
        """Record that a token with this `jti` was used; False when it already was."""
        self.prune_token_ids(now)
        try:
            with self.store.session() as db, db.begin():
                db.add(
                    UsedTokenId(
                        issuer=issuer,
                        jti=_stored_jti(jti),
                        expires_at=max(expires_at, now),
                    )
                )
        except IntegrityError:
            return False
        return True

    def prune_token_ids(self, now: datetime) -> int:
        """Forget token ids whose tokens expired long enough ago; return how many."""
        with self.store.session() as db, db.begin():
            result = db.execute(
                delete(UsedTokenId).where(
                    UsedTokenId.expires_at < now - TOKEN_ID_RETENTION
                )
            )
            return int(result.rowcount)  # type: ignore[attr-defined]
