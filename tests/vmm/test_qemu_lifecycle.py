"""QemuVm's state guards and launch failures, with stand-in binaries: no VM."""

from __future__ import annotations

from pathlib import Path

import pytest

from devdep.images.boot import BootSpec, Disk
from devdep.vmm.accel import Acceleration
from devdep.vmm.backend import VmLaunchFailed, VmState, VmStateError
from devdep.vmm.qemu import QemuVm, VmResources


def make_vm(tmp_path: Path, binary: str) -> QemuVm:
    spec = BootSpec(
        kernel=tmp_path / "vmlinux",
        initramfs=tmp_path / "initramfs",
        command_line="quiet",
        disks=(Disk(tmp_path / "rootfs.ext4", read_only=True),),
        agent_port_name="org.devdep.agent.0",
        digests={},
    )
    return QemuVm(
        spec,
        run_dir=tmp_path,
        resources=VmResources(1, 128),
        acceleration=Acceleration.TCG,
        binary=binary,
    )


def test_methods_name_the_state_they_need(tmp_path: Path) -> None:
    vm = make_vm(tmp_path, "/bin/false")
    assert vm.state is VmState.CREATED
    with pytest.raises(VmStateError, match=r"wait_ready\(\) needs the VM up"):
        vm.wait_ready(1)
    with pytest.raises(VmStateError, match=r"agent\(\) needs the VM ready, but it is"):
        _ = vm.agent
    with pytest.raises(VmStateError, match="created"):
        vm.wait()


def test_kill_and_shutdown_are_safe_before_launch(tmp_path: Path) -> None:
    vm = make_vm(tmp_path, "/bin/false")
    vm.kill()
    vm.shutdown(1)
    assert vm.state is VmState.STOPPED
    with pytest.raises(VmStateError, match="needs the VM created"):
        vm.launch()


def test_a_vmm_that_exits_at_once_reports_command_code_and_output(
    tmp_path: Path,
) -> None:
    script = tmp_path / "fake-qemu"
    script.write_text("#!/bin/sh\necho 'qemu: could not load kernel' >&2\nexit 1\n")
    script.chmod(0o755)
    vm = make_vm(tmp_path, str(script))
    with pytest.raises(VmLaunchFailed) as caught:
        vm.launch()
    error = caught.value
    assert error.exit_code == 1
    assert error.command[0] == str(script)
    assert "qemu: could not load kernel" in error.output_tail
    assert any(line.startswith("command: ") for line in error.details)
    assert vm.state is VmState.STOPPED


def test_a_missing_binary_is_a_launch_failure(tmp_path: Path) -> None:
    vm = make_vm(tmp_path, str(tmp_path / "no-such-qemu"))
    with pytest.raises(VmLaunchFailed, match="cannot start"):
        vm.launch()
