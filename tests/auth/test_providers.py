"""Token providers: GitHub Actions against a tiny loopback HTTP server, the
device authorization grant at the HTTP seam, and GitLab's variable."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from devdep.auth.errors import ProviderNotConfigured, TokenRequestFailed
from devdep.auth.providers import (
    device_authorization,
    github_actions_token,
    gitlab_ci_token,
)
from devdep.errors import ExitCode, exit_code_for

# --- GitHub Actions ----------------------------------------------------------


@dataclass
class ActionsTokenService:
    """Stands in for the runtime's token endpoint on a loopback port."""

    status: int = 200
    body: dict[str, Any] = field(default_factory=lambda: {"value": "id.token.value"})
    requests: list[tuple[str, str | None]] = field(default_factory=list)


@pytest.fixture
def actions_service() -> Iterator[tuple[ActionsTokenService, str]]:
    service = ActionsTokenService()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            service.requests.append((self.path, self.headers.get("Authorization")))
            payload = json.dumps(service.body).encode()
            self.send_response(service.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        yield service, f"http://127.0.0.1:{port}/_apis/token?api-version=2.0"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_github_token_is_requested_with_the_bearer_and_the_audience(
    actions_service: tuple[ActionsTokenService, str],
) -> None:
    service, url = actions_service
    env = {
        "ACTIONS_ID_TOKEN_REQUEST_URL": url,
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "rt-1",
    }

    token = github_actions_token("devdep-github-actions", env=env)

    path, authorization = service.requests[0]
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
    assert token == "id.token.value"
    assert authorization == "bearer rt-1"
    assert query == {"api-version": ["2.0"], "audience": ["devdep-github-actions"]}


@pytest.mark.parametrize(
    ("status", "body"), [(500, {"message": "boom"}), (200, {}), (200, {"value": ""})]
)
def test_a_failing_github_token_service_is_a_request_failure(
    actions_service: tuple[ActionsTokenService, str], status: int, body: dict[str, Any]
) -> None:
    service, url = actions_service
    service.status, service.body = status, body
    env = {"ACTIONS_ID_TOKEN_REQUEST_URL": url, "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "rt"}

    with pytest.raises(TokenRequestFailed) as caught:
        github_actions_token("aud", env=env)

    assert exit_code_for(caught.value) is ExitCode.ERR_OIDC_TIMEOUT


def test_github_token_outside_actions_is_a_usage_error() -> None:
    with pytest.raises(ProviderNotConfigured) as caught:
        github_actions_token("aud", env={"ACTIONS_ID_TOKEN_REQUEST_URL": "http://x"})

    assert exit_code_for(caught.value) is ExitCode.ERR_USAGE
    assert "id-token: write" in (caught.value.hint or "")


def test_an_unreachable_github_token_service_is_a_request_failure() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    env = {
        "ACTIONS_ID_TOKEN_REQUEST_URL": "http://127.0.0.1:9/token?x=1",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "rt",
    }
    with (
        pytest.raises(TokenRequestFailed),
        httpx.Client(transport=httpx.MockTransport(refuse)) as http,
    ):
        github_actions_token("aud", env=env, http=http)


# --- GitLab ------------------------------------------------------------------


def test_gitlab_token_comes_from_its_variable() -> None:
    assert gitlab_ci_token({"DEVDEP_JWT": " a.b.c\n"}) == "a.b.c"
    assert gitlab_ci_token({"OTHER": "x.y.z"}, variable="OTHER") == "x.y.z"
    with pytest.raises(ProviderNotConfigured):
        gitlab_ci_token({})


# --- device authorization grant ----------------------------------------------

ISSUER = "https://idp.acme.corp"


@dataclass
class DeviceFlowServer:
    """An issuer that answers the token endpoint from a script of replies."""

    replies: list[dict[str, Any]]
    grant: dict[str, Any] = field(
        default_factory=lambda: {
            "device_code": "dev-code-1",
            "user_code": "WDJB-MJHT",
            "verification_uri": f"{ISSUER}/device",
            "expires_in": 600,
            "interval": 5,
        }
    )
    with_device_endpoint: bool = True
    forms: list[dict[str, list[str]]] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        if url == f"{ISSUER}/.well-known/openid-configuration":
            document = {
                "issuer": ISSUER,
                "jwks_uri": f"{ISSUER}/keys",
                "token_endpoint": f"{ISSUER}/token",
            }
            if self.with_device_endpoint:
                document["device_authorization_endpoint"] = f"{ISSUER}/device/code"
            return httpx.Response(200, json=document)

        form = urllib.parse.parse_qs(request.content.decode())
        self.forms.append(form)
        if url == f"{ISSUER}/device/code":
            return httpx.Response(200, json=self.grant)
        if url == f"{ISSUER}/token":
            reply = self.replies.pop(0)
            return httpx.Response(400 if "error" in reply else 200, json=reply)
        return httpx.Response(404)


def run_device_flow(
    server: DeviceFlowServer,
) -> tuple[str, list[float], list[tuple[str, str]]]:
    slept: list[float] = []
    prompts: list[tuple[str, str]] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    with httpx.Client(transport=httpx.MockTransport(server.handle)) as http:
        token = device_authorization(
            ISSUER,
            "devdep-cli",
            http=http,
            on_prompt=lambda uri, code: prompts.append((uri, code)),
            sleep=sleep,
            monotonic=lambda: now[0],
        )
    return token, slept, prompts


def test_device_flow_prompts_polls_slows_down_and_returns_the_id_token() -> None:
    server = DeviceFlowServer(
        replies=[
            {"error": "authorization_pending"},
            {"error": "slow_down"},
            {"error": "authorization_pending"},
            {"access_token": "at", "id_token": "the.id.token", "token_type": "Bearer"},
        ]
    )

    token, slept, prompts = run_device_flow(server)

    assert token == "the.id.token"
    assert prompts == [(f"{ISSUER}/device", "WDJB-MJHT")]
    assert slept == [5, 5, 10, 10]
    assert server.forms[0] == {"client_id": ["devdep-cli"], "scope": ["openid email"]}
    assert server.forms[1] == {
        "grant_type": ["urn:ietf:params:oauth:grant-type:device_code"],
        "device_code": ["dev-code-1"],
        "client_id": ["devdep-cli"],
    }


def test_device_flow_prefers_the_complete_verification_uri() -> None:
    server = DeviceFlowServer(replies=[{"id_token": "t"}])
    server.grant["verification_uri_complete"] = f"{ISSUER}/device?user_code=WDJB-MJHT"

    _, _, prompts = run_device_flow(server)

    assert prompts == [(f"{ISSUER}/device?user_code=WDJB-MJHT", "WDJB-MJHT")]


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ({"error": "access_denied"}, "denied"),
        ({"error": "expired_token"}, "expired"),
        ({"error": "invalid_grant"}, "invalid_grant"),
        ({"access_token": "at"}, "no id_token"),
    ],
)
def test_device_flow_failures_are_request_failures(
    reply: dict[str, Any], message: str
) -> None:
    with pytest.raises(TokenRequestFailed, match=message):
        run_device_flow(DeviceFlowServer(replies=[reply]))


def test_device_flow_gives_up_when_the_code_expires() -> None:
    server = DeviceFlowServer(replies=[{"error": "authorization_pending"}] * 10)
    server.grant["expires_in"] = 12

    with pytest.raises(TokenRequestFailed, match="expired"):
        run_device_flow(server)
    assert len(server.replies) == 8, "polled twice in 12 s at a 5 s interval"


def test_an_issuer_without_the_device_grant_is_refused() -> None:
    with pytest.raises(TokenRequestFailed, match="does not offer"):
        run_device_flow(DeviceFlowServer(replies=[], with_device_endpoint=False))
