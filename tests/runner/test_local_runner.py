"""The runner's lifecycle with a stand-in VM and agent at the VMM seam.

tests/runner/test_deploy_vm.py runs the same paths with real VMs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import pytest

from devdep.config.loader import LoadedConfig, parse_config
from devdep.config.schema import Runtime
from devdep.errors import JobFailed, UsageError, VmBootFailed
from devdep.guest.protocol import AgentHello
from devdep.images.boot import BootSpec, Disk
from devdep.images.errors import ImageNotFound
from devdep.runner.local import LocalRunner, RunOptions
from devdep.telemetry.digests import sha384_file
from devdep.vmm.accel import Acceleration
from devdep.vmm.backend import VmBackend, VmState
from devdep.vmm.qemu import VmNetwork

HELLO = AgentHello(
    protocol_version="1.0",
    agent_version="test",
    kernel_release="6.1.0-test",
    boot_id="00000000-0000-0000-0000-000000000000",
)


def config(
    steps: list[str], environment: str = "dev", timeout: str = "10m"
) -> LoadedConfig:
    lines = "\n".join(f"        - {json.dumps(step)}" for step in steps)
    return parse_config(
        f"""
version: "4.2"
metadata: {{namespace: test, owner: me, environment: {environment}}}
pipeline:
  runtimes:
    - name: build
      timeout: {timeout}
      run_command:
{lines}
"""
    )


class FakeAgent:
    def __init__(self, statuses: dict[str, int], vm: FakeVm) -> None:
        self.statuses = statuses
        self.vm = vm
        self.ran: list[str] = []

    def put_workspace(self, archive: BinaryIO) -> None:
        self.vm.workspace_bytes = len(archive.read())

    def put_secret(self, name: str, value: bytes) -> None:
        raise AssertionError("no secrets expected")

    def run_step(
        self, command: str, env: dict[str, str], on_output: Callable[[str, bytes], None]
    ) -> int:
        self.ran.append(command)
        if command == "hang":
            self.vm.killed.wait(10)
            raise ConnectionResetError("the VM went away")
        if command == "interrupt":
            raise KeyboardInterrupt
        on_output("stdout", f"ran {command}\n".encode())
        return self.statuses.get(command, 0)

    def get_artifacts(self, paths: list[str], destination: BinaryIO) -> list[str]:
        return paths

    def poweroff(self) -> None:
        pass


class FakeVm(VmBackend):
    instances: ClassVar[list[FakeVm]] = []

    def __init__(self, run_dir: Path, statuses: dict[str, int]) -> None:
        self._state = VmState.CREATED
        self.run_dir = run_dir
        self.killed = threading.Event()
        self.fake_agent = FakeAgent(statuses, self)
        self.workspace_bytes = 0
        FakeVm.instances.append(self)

    @property
    def state(self) -> VmState:
        return self._state

    def launch(self) -> None:
        assert self.run_dir.is_dir()
        self._state = VmState.UP

    def wait_ready(self, timeout: float) -> AgentHello:
        self._state = VmState.READY
        return HELLO

    @property
    def agent(self) -> Any:
        return self.fake_agent

    def wait(self, timeout: float | None = None) -> int | None:
        return 0

    def shutdown(self, timeout: float) -> None:
        self._state = VmState.STOPPED

    def kill(self) -> None:
        self.killed.set()
        self._state = VmState.STOPPED

    def console_tail(self, lines: int = 40) -> list[str]:
        return ["console line"]


class Images:
    def __init__(self, tmp_path: Path, *, missing: bool = False, tamper: bool = False):
        self.missing = missing
        files = {}
        for name in ("kernel", "initramfs", "rootfs", "agent"):
            files[name] = tmp_path / "store" / name
            files[name].parent.mkdir(exist_ok=True)
            files[name].write_bytes(name.encode())
        digests = {name: sha384_file(path) for name, path in files.items()}
        if tamper:
            files["rootfs"].write_bytes(b"changed")
        self.spec = BootSpec(
            kernel=files["kernel"],
            initramfs=files["initramfs"],
            command_line="quiet",
            disks=(Disk(files["rootfs"], True), Disk(files["agent"], True)),
            agent_port_name="org.devdep.agent.0",
            digests=digests,
        )

    def boot_spec(self, base_os: str, *, read_only_rootfs: bool) -> BootSpec:
        if self.missing:
            raise ImageNotFound(base_os, [])
        return self.spec


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def phase(self, description: str) -> None:
        self.events.append(("phase", description))

    def ready(self, runtime: str, hello: AgentHello, boot_seconds: float) -> None:
        self.events.append(("ready", runtime))

    def step_started(self, runtime: str, index: int, count: int, command: str) -> None:
        self.events.append(("step", index, command))

    def output(self, runtime: str, index: int, stream: str, chunk: bytes) -> None:
        self.events.append(("output", index, chunk))

    def step_finished(self, runtime: str, index: int, status: int) -> None:
        self.events.append(("status", index, status))


@pytest.fixture
def run(tmp_path: Path) -> Callable[..., tuple[LocalRunner, Recorder]]:
    FakeVm.instances.clear()
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "file.txt").write_text("hello")

    def make(
        loaded: LoadedConfig,
        *,
        statuses: dict[str, int] | None = None,
        images: Images | None = None,
        environment: str = "dev",
        timeout: timedelta | None = None,
    ) -> tuple[LocalRunner, Recorder]:
        recorder = Recorder()

        def factory(
            spec: BootSpec,
            run_dir: Path,
            runtime: Runtime,
            accel: Acceleration,
            network: VmNetwork,
        ) -> VmBackend:
            return FakeVm(run_dir, statuses or {})

        runner = LocalRunner(
            loaded,
            images or Images(tmp_path),
            recorder,
            RunOptions(
                environment=environment,
                workspace=workspace,
                artifacts_root=tmp_path / "artifacts",
                timeout=timeout,
                state_dir=tmp_path / "state",
            ),
            vm_factory=factory,
        )
        return runner, recorder

    return make


def report(tmp_path: Path, runner: LocalRunner) -> dict[str, Any]:
    path = tmp_path / "state" / "reports" / f"{runner.run_id}.json"
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def test_a_passing_run_tears_down_and_writes_its_summary(
    tmp_path: Path, run: Callable[..., tuple[LocalRunner, Recorder]]
) -> None:
    runner, recorder = run(config(["one", "two"]))
    summary = runner.run()
    assert summary.outcome == "succeeded"
    assert [e for e in recorder.events if e[0] == "status"] == [
        ("status", 1, 0),
        ("status", 2, 0),
    ]
    (vm,) = FakeVm.instances
    assert vm.state is VmState.STOPPED and vm.workspace_bytes > 0
    assert not (tmp_path / "state" / "runs" / runner.run_id).exists()
    document = report(tmp_path, runner)
    assert set(document["runtimes"][0]["hooks"]) == {
        "pre_bootstrap",
        "run_command",
        "post_teardown",
    }
    assert set(document["runtimes"][0]["digests"]) == {
        "kernel",
        "initramfs",
        "rootfs",
        "agent",
    }
    assert len(document["config_sha384"]) == 96 and len(document["log_sha384"]) == 96
    log = Path(document["log_path"]).read_text()
    assert "ran one" in log and "post_teardown took" in log


def test_a_failing_step_stops_the_pipeline(
    tmp_path: Path, run: Callable[..., tuple[LocalRunner, Recorder]]
) -> None:
    runner, _ = run(config(["one", "fails", "never"]), statuses={"fails": 3})
    with pytest.raises(JobFailed, match=r"step 2 .* exit status 3") as caught:
        runner.run()
    assert "fails" in caught.value.message
    (vm,) = FakeVm.instances
    assert vm.fake_agent.ran == ["one", "fails"]
    assert vm.state is VmState.STOPPED
    document = report(tmp_path, runner)
    assert document["outcome"] == "failed"
    assert [s["exit_status"] for s in document["steps"]] == [0, 3]


def test_the_environment_must_match(
    run: Callable[..., tuple[LocalRunner, Recorder]],
) -> None:
    runner, _ = run(config(["one"]), environment="production")
    with pytest.raises(UsageError, match="does not match"):
        runner.run()
    assert FakeVm.instances == []


def test_a_missing_image_stops_before_any_vm(
    tmp_path: Path, run: Callable[..., tuple[LocalRunner, Recorder]]
) -> None:
    runner, _ = run(config(["one"]), images=Images(tmp_path, missing=True))
    with pytest.raises(UsageError, match="not in the image store"):
        runner.run()
    assert FakeVm.instances == []


def test_an_image_that_changed_is_not_booted(
    tmp_path: Path, run: Callable[..., tuple[LocalRunner, Recorder]]
) -> None:
    runner, _ = run(config(["one"]), images=Images(tmp_path, tamper=True))
    with pytest.raises(VmBootFailed, match=r"rootfs .* does not match"):
        runner.run()
    assert FakeVm.instances == []
    assert not (tmp_path / "state" / "runs" / runner.run_id).exists()


def test_the_deadline_kills_the_vm(
    tmp_path: Path, run: Callable[..., tuple[LocalRunner, Recorder]]
) -> None:
    runner, _ = run(config(["hang", "never"]), timeout=timedelta(milliseconds=300))
    with pytest.raises(JobFailed, match="timed out"):
        runner.run()
    (vm,) = FakeVm.instances
    assert vm.killed.is_set()
    assert vm.fake_agent.ran == ["hang"]
    assert report(tmp_path, runner)["outcome"] == "timed-out"


def test_an_interrupt_still_tears_down(
    tmp_path: Path, run: Callable[..., tuple[LocalRunner, Recorder]]
) -> None:
    runner, _ = run(config(["interrupt"]))
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    (vm,) = FakeVm.instances
    assert vm.state is VmState.STOPPED
    assert not (tmp_path / "state" / "runs" / runner.run_id).exists()
    assert report(tmp_path, runner)["outcome"] == "interrupted"


def test_an_oversized_workspace_stops_before_any_vm(
    tmp_path: Path, run: Callable[..., tuple[LocalRunner, Recorder]]
) -> None:
    runner, _ = run(config(["one"]))
    runner.options.workspace_limit = 3
    with pytest.raises(UsageError, match="the limit"):
        runner.run()
    assert FakeVm.instances == []
