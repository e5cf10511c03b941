"""The gateway end to end, trusting a real identity provider: OpenBao's OIDC
provider issues and signs the ID tokens, `devdep-cli gateway serve` (or the
same server in a thread, where a test must watch its hooks) verifies them, and
`devdep-cli auth` and `status` run as a user would run them."""

from __future__ import annotations

import json
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from devdep.gateway.config import parse_gateway_config
from devdep.gateway.hooks import TerminationHooks
from devdep.gateway.server import build_gateway
from devdep.store.database import Store
from devdep.store.models import SessionState
from devdep.store.sessions import SessionStore
from devdep.store.tickets import parse_ticket
from tests.gateway.servers import (
    DEVDEP_CLI,
    devdep_cli,
    free_loopback_port,
    gateway_in_thread,
    gateway_yaml,
)
from tests.support.oidc import OidcProvider

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class ServedGateway:
    url: str
    store: Path
    log: Path


@pytest.fixture(scope="module")
def served_gateway(
    oidc_provider: OidcProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServedGateway]:
    """`devdep-cli gateway serve` in its own process, trusting OpenBao."""
    directory = tmp_path_factory.mktemp("gateway")
    port = free_loopback_port()
    config = directory / "gateway.yaml"
    config.write_text(gateway_yaml(oidc_provider, directory / "gateway.db", port))
    log = directory / "gateway.log"
    served = ServedGateway(f"http://127.0.0.1:{port}", directory / "gateway.db", log)

    with log.open("wb") as output:
        process = subprocess.Popen(
            [DEVDEP_CLI, "gateway", "serve", "--config", str(config)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"the gateway exited early:\n{log.read_text()}")
            try:
                if httpx.get(f"{served.url}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the gateway did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield served
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stored_session(store: Path, ticket: str) -> object:
    opened = Store(f"sqlite:///{store}", migrate=False)
    try:
        number = parse_ticket(ticket)
        assert number is not None
        return SessionStore(opened).get(number)
    finally:
        opened.close()


def test_a_corporate_user_gets_a_ticket_of_exactly_fifteen_minutes(
    served_gateway: ServedGateway, oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    token = oidc_provider.issue_id_token("devops-ops@acme.corp")

    result = devdep_cli(
        "auth",
        "--provider=oidc",
        f"--token={token}",
        f"--gateway={served_gateway.url}",
        cache_home=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "[OIDC Handshake initiated]"
    assert lines[1] == "  1. Ingress detects client IP footprint: 127.0.0.1"
    assert lines[2] == "  2. Client asserts identity scope: devops-ops@acme.corp"
    assert lines[3] == (
        "  3. IdP Gateway query: resolving metadata "
        f"{oidc_provider.discovery_url}... done"
    )
    assert lines[4] == (
        "  4. Cryptographic assertion: signature check PASS (RSA-2048, RS256)"
    )
    assert lines[5].startswith("  5. Session Token issued: #DEP-")
    assert lines[5].endswith(" active (compliance window: 15:00)")
    ticket = lines[5].split("#")[1].split()[0]

    session = stored_session(served_gateway.store, ticket)
    assert session is not None
    assert session.expires_at - session.created_at == timedelta(minutes=15)  # type: ignore[attr-defined]
    assert session.email == "devops-ops@acme.corp"  # type: ignore[attr-defined]

    cache = tmp_path / "devdep" / "session.json"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    cached = json.loads(cache.read_text())
    assert cached["ticket"] == ticket
    assert token not in cache.read_text()

    status = devdep_cli(
        "status", f"--ticket={ticket}", "--output=json", cache_home=tmp_path
    )
    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)
    assert document["ticket"] == ticket
    assert document["subject"] == session.subject  # type: ignore[attr-defined]
    assert 0 < document["remaining_seconds"] <= 900
    assert [f["address"] for f in document["footprints"]] == ["127.0.0.1"]
    assert document["footprints"][0]["requests"] == 2
    assert document["runs"] == []

    text_status = devdep_cli("status", f"--ticket={ticket}", cache_home=tmp_path)
    assert text_status.returncode == 0, text_status.stderr
    assert f"Session #{ticket} active (compliance window: 1" in text_status.stdout
    assert "runs: none yet" in text_status.stdout


def test_a_gmail_user_is_refused_with_exit_102(
    served_gateway: ServedGateway, oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    token = oidc_provider.issue_id_token("someone@gmail.com")

    result = devdep_cli(
        "auth",
        "--provider=oidc",
        f"--token={token}",
        f"--gateway={served_gateway.url}",
        cache_home=tmp_path,
    )

    assert result.returncode == 102, result.stderr
    assert "CRITICAL ERROR: INVALID_ENTITY_DOMAIN" in result.stderr
    assert not (tmp_path / "devdep" / "session.json").exists()


def test_a_replayed_token_is_refused_with_exit_101(
    served_gateway: ServedGateway, oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    token = oidc_provider.issue_id_token("replay@acme.corp")
    arguments = ("auth", f"--token={token}", f"--gateway={served_gateway.url}")

    assert devdep_cli(*arguments, cache_home=tmp_path).returncode == 0
    again = devdep_cli(*arguments, "--output=json", cache_home=tmp_path)

    assert again.returncode == 101
    error = json.loads(again.stdout)["error"]
    assert error["name"] == "ERR_OIDC_TIMEOUT"
    assert "replay" in error["message"]


def test_an_unreachable_gateway_exits_2_naming_it(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_loopback_port()}"

    result = devdep_cli(
        "auth", "--token=x.y.z", f"--gateway={url}", cache_home=tmp_path
    )

    assert result.returncode == 2
    assert f"cannot reach the gateway at {url}" in result.stderr


def test_an_expired_session_is_swept_and_the_cli_exits_101(
    oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    port = free_loopback_port()
    settings = parse_gateway_config(
        gateway_yaml(
            oidc_provider,
            tmp_path / "gateway.db",
            port,
            session_minutes=0.05,  # three seconds
            sweep_seconds=0.2,
        )
    )
    ended: list[str] = []
    hooks = TerminationHooks()
    hooks.subscribe(ended.append)

    with gateway_in_thread(build_gateway(settings, hooks=hooks)) as url:
        token = oidc_provider.issue_id_token("short@acme.corp")
        opened = devdep_cli(
            "auth",
            f"--token={token}",
            f"--gateway={url}",
            "-o",
            "json",
            cache_home=tmp_path,
        )
        assert opened.returncode == 0, opened.stderr
        document = json.loads(opened.stdout)
        ticket = document["ticket"]
        created = datetime.fromisoformat(document["created_at"])
        expires = datetime.fromisoformat(document["expires_at"])
        assert expires - created == timedelta(seconds=3)
        cache = tmp_path / "devdep" / "session.json"
        assert cache.exists()

        deadline = time.monotonic() + 15
        while ticket not in ended:
            assert time.monotonic() < deadline, "the sweeper never ended the session"
            time.sleep(0.1)
        session = stored_session(tmp_path / "gateway.db", ticket)
        assert session.state is SessionState.EXPIRED  # type: ignore[attr-defined]
        assert session.ended_at >= expires  # type: ignore[attr-defined]

        status = devdep_cli("status", f"--ticket={ticket}", cache_home=tmp_path)

    assert status.returncode == 101
    assert f"session {ticket} has expired" in status.stderr
    assert "cleared the cached session" in status.stderr
    assert "devdep-cli auth" in status.stderr
    assert not cache.exists()
    assert ended == [ticket]
