"""The CLI's gateway client: each answer of the gateway becomes the right
devdep error and exit code, and an ended session clears the cache."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from devdep.errors import ExitCode, exit_code_for
from devdep.gateway import client as client_module
from devdep.gateway.client import GatewayClient, resolve_gateway, session_status
from devdep.gateway.errors import (
    EntityDomainRefused,
    GatewayRequestFailed,
    GatewayUnreachable,
    NotAuthenticated,
    SessionEnded,
    TokenRefused,
)
from devdep.gateway.session_cache import CachedSession, save_session

URL = "http://gateway.test"


def client_answering(status: int, document: Any) -> GatewayClient:
    def answer(_request: httpx.Request) -> httpx.Response:
        if isinstance(document, bytes):
            return httpx.Response(status, content=document)
        return httpx.Response(status, json=document)

    return GatewayClient(URL, http=httpx.Client(transport=httpx.MockTransport(answer)))


@pytest.mark.parametrize(
    ("status", "document", "error", "code"),
    [
        (401, {"error": "expired", "ticket": "DEP-3"}, SessionEnded, 101),
        (401, {"error": "revoked", "ticket": "DEP-3"}, SessionEnded, 101),
        (401, {"error": "unauthenticated"}, NotAuthenticated, 101),
        (401, {"error": "token_rejected", "rule": "audience"}, TokenRefused, 101),
        (503, {"error": "idp_unavailable"}, TokenRefused, 101),
        (
            403,
            {
                "error": "CRITICAL ERROR: INVALID_ENTITY_DOMAIN",
                "message": "CRITICAL ERROR: INVALID_ENTITY_DOMAIN: gmail.com is public",
            },
            EntityDomainRefused,
            102,
        ),
        (403, {"error": "forbidden", "message": "not yours"}, GatewayRequestFailed, 2),
        (500, {"error": "boom"}, GatewayRequestFailed, 2),
        (502, b"<html>bad gateway</html>", GatewayUnreachable, 2),
    ],
)
def test_answers_map_to_errors(
    status: int, document: Any, error: type[Exception], code: int
) -> None:
    with pytest.raises(error) as raised:
        client_answering(status, document).session("c" * 43)

    assert exit_code_for(raised.value) == ExitCode(code)


def test_a_refused_domain_says_the_critical_error() -> None:
    document = {
        "error": "CRITICAL ERROR: INVALID_ENTITY_DOMAIN",
        "message": "CRITICAL ERROR: INVALID_ENTITY_DOMAIN: gmail.com is public",
    }
    with pytest.raises(EntityDomainRefused) as raised:
        client_answering(403, document).open_session("t", "oidc")

    assert raised.value.message.startswith("CRITICAL ERROR: INVALID_ENTITY_DOMAIN")


def test_an_unreachable_gateway_names_the_url() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"

    with pytest.raises(GatewayUnreachable) as raised, GatewayClient(url) as client:
        client.issuers()

    assert url in raised.value.message
    assert exit_code_for(raised.value) is ExitCode.ERR_USAGE


def test_the_gateway_url_is_resolved_in_order() -> None:
    cached = CachedSession("http://cached:1/", "DEP-1", "c", "s", "corp", "x")
    env = {"DEVDEP_GATEWAY": "http://env:2"}

    assert resolve_gateway("http://option:3/", cached, env) == "http://option:3"
    assert resolve_gateway(None, cached, env) == "http://env:2"
    assert resolve_gateway(None, cached, {}) == "http://cached:1"
    assert resolve_gateway(None, None, {}) == "http://127.0.0.1:8443"


def test_an_expired_session_clears_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "session.json"
    save_session(
        CachedSession(
            URL, "DEP-3", "c" * 43, "alice", "corp", "2026-12-03T13:00:00+00:00"
        ),
        cache,
    )
    monkeypatch.setattr(
        client_module,
        "GatewayClient",
        lambda url, env: client_answering(401, {"error": "expired", "ticket": "DEP-3"}),
    )

    with pytest.raises(SessionEnded) as raised:
        session_status("DEP-3", gateway=None, cache=cache, env={})

    assert raised.value.ticket == "DEP-3"
    assert not cache.exists()


def test_status_without_a_cached_session_asks_to_authenticate(tmp_path: Path) -> None:
    with pytest.raises(NotAuthenticated) as raised:
        session_status(None, gateway=None, cache=tmp_path / "none.json", env={})

    assert "devdep-cli auth" in (raised.value.hint or "")


def test_status_refuses_a_malformed_ticket(tmp_path: Path) -> None:
    with pytest.raises(GatewayRequestFailed, match="not a ticket"):
        session_status("DEP-x", gateway=None, cache=tmp_path / "s.json", env={})
