"""The gateway's HTTP API, a FastAPI application.

    POST   /v1/sessions            exchange an ID token for a session
    GET    /v1/sessions/current    the session of the bearer credential
    GET    /v1/sessions/{ticket}   the same, naming its ticket
    DELETE /v1/sessions/current    revoke the bearer's session
    GET    /v1/issuers             the trusted issuers, for the CLI's sign-in
    GET    /v1/health              liveness

Every answer is JSON, errors included: {"error": CODE, "message": TEXT}. Any
malformed request answers 4xx; a 5xx means the gateway itself failed (store or
identity provider unreachable, or a bug). One INFO line is logged per request,
with neither tokens nor credentials: those travel only in bodies and headers,
which are never logged.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Literal

import pydantic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from devdep.auth.errors import DomainRefused, IdentityProviderUnavailable, TokenRejected
from devdep.auth.settings import IssuerSettings
from devdep.auth.tokens import MAX_TOKEN_LENGTH
from devdep.gateway.errors import NotAuthenticated, SessionEnded
from devdep.gateway.sessions import OpenedSession, SessionService
from devdep.gateway.sweeper import SessionSweeper
from devdep.store.sessions import SessionView
from devdep.store.tickets import parse_ticket

logger = logging.getLogger(__name__)

API_VERSION = "v1"
MAX_BODY_BYTES = 64 * 1024
_MAX_LOGGED_PATH = 200


class TokenExchange(BaseModel):
    """The body of POST /v1/sessions."""

    model_config = ConfigDict(extra="forbid", strict=True)

    token: str = Field(min_length=1, max_length=MAX_TOKEN_LENGTH)
    provider: Literal["oidc", "github-oidc", "gitlab-jwt"] = "oidc"


class _BadRequest(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _error(
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    return JSONResponse(
        {"error": code, "message": message, **extra},
        status_code=status,
        headers=headers,
    )


def _timestamp(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def session_document(session: SessionView, now: datetime) -> dict[str, Any]:
    """A session as the API shows it."""
    return {
        "ticket": session.ticket,
        "state": session.state.value,
        "subject": session.subject,
        "email": session.email,
        "issuer": session.issuer,
        "issuer_name": session.issuer_name,
        "provider": session.provider,
        "created_at": _timestamp(session.created_at),
        "expires_at": _timestamp(session.expires_at),
        "ended_at": _timestamp(session.ended_at),
        "lifetime_seconds": session.lifetime.total_seconds(),
        "remaining_seconds": session.remaining(now).total_seconds(),
        "footprints": [
            {
                "address": footprint.address,
                "first_seen": _timestamp(footprint.first_seen),
                "last_seen": _timestamp(footprint.last_seen),
                "requests": footprint.requests,
            }
            for footprint in session.footprints
        ],
        # Runs started under the session appear here once the gateway runs jobs.
        "runs": [],
    }


def _opened_document(opened: OpenedSession, now: datetime) -> dict[str, Any]:
    identity = opened.identity
    session = opened.session
    return {
        **session_document(session, now),
        "credential": opened.credential,
        "client_ip": opened.client_ip,
        "handshake": {
            "client_ip": opened.client_ip,
            "identity": identity.email or identity.subject,
            "metadata": opened.metadata,
            "signature": {
                "result": "PASS",
                "algorithm": identity.algorithm,
                "key_type": identity.key_type,
                "key_size": identity.key_size,
                "key_id": identity.key_id,
            },
            "ticket": session.ticket,
            "compliance_window_seconds": session.lifetime.total_seconds(),
        },
    }


class RequestLog:
    """ASGI middleware logging one INFO line per HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        status = 500

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            client = scope.get("client")
            logger.info(
                "%s %s %d client=%s %.1fms",
                scope.get("method", "-"),
                str(scope.get("path", ""))[:_MAX_LOGGED_PATH],
                status,
                client[0] if client else "-",
                (time.perf_counter() - started) * 1000,
            )


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credential.strip() or None


async def _read_exchange(request: Request) -> TokenExchange:
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_BODY_BYTES:
            raise _BadRequest(
                413, "too_large", f"the body exceeds {MAX_BODY_BYTES} bytes"
            )
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad UTF-8 and bad JSON; RecursionError a document
        # nested deeper than the parser goes.
        raise _BadRequest(
            400, "invalid_json", "the body is not a JSON document"
        ) from exc
    try:
        return TokenExchange.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = [
            f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        ]
        raise _BadRequest(422, "invalid_request", "; ".join(problems)) from exc


def create_app(
    service: SessionService,
    issuers: list[IssuerSettings],
    sweeper: SessionSweeper | None = None,
) -> FastAPI:
    """The gateway's ASGI application; the sweeper runs while the app does."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if sweeper is not None:
            sweeper.launch()
        try:
            yield
        finally:
            if sweeper is not None:
                await sweeper.shutdown()

    app = FastAPI(
        title="devdep gateway",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_middleware(RequestLog)
    app.state.service = service
    _install_error_handlers(app)

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        return {"ok": True, "api": API_VERSION}

    @app.get("/v1/issuers")
    def list_issuers() -> dict[str, Any]:
        return {
            "issuers": [
                {
                    "name": issuer.name,
                    "kind": issuer.kind,
                    "issuer": issuer.issuer,
                    "audience": issuer.audience,
                }
                for issuer in issuers
            ]
        }

    @app.post("/v1/sessions", status_code=201)
    async def exchange_token(request: Request) -> JSONResponse:
        exchange = await _read_exchange(request)
        opened = await run_in_threadpool(
            service.exchange, exchange.token, exchange.provider, _client_ip(request)
        )
        return JSONResponse(_opened_document(opened, service.clock()), status_code=201)

    @app.get("/v1/sessions/current")
    def current_session(request: Request) -> dict[str, Any]:
        session = service.authenticate(_bearer(request), _client_ip(request))
        return session_document(session, service.clock())

    @app.delete("/v1/sessions/current")
    def revoke_session(request: Request) -> dict[str, Any]:
        session = service.authenticate(_bearer(request), _client_ip(request))
        return session_document(service.revoke(session), service.clock())

    @app.get("/v1/sessions/{ticket}")
    def session_by_ticket(ticket: str, request: Request) -> JSONResponse:
        number = parse_ticket(ticket)
        if number is None:
            return _error(
                404, "unknown_ticket", "not a ticket; tickets look like DEP-42"
            )
        session = service.authenticate(_bearer(request), _client_ip(request))
        if session.number != number:
            return _error(
                403,
                "forbidden",
                f"the credential presented belongs to {session.ticket}, not {ticket}",
            )
        return JSONResponse(session_document(session, service.clock()))

    return app


def _install_error_handlers(app: FastAPI) -> None:
    async def bad_request(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, _BadRequest)
        return _error(exc.status, exc.code, exc.message)

    async def validation_failed(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _error(422, "invalid_request", "the request is not valid")

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http"
        )
        return _error(exc.status_code, code, str(exc.detail), headers=exc.headers)

    async def domain_refused(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DomainRefused)
        return _error(403, DomainRefused.CODE, exc.message, domain=exc.domain)

    async def idp_unavailable(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, IdentityProviderUnavailable)
        return _error(503, "idp_unavailable", exc.message)

    async def token_rejected(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, TokenRejected)
        return _error(401, "token_rejected", exc.message, rule=exc.rule)

    async def not_authenticated(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, NotAuthenticated)
        return _error(
            401, "unauthenticated", exc.message, headers={"WWW-Authenticate": "Bearer"}
        )

    async def session_ended(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, SessionEnded)
        return _error(
            401,
            exc.state,
            exc.message,
            headers={"WWW-Authenticate": "Bearer"},
            ticket=exc.ticket,
        )

    async def store_failed(_request: Request, exc: Exception) -> JSONResponse:
        logger.error("store failure: %s", type(exc).__name__)
        return _error(503, "store_unavailable", "the gateway's store is unavailable")

    app.add_exception_handler(_BadRequest, bad_request)
    app.add_exception_handler(RequestValidationError, validation_failed)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(DomainRefused, domain_refused)
    app.add_exception_handler(IdentityProviderUnavailable, idp_unavailable)
    app.add_exception_handler(TokenRejected, token_rejected)
    app.add_exception_handler(NotAuthenticated, not_authenticated)
    app.add_exception_handler(SessionEnded, session_ended)
    app.add_exception_handler(SQLAlchemyError, store_failed)
