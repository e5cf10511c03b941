"""`devdep-cli auth` with each way of obtaining a token, against a real gateway
trusting OpenBao.

- github-oidc: the CLI asks a GitHub-Actions-shaped token service on loopback
  (the one piece that cannot be GitHub's own), which hands out tokens OpenBao
  signs; the gateway trusts OpenBao as a CI issuer bound to the entity's `sub`.
- gitlab-jwt: the same tokens, taken from $DEVDEP_JWT.
- oidc without --token: the CLI finds the corporate issuer through the
  gateway and runs the device grant; OpenBao has no device endpoint, so the
  grant itself is replaced at its seam and returns an OpenBao token.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from devdep.auth.tokens import unverified_claims
from devdep.cli.main import run
from devdep.gateway import client as gateway_client
from devdep.gateway.config import parse_gateway_config
from devdep.gateway.server import build_gateway
from tests.gateway.servers import (
    devdep_cli,
    free_loopback_port,
    gateway_in_thread,
    gateway_yaml,
)
from tests.support.oidc import OidcProvider

pytestmark = pytest.mark.integration

REQUEST_TOKEN = "actions-request-token"


@pytest.fixture
def actions_token_service(oidc_provider: OidcProvider) -> Iterator[str]:
    """A loopback stand-in for the GitHub Actions ID-token endpoint."""
    requests: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            requests.append(query)
            authorised = self.headers.get("Authorization") == f"bearer {REQUEST_TOKEN}"
            if not authorised or query.get("audience") != [oidc_provider.audience]:
                self.send_response(403)
                self.end_headers()
                return
            token = oidc_provider.issue_id_token("pipeline@acme.corp")
            body = json.dumps({"value": token}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_arguments: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/token?api-version=2.0"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def ci_gateway(oidc_provider: OidcProvider, tmp_path: Path) -> Iterator[str]:
    """A gateway trusting OpenBao as a CI issuer bound to one entity's sub."""
    subject = unverified_claims(oidc_provider.issue_id_token("pipeline@acme.corp"))[
        "sub"
    ]
    ci_issuer = {
        "name": "pipelines",
        "issuer": oidc_provider.issuer,
        "audience": oidc_provider.audience,
        "bound_claims": {"sub": subject},
    }
    settings = parse_gateway_config(
        gateway_yaml(
            oidc_provider,
            tmp_path / "gateway.db",
            free_loopback_port(),
            identity={"issuers": [ci_issuer]},
        )
    )
    with gateway_in_thread(build_gateway(settings)) as url:
        yield url


def test_github_oidc_fetches_the_job_token(
    ci_gateway: str,
    actions_token_service: str,
    oidc_provider: OidcProvider,
    tmp_path: Path,
) -> None:
    result = devdep_cli(
        "auth",
        "--provider=github-oidc",
        f"--audience={oidc_provider.audience}",
        f"--gateway={ci_gateway}",
        "--output=json",
        cache_home=tmp_path,
        extra_env={
            "ACTIONS_ID_TOKEN_REQUEST_URL": actions_token_service,
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": REQUEST_TOKEN,
        },
    )

    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert document["issuer_name"] == "pipelines"
    assert document["provider"] == "github-oidc"
    assert document["handshake"]["signature"]["result"] == "PASS"


def test_gitlab_jwt_reads_devdep_jwt(
    ci_gateway: str, oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    token = oidc_provider.issue_id_token("pipeline@acme.corp")

    result = devdep_cli(
        "auth",
        "--provider=gitlab-jwt",
        f"--gateway={ci_gateway}",
        "--output=json",
        cache_home=tmp_path,
        extra_env={"DEVDEP_JWT": token},
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["provider"] == "gitlab-jwt"


def test_another_pipeline_is_refused_by_the_bound_claims(
    ci_gateway: str, oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    token = oidc_provider.issue_id_token("another-pipeline@acme.corp")

    result = devdep_cli(
        "auth", f"--token={token}", f"--gateway={ci_gateway}", cache_home=tmp_path
    )

    assert result.returncode == 101
    assert "sub" in result.stderr


def test_oidc_without_a_token_runs_the_device_grant_against_the_gateways_issuer(
    oidc_provider: OidcProvider,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = parse_gateway_config(
        gateway_yaml(oidc_provider, tmp_path / "gateway.db", free_loopback_port())
    )
    grants: list[tuple[str, str]] = []

    def device_authorization(
        issuer: str, client_id: str, *, on_prompt: Callable[[str, str], None]
    ) -> str:
        grants.append((issuer, client_id))
        on_prompt(f"{issuer}/device", "WDJB-MJHT")
        return oidc_provider.issue_id_token("person@acme.corp")

    monkeypatch.setattr(
        gateway_client.providers, "device_authorization", device_authorization
    )
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    with gateway_in_thread(build_gateway(settings)) as url:
        code = run(["auth", "--provider=oidc", f"--gateway={url}"])

    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert grants == [(oidc_provider.issuer, oidc_provider.audience)]
    assert "enter the code: WDJB-MJHT" in captured.err
    assert "2. Client asserts identity scope: person@acme.corp" in captured.out
