"""`devdep-cli auth`, `status` and `gateway serve`: their exit codes and
messages when something is missing or wrong. The successful paths run against
a real gateway and OpenBao in tests/gateway/test_integration.py."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from devdep.cli.auth_commands import countdown
from devdep.cli.main import run
from devdep.errors import ExitCode
from devdep.gateway.session_cache import CachedSession, save_session


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for variable in ("DEVDEP_GATEWAY", "DEVDEP_JWT", "ACTIONS_ID_TOKEN_REQUEST_URL"):
        monkeypatch.delenv(variable, raising=False)
    return tmp_path / "cache" / "devdep" / "session.json"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = run(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(900, "15:00"), (899.2, "15:00"), (898.9, "14:59"), (61, "01:01"), (0, "00:00")],
)
def test_the_compliance_window_counts_down_in_minutes_and_seconds(
    seconds: float, shown: str
) -> None:
    assert countdown(seconds) == shown


def test_auth_against_an_unreachable_gateway_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = closed_port_url()

    code, out, err = cli(capsys, "auth", "--token=a.b.c", f"--gateway={url}")

    assert code == ExitCode.ERR_USAGE
    assert out == ""
    assert f"error: cannot reach the gateway at {url}" in err
    assert "hint: check --gateway" in err


def test_auth_failures_are_one_json_document(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = cli(
        capsys, "auth", "--token=a.b.c", f"--gateway={closed_port_url()}", "-o", "json"
    )

    document = json.loads(out)
    assert code == 2
    assert document["ok"] is False
    assert document["error"]["exit_code"] == 2


def test_gitlab_without_a_token_says_which_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = cli(
        capsys, "auth", "--provider=gitlab-jwt", f"--gateway={closed_port_url()}"
    )

    assert code == ExitCode.ERR_USAGE
    assert "DEVDEP_JWT" in err


def test_github_outside_actions_says_what_is_missing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = cli(
        capsys, "auth", "--provider=github-oidc", f"--gateway={closed_port_url()}"
    )

    assert code == ExitCode.ERR_USAGE
    assert "ACTIONS_ID_TOKEN_REQUEST_URL" in err


def test_an_unknown_provider_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = cli(capsys, "auth", "--provider=saml")

    assert code == ExitCode.ERR_USAGE
    assert "saml" in err


def test_status_without_a_session_asks_to_authenticate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = cli(capsys, "status", "--ticket=DEP-1")

    assert code == ExitCode.ERR_OIDC_TIMEOUT
    assert "no session is cached" in err
    assert "devdep-cli auth" in err


def test_status_keeps_the_cache_when_the_gateway_is_unreachable(
    capsys: pytest.CaptureFixture[str], private_cache: Path
) -> None:
    save_session(
        CachedSession(
            closed_port_url(), "DEP-4", "c" * 43, "alice", "corp", "2026-12-03T13:15:00"
        ),
        private_cache,
    )

    code, _, err = cli(capsys, "status")

    assert code == ExitCode.ERR_USAGE
    assert "cannot reach the gateway" in err
    assert private_cache.exists()


def test_serve_reports_a_bad_configuration_at_its_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "listen: 0.0.0.0:8443\n"
        "identity:\n"
        "  allowed_domains: [acme.corp]\n"
        "  issuers: [{name: corp, issuer: 'https://idp.acme.corp', audience: cli}]\n"
    )

    code, _, err = cli(capsys, "gateway", "serve", "--config", str(config))

    assert code == ExitCode.ERR_USAGE
    assert f"{config}:1:9: listen: refusing to listen on 0.0.0.0" in err


def test_serve_reports_an_address_in_use(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "gateway.yaml"
        config.write_text(
            f"listen: 127.0.0.1:{port}\n"
            f"store: sqlite:///{tmp_path / 'gateway.db'}\n"
            "identity:\n"
            "  allowed_domains: [acme.corp]\n"
            "  issuers: [{name: corp, issuer: 'https://idp.acme.corp', audience: x}]\n"
        )

        code, _, err = cli(capsys, "gateway", "serve", "--config", str(config))

    assert code == ExitCode.ERR_USAGE
    assert f"cannot listen on 127.0.0.1:{port}" in err
