"""Assembling a gateway from its settings, and serving it under uvicorn.

The listening socket is bound here rather than by uvicorn, so that an address
in use or not permitted is reported as our own error with an exit code, and so
that the caller learns the gateway is listening before requests arrive.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import uvicorn
from fastapi import FastAPI

from devdep.auth.tokens import TokenVerifier
from devdep.gateway.app import create_app
from devdep.gateway.config import GatewaySettings, ListenAddress
from devdep.gateway.errors import ListenError
from devdep.gateway.hooks import TerminationHooks
from devdep.gateway.sessions import Clock, SessionService, Verifier, utc_now
from devdep.gateway.sweeper import SessionSweeper
from devdep.gateway.tls import server_context
from devdep.store.database import Store
from devdep.store.sessions import SessionStore

logger = logging.getLogger(__name__)


@dataclass
class Gateway:
    """Everything one gateway process holds: store, verifier, hooks, app."""

    settings: GatewaySettings
    store: Store
    service: SessionService
    sweeper: SessionSweeper
    app: FastAPI
    hooks: TerminationHooks
    _owned_verifier: TokenVerifier | None = field(default=None, repr=False)

    def close(self) -> None:
        if self._owned_verifier is not None:
            self._owned_verifier.close()
        self.store.close()


def build_gateway(
    settings: GatewaySettings,
    *,
    verifier: Verifier | None = None,
    hooks: TerminationHooks | None = None,
    clock: Clock = utc_now,
) -> Gateway:
    """Open (and migrate) the store and wire the app; `verifier` replaces the
    real TokenVerifier only in tests."""
    store = Store(settings.store)
    sessions = SessionStore(store)
    hooks = hooks or TerminationHooks()

    owned = None
    if verifier is None:
        # Used token ids live in the store, so a token replayed against another
        # replica sharing it is refused too.
        def replay_guard(issuer: str, token_id: str, expires_at: datetime) -> bool:
            return sessions.remember_token_id(issuer, token_id, expires_at, clock())

        owned = TokenVerifier(settings.identity, clock=clock, replay_guard=replay_guard)
        verifier = owned

    service = SessionService(
        sessions,
        verifier,
        lifetime=timedelta(minutes=settings.session_minutes),
        hooks=hooks,
        clock=clock,
    )
    sweeper = SessionSweeper(service, settings.sweep_seconds)
    app = create_app(service, settings.identity.issuers, sweeper)
    return Gateway(settings, store, service, sweeper, app, hooks, owned)


def bind_listener(listen: ListenAddress) -> socket.socket:
    """A socket bound to the listen address; ListenError when it cannot be."""
    try:
        family = socket.getaddrinfo(listen.host, listen.port, type=socket.SOCK_STREAM)[
            0
        ][0]
        listener = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise ListenError(f"cannot resolve {listen.host}: {exc}") from exc
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((listen.host, listen.port))
        listener.listen(128)
    except OSError as exc:
        listener.close()
        raise ListenError(
            f"cannot listen on {listen.host}:{listen.port}: {exc.strerror or exc}",
            hint="choose another 'listen' address, or stop what is using it",
        ) from exc
    listener.set_inheritable(False)
    return listener


class GatewayServer:
    """A gateway under uvicorn: `bind`, then `run` until `request_shutdown`
    (or SIGINT/SIGTERM, when run in the main thread)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        settings = gateway.settings
        tls_context: ssl.SSLContext | None = None
        if settings.tls is not None:
            # Built before binding, so a bad certificate fails before anything
            # listens.
            tls_context = server_context(settings.tls)

        def context_factory(
            _config: uvicorn.Config, _default: Callable[[], ssl.SSLContext]
        ) -> ssl.SSLContext:
            assert tls_context is not None
            return tls_context

        config = uvicorn.Config(
            gateway.app,
            log_config=None,
            log_level="info",
            access_log=False,  # the app logs one line per request itself
            server_header=False,
            proxy_headers=bool(settings.trusted_proxies),
            forwarded_allow_ips=settings.trusted_proxies or None,
            ssl_context_factory=context_factory if tls_context else None,
            timeout_graceful_shutdown=10,
        )
        self._server = uvicorn.Server(config)
        self._listener: socket.socket | None = None

    @property
    def started(self) -> bool:
        return bool(self._server.started)

    def bind(self) -> str:
        """Bind the listen address; returns the gateway's URL."""
        self._listener = bind_listener(self.gateway.settings.listen)
        return self.gateway.settings.url

    def run(self) -> None:
        """Serve until asked to shut down; binds first if `bind` was not called."""
        if self._listener is None:
            self.bind()
        assert self._listener is not None
        settings = self.gateway.settings
        logger.info(
            "gateway listening on %s, store %s, sessions last %g minutes",
            settings.url,
            self.gateway.store.describe(),
            settings.session_minutes,
        )
        try:
            self._server.run(sockets=[self._listener])
        finally:
            self._listener.close()
            self._listener = None

    def request_shutdown(self) -> None:
        """Ask `run` to finish the requests in flight and return."""
        self._server.should_exit = True


def serve(gateway: Gateway, on_listening: Callable[[str], None]) -> None:
    """Serve until SIGINT or SIGTERM; `on_listening(url)` is called once bound."""
    server = GatewayServer(gateway)
    on_listening(server.bind())
    server.run()


def configure_service_logging() -> None:
    """Log devdep's and uvicorn's INFO lines, with timestamps, as a service
    should; the CLI's other commands log warnings only."""
    for name in ("devdep", "uvicorn"):
        logging.getLogger(name).setLevel(logging.INFO)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)
