"""Opening, checking, ending and sweeping sessions: what the endpoints do,
without the HTTP.

A session opens when an ID token verifies and its identity passes the domain
policy. It lives exactly `lifetime`, and every use after that answers
"expired". Whoever first sees a session past its expiry, a request or the
sweeper, marks it expired and runs the termination hooks; the store's
conditional update makes sure only one of them does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from devdep.auth.tokens import VerifiedIdentity
from devdep.gateway.credentials import (
    hash_credential,
    looks_like_credential,
    new_credential,
)
from devdep.gateway.errors import NotAuthenticated, SessionEnded
from devdep.gateway.hooks import TerminationHooks
from devdep.store.models import SessionState
from devdep.store.sessions import NewSession, SessionStore, SessionView

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Verifier(Protocol):
    """What the gateway needs of devdep.auth's TokenVerifier."""

    def verify(self, token: str) -> VerifiedIdentity: ...

    def metadata_summary(self, issuer_name: str) -> dict[str, str]: ...


@dataclass(frozen=True)
class OpenedSession:
    """A session just opened, with the credential the client gets once."""

    session: SessionView
    credential: str
    identity: VerifiedIdentity
    metadata: dict[str, str]
    client_ip: str


class SessionService:
    """The session rules, over a store, a token verifier and a clock."""

    def __init__(
        self,
        sessions: SessionStore,
        verifier: Verifier,
        *,
        lifetime: timedelta,
        hooks: TerminationHooks,
        clock: Clock = utc_now,
    ) -> None:
        self.sessions = sessions
        self.verifier = verifier
        self.lifetime = lifetime
        self.hooks = hooks
        self.clock = clock

    def exchange(self, token: str, provider: str, client_ip: str) -> OpenedSession:
        """Verify `token` and open a session for its identity.

        Raises TokenRejected or DomainRefused from the verifier unchanged.
        """
        identity = self.verifier.verify(token)
        metadata = self.verifier.metadata_summary(identity.issuer_name)
        credential = new_credential()
        session = self.sessions.open(
            NewSession(
                subject=identity.subject,
                email=identity.email,
                issuer=identity.issuer,
                issuer_name=identity.issuer_name,
                provider=provider,
                credential_hash=hash_credential(credential),
            ),
            client_ip=client_ip,
            now=self.clock(),
            lifetime=self.lifetime,
        )
        logger.info(
            "opened session %s for %s via %s from %s, expires %s",
            session.ticket,
            identity.email or identity.subject,
            identity.issuer_name,
            client_ip,
            session.expires_at.isoformat(),
        )
        return OpenedSession(session, credential, identity, metadata, client_ip)

    def authenticate(self, credential: str | None, client_ip: str) -> SessionView:
        """The active session `credential` belongs to, with this request counted
        in its IP footprints; NotAuthenticated or SessionEnded otherwise."""
        if not credential or not looks_like_credential(credential):
            raise NotAuthenticated("no valid session credential was presented")
        session = self.sessions.find_by_credential(hash_credential(credential))
        if session is None:
            raise NotAuthenticated("the session credential is not known")

        now = self.clock()
        if session.is_due(now):
            self._expire(session, now)
            raise SessionEnded(session.ticket, SessionState.EXPIRED.value)
        if session.state is not SessionState.ACTIVE:
            raise SessionEnded(session.ticket, session.state.value)

        self.sessions.record_footprint(session.number, client_ip, now)
        current = self.sessions.get(session.number)
        assert current is not None, "a session is never deleted while in use"
        return current

    def revoke(self, session: SessionView) -> SessionView:
        """End `session` now and run its termination hooks; returns the session
        as it is afterwards (already ended, if another request was first)."""
        if self.sessions.revoke(session.number, self.clock()):
            logger.info("revoked session %s", session.ticket)
            self.hooks.on_session_expired(session.ticket)
        return self.sessions.get(session.number) or session

    def sweep(self) -> list[str]:
        """Mark every session past its expiry as expired, run the termination
        hooks of each, and forget stale token ids; return the tickets ended."""
        now = self.clock()
        ended = self.sessions.expire_due(now)
        for ticket in ended:
            logger.info("session %s expired", ticket)
            self.hooks.on_session_expired(ticket)
        self.sessions.prune_token_ids(now)
        return ended

    def _expire(self, session: SessionView, now: datetime) -> None:
        if self.sessions.expire(session.number, now):
            logger.info("session %s expired", session.ticket)
            self.hooks.on_session_expired(session.ticket)
