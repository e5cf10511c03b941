"""Real micro-VMs under QEMU: the lifecycle, and boots that fail."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from devdep.errors import ExitCode, VmBootFailed, exit_code_for
from devdep.images.boot import BootSpec
from devdep.telemetry.digests import sha384_file
from devdep.vmm.backend import VmLaunchFailed, VmNotReady, VmState
from devdep.vmm.qemu import QemuVm
from tests.vmm.images import ensure_boot_spec

pytestmark = pytest.mark.integration

VmFactory = Callable[[BootSpec], QemuVm]


def test_launch_ready_and_shutdown_with_a_throw_away_rootfs(vms: VmFactory) -> None:
    # read_only_rootfs: false attaches the image with snapshot=on: the guest
    # may write to it, and the image file stays exactly as it was.
    spec = ensure_boot_spec(read_only_rootfs=False)
    rootfs = spec.disks[0].path
    assert not spec.disks[0].read_only
    digest_before, status_before = sha384_file(rootfs), rootfs.stat()

    vm = vms(spec)
    vm.launch()
    assert vm.state is VmState.UP
    assert vm.query_status() == "running"

    hello = vm.wait_ready(120)
    assert vm.state is VmState.READY
    host_boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert hello.boot_id and hello.boot_id != host_boot_id
    assert hello.kernel_release
    assert vm.boot_seconds is not None and vm.boot_seconds > 0

    output: list[bytes] = []
    status = vm.agent.run_step(
        "echo changed > /usr/devdep-overlay-probe && cat /usr/devdep-overlay-probe",
        {},
        lambda _stream, chunk: output.append(chunk),
    )
    assert (status, b"".join(output)) == (0, b"changed\n")

    pid = vm.pid
    vm.shutdown(timeout=10)
    assert vm.state is VmState.STOPPED
    assert pid is not None and not Path(f"/proc/{pid}").exists()
    assert sorted(p.name for p in vm.run_dir.iterdir()) == []
    assert sha384_file(rootfs) == digest_before
    assert rootfs.stat().st_mtime_ns == status_before.st_mtime_ns


def test_a_corrupt_kernel_fails_the_launch(
    boot_spec: BootSpec, vms: VmFactory, tmp_path: Path
) -> None:
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"\x7fELF" + b"\0" * 4096)
    vm = vms(dataclasses.replace(boot_spec, kernel=kernel))
    with pytest.raises(VmLaunchFailed) as caught:
        vm.launch()
    error = caught.value
    assert isinstance(error, VmBootFailed)
    assert exit_code_for(error) == ExitCode.ERR_VM_BOOT_FAILED
    assert error.exit_code not in (None, 0)
    assert error.output_tail, "the launch failure shows QEMU's last lines"
    assert vm.state is VmState.STOPPED


def test_a_guest_without_its_agent_port_is_not_ready(
    boot_spec: BootSpec, vms: VmFactory
) -> None:
    # The guest's init looks for a port name QEMU no longer offers, gives up
    # and powers off: the host sees the connection end before any hello.
    vm = vms(dataclasses.replace(boot_spec, agent_port_name="org.devdep.bogus.0"))
    vm.launch()
    with pytest.raises(VmNotReady) as caught:
        vm.wait_ready(120)
    assert any("org.devdep.agent.0" in line for line in caught.value.console_tail)
    assert vm.state is VmState.STOPPED


def test_a_guest_that_never_says_hello_times_out(
    boot_spec: BootSpec, vms: VmFactory
) -> None:
    # Words without '=' on the kernel command line are the init's arguments:
    # this init sleeps instead of starting the agent.
    hanging = dataclasses.replace(
        boot_spec,
        command_line=f"{boot_spec.command_line} rdinit=/bin/busybox sleep 3600",
    )
    vm = vms(hanging)
    vm.launch()
    with pytest.raises(VmNotReady, match="within 15s") as caught:
        vm.wait_ready(15)
    assert caught.value.details[0] == "guest console (last lines):"
    assert exit_code_for(caught.value) == ExitCode.ERR_VM_BOOT_FAILED
    assert vm.state is VmState.STOPPED
