"""`deploy --local` with real micro-VMs: isolation, streaming, failures,
timeouts, interrupts and artifacts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devdep.config.loader import load_config
from devdep.errors import ExitCode
from devdep.guest.protocol import AgentHello
from devdep.images.boot import ImageStore
from devdep.runner.local import LocalRunner, RunOptions
from tests.vmm.images import ensure_boot_spec, qemu_processes_under

pytestmark = pytest.mark.integration

DEVDEP_CLI = str(Path(sys.executable).parent / "devdep-cli")
HOST_BOOT_ID = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
boot_ids: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def _images() -> None:
    ensure_boot_spec()


def write_pipeline(
    directory: Path, steps: list[str], artifacts: tuple[str, ...] = ()
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    listed = "\n".join(f"        - {json.dumps(step)}" for step in steps)
    path = directory / "devdep.yaml"
    path.write_text(
        f"""version: "4.2"
metadata: {{namespace: test, owner: test-owners, environment: dev}}
pipeline:
  runtimes:
    - name: build
      run_command:
{listed}
      artifacts: {json.dumps(list(artifacts))}
"""
    )
    return path


_started: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _reap_deployments() -> Iterator[None]:
    """No `deploy` a test started outlives it, even when the test fails."""
    yield
    while _started:
        process = _started.pop()
        if process.poll() is None:
            process.kill()
        process.communicate()


def deploy(
    workspace: Path, state: Path, *arguments: str, **popen: Any
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [DEVDEP_CLI, "deploy", "--local", "--env=dev", *arguments],
        cwd=workspace,
        env={**os.environ, "DEVDEP_STATE_DIR": str(state)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )
    _started.append(process)
    return process


class Recorder:
    def __init__(self) -> None:
        self.chunks: list[tuple[float, int, str, bytes]] = []

    def phase(self, description: str) -> None:
        pass

    def ready(self, runtime: str, hello: AgentHello, boot_seconds: float) -> None:
        pass

    def step_started(self, runtime: str, index: int, count: int, command: str) -> None:
        pass

    def output(self, runtime: str, index: int, stream: str, chunk: bytes) -> None:
        self.chunks.append((time.monotonic(), index, stream, chunk))

    def step_finished(self, runtime: str, index: int, status: int) -> None:
        pass

    def text(self, index: int) -> str:
        return b"".join(c for _, i, _, c in self.chunks if i == index).decode()


def test_a_pipeline_runs_isolated_streams_and_returns_artifacts(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    write_pipeline(
        workspace,
        [
            "cat /proc/sys/kernel/random/boot_id",
            "if touch /usr/devdep-probe 2>/dev/null; then echo usr-writable;"
            " else echo usr-read-only; fi;"
            " touch /tmp/t && touch /workspace/w && echo scratch-writable",
            "for i in 1 2 3; do echo out$i; sleep 0.3; echo err$i >&2; sleep 0.7; done",
            "mkdir -p dist && cp input.txt dist/copied.txt && uname -r > dist/kernel",
        ],
        artifacts=("dist", "not-made"),
    )
    (workspace / "input.txt").write_text("from the host\n")
    (workspace / ".devdepignore").write_text("secret.env\n")
    (workspace / "secret.env").write_text("never copied\n")
    recorder = Recorder()
    runner = LocalRunner(
        load_config(workspace / "devdep.yaml"),
        ImageStore(),
        recorder,
        RunOptions(
            environment="dev",
            workspace=workspace,
            artifacts_root=tmp_path / "artifacts",
            state_dir=tmp_path / "state",
        ),
    )
    summary = runner.run()

    guest_boot_id = recorder.text(1).strip()
    assert guest_boot_id and guest_boot_id != HOST_BOOT_ID
    boot_ids.append(guest_boot_id)

    assert recorder.text(2).split() == ["usr-read-only", "scratch-writable"]

    streamed = [(t, c.decode().strip()) for t, i, _, c in recorder.chunks if i == 3]
    assert [text for _, text in streamed if text] == [
        "out1",
        "err1",
        "out2",
        "err2",
        "out3",
        "err3",
    ]
    assert streamed[-1][0] - streamed[0][0] > 1.5, "output arrived as it was made"

    artifacts = tmp_path / "artifacts" / summary.run_id / "dist"
    assert (artifacts / "copied.txt").read_text() == "from the host\n"
    assert (artifacts / "kernel").read_text().strip() == summary.runtimes[
        0
    ].kernel_release
    assert summary.runtimes[0].missing_artifacts == ["not-made"]
    assert summary.outcome == "succeeded"
    assert not (tmp_path / "state" / "runs" / summary.run_id).exists()
    assert qemu_processes_under(tmp_path) == []


def test_a_failing_step_exits_1_and_later_steps_never_run(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    write_pipeline(
        workspace,
        [
            "cat /proc/sys/kernel/random/boot_id",
            "echo failing; exit 7",
            "echo NEVER-RUN",
        ],
    )
    process = deploy(workspace, tmp_path / "state")
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == ExitCode.ERR_JOB_FAILED, stderr.decode()
    assert b"step 2 of runtime 'build' failed with exit status 7" in stderr
    assert b"NEVER-RUN\n" not in stdout.replace(b"$ echo NEVER-RUN", b"")
    assert b"==> build [3/3]" not in stdout

    guest_boot_id = stdout.decode().splitlines()[1].strip()
    assert guest_boot_id != HOST_BOOT_ID
    assert guest_boot_id not in boot_ids, "every run boots a fresh VM"

    (report,) = (tmp_path / "state" / "reports").glob("*.json")
    summary = json.loads(report.read_text())
    assert summary["outcome"] == "failed"
    assert [s["exit_status"] for s in summary["steps"]] == [0, 7]


def test_a_timeout_kills_the_vm(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    write_pipeline(workspace, ["echo started; sleep 600", "echo NEVER-RUN"])
    started = time.monotonic()
    process = deploy(workspace, tmp_path / "state", "--timeout=45s", "--output=json")
    stdout, _ = process.communicate(timeout=300)
    assert process.returncode == ExitCode.ERR_JOB_FAILED
    assert time.monotonic() - started < 120
    document = json.loads(stdout)
    assert "timed out" in document["error"]["message"]
    assert document["summary"]["outcome"] == "timed-out"
    assert document["steps"][0]["output"] == "started\n"
    assert qemu_processes_under(tmp_path) == []
    assert list((tmp_path / "state" / "runs").iterdir()) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_run_leaves_nothing_behind(tmp_path: Path, signum: int) -> None:
    workspace = tmp_path / "workspace"
    write_pipeline(workspace, ["echo started; sleep 600"])
    process = deploy(workspace, tmp_path / "state")
    assert process.stdout is not None
    deadline = time.monotonic() + 240
    line = b""
    while line != b"started\n" and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
    assert line == b"started\n", process.stderr.read() if process.stderr else b""
    assert qemu_processes_under(tmp_path), "the VM runs while the step does"

    process.send_signal(signum)
    process.communicate(timeout=60)
    assert process.returncode == 130
    assert qemu_processes_under(tmp_path) == []
    assert list((tmp_path / "state" / "runs").iterdir()) == []
    (report,) = (tmp_path / "state" / "reports").glob("*.json")
    assert json.loads(report.read_text())["outcome"] == "interrupted"
