"""The devdep-cli contract: messages, JSON output and exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from devdep.cli.main import COMMANDS, app, run
from devdep.config.template import render_template
from devdep.errors import ExitCode
from devdep.images.boot import STORE_ENVIRONMENT_VARIABLE
from tests.images.fakestore import populate

REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def image_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store holding the default image, so that validate's image check passes
    without a real store on the machine."""
    root = tmp_path / "images"
    populate(root)
    monkeypatch.setenv(STORE_ENVIRONMENT_VARIABLE, str(root))


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = run(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_version_prints_the_exact_line_with_the_checkout_commit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = cli(capsys, "version")

    assert code == ExitCode.SUCCESS
    match = re.fullmatch(
        r"DEVELOPMENT DEPLOYER CLI v(\S+) \(protocol v4\.2\) "
        r"\[commit: ([0-9a-f]{8}|unknown)\]\n",
        out,
    )
    assert match, out
    head = subprocess.run(
        ["git", "-C", str(REPOSITORY), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    if head.returncode == 0:
        assert match.group(2) == head.stdout.strip()[:8]


def test_init_writes_a_file_that_validates(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "devdep.yaml"

    code, out, _ = cli(
        capsys,
        "init",
        "--entity=Acme Corp",
        "--domain=k8s.prod.acme.com",
        f"--out={target}",
    )

    assert code == ExitCode.SUCCESS
    assert out == f"[SUCCESS] Integration schema generated successfully: {target}\n"
    code, out, _ = cli(capsys, "validate", f"--file={target}")
    assert code == ExitCode.SUCCESS
    assert "is valid" in out


def test_init_refuses_to_overwrite_and_leaves_the_file_untouched(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "devdep.yaml"
    target.write_text("precious\n")

    code, _, err = cli(
        capsys, "init", "--entity=A", "--domain=acme.com", f"--out={target}"
    )

    assert code == ExitCode.ERR_USAGE
    assert "already exists" in err and "--force" in err
    assert target.read_text() == "precious\n"

    code, _, _ = cli(
        capsys, "init", "--entity=A", "--domain=acme.com", f"--out={target}", "--force"
    )
    assert code == ExitCode.SUCCESS
    assert "precious" not in target.read_text()


def test_validate_reports_every_error_and_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "devdep.yaml"
    text = render_template("Acme", "acme.com")
    target.write_text(
        text.replace("vm_vcpus: 1", "vm_vcpu: 1").replace("owner:", "ownr:")
    )

    code, out, err = cli(capsys, "validate", "--file", str(target))

    assert code == ExitCode.ERR_USAGE
    assert out == ""
    lines = err.splitlines()
    assert any(
        re.match(
            rf"{re.escape(str(target))}:\d+:\d+: .*vm_vcpu.*did you mean 'vm_vcpus'",
            line,
        )
        for line in lines
    )
    assert any(
        "unknown key 'ownr'" in line and "did you mean 'owner'" in line
        for line in lines
    )
    assert "Traceback" not in err


def test_validate_json_output_carries_every_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "devdep.yaml"
    target.write_text("version: '9'\n")

    code, out, _ = cli(capsys, "validate", "--file", str(target), "--output", "json")

    assert code == ExitCode.ERR_USAGE
    document = json.loads(out)
    assert document["ok"] is False
    assert document["error"]["name"] == "ERR_USAGE"
    assert document["error"]["exit_code"] == 2
    assert len(document["error"]["details"]) == 3  # version, metadata, pipeline


@pytest.mark.parametrize(
    "argv",
    [
        ["version", "--output", "json"],
        ["doctor", "--output", "json"],
        ["validate", "--file", "/nonexistent/devdep.yaml", "-o", "json"],
        ["init", "--entity=A", "--domain=not a domain", "--output=json"],
    ],
)
def test_every_command_speaks_json(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    run(argv)
    document = json.loads(capsys.readouterr().out)
    assert "ok" in document


@pytest.mark.parametrize(
    "argv",
    [
        ["no-such-command"],
        ["validate", "--bogus"],
        ["init"],
        ["version", "--output", "xml"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, _, err = cli(capsys, *argv)
    assert code == ExitCode.ERR_USAGE
    assert err.startswith("error: ")
    assert "Traceback" not in err


def test_an_unexpected_exception_is_an_internal_error_without_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> list[object]:
        raise RuntimeError("boom")

    monkeypatch.setattr("devdep.cli.info_commands.run_host_checks", broken)
    monkeypatch.delenv("DEVDEP_DEBUG", raising=False)

    code, _, err = cli(capsys, "doctor")

    assert code == ExitCode.INTERNAL_ERROR
    assert "internal error: RuntimeError: boom" in err
    assert "Traceback" not in err

    monkeypatch.setenv("DEVDEP_DEBUG", "1")
    code, _, err = cli(capsys, "doctor")
    assert code == ExitCode.INTERNAL_ERROR
    assert "Traceback" in err


def test_doctor_reports_each_capability(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "doctor", "--output", "json")

    assert code == ExitCode.SUCCESS
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert set(checks) == {"python", "qemu", "acceleration", "tun", "nftables", "bao"}
    assert checks["acceleration"]["detail"].split()[0] in {"kvm", "tcg", "none"}
    for check in checks.values():
        assert check["status"] == "ok" or check["hint"], check


def test_the_installed_console_scripts_run_without_colour_when_piped() -> None:
    for script in ("devdep-cli", "devdep"):
        completed = subprocess.run(
            [str(Path(sys.executable).parent / script), "doctor"],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "NO_COLOR": "1"},
        )
        assert completed.returncode == 0, completed.stderr
        assert "\x1b[" not in completed.stdout
        assert "acceleration" in completed.stdout


def test_no_arguments_shows_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys)
    assert code == ExitCode.SUCCESS
    assert "Usage: devdep-cli" in out
    assert "validate" in out


def test_every_listed_command_loads_under_its_own_name() -> None:
    for name in COMMANDS:
        command = app.get_command(click.Context(app), name)
        assert command is not None and command.name == name


def test_a_command_imports_only_its_own_module() -> None:
    probe = (
        "import sys; from devdep.cli.main import run; run(['version']); "
        "heavy = ('fastapi', 'sqlalchemy', 'hvac'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert completed.stdout.splitlines()[-1] == "[]"
