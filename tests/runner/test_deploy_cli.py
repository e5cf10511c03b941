"""`deploy`'s checks that come before any VM: no VM is booted here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devdep.cli.deploy_command import JsonObserver, one_line
from devdep.cli.main import run
from devdep.errors import ExitCode
from tests.runner.test_deploy_vm import write_pipeline


@pytest.fixture
def pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEVDEP_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("DEVDEP_IMAGE_STORE", str(tmp_path / "empty-store"))
    return write_pipeline(tmp_path, ["true"])


def test_without_local_fleet_mode_is_not_available(
    pipeline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["deploy", "--env=dev"]) == ExitCode.ERR_USAGE
    assert "fleet mode" in capsys.readouterr().err


def test_the_environment_must_match_the_pipeline(
    pipeline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["deploy", "--local", "--env=production"]) == ExitCode.ERR_USAGE
    assert "does not match the pipeline's environment 'dev'" in capsys.readouterr().err


def test_a_missing_image_is_a_usage_error_before_any_vm(
    pipeline: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(["deploy", "--local", "--env=dev", "--output=json"]) == 2
    document = json.loads(capsys.readouterr().out)
    assert "debian-bookworm-minimal" in document["error"]["message"]
    assert not (tmp_path / "state" / "runs").exists()


def test_a_bad_timeout_is_a_usage_error(
    pipeline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["deploy", "--local", "--env=dev", "--timeout=10"]) == 2
    assert "--timeout" in capsys.readouterr().err


def test_a_multi_line_step_is_shown_by_its_first_line() -> None:
    assert one_line("make all") == "make all"
    assert one_line("if true; then\n  echo x\nfi\n") == "if true; then …"


def test_json_mode_captures_each_steps_output_in_order() -> None:
    observer = JsonObserver()
    observer.step_started("build", 1, 2, "echo a")
    observer.output("build", 1, "stdout", b"a\n")
    observer.output("build", 1, "stderr", b"oops\n")
    observer.step_finished("build", 1, 0)
    observer.step_started("build", 2, 2, "false")
    observer.step_finished("build", 2, 1)
    assert observer.captured() == [
        {
            "runtime": "build",
            "step": 1,
            "command": "echo a",
            "exit_status": 0,
            "output": "a\noops\n",
        },
        {
            "runtime": "build",
            "step": 2,
            "command": "false",
            "exit_status": 1,
            "output": "",
        },
    ]
