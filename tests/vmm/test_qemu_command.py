"""The QEMU command line built from a BootSpec, without starting QEMU."""

from __future__ import annotations

from pathlib import Path

import pytest

from devdep.images.boot import BootSpec, Disk
from devdep.vmm.accel import Acceleration
from devdep.vmm.qemu import (
    AGENT_SOCKET,
    QMP_SOCKET,
    SANDBOX,
    VmResources,
    guest_command_line,
    qemu_command,
)


def spec(read_only_rootfs: bool = True, rootfs: str = "/store/rootfs.ext4") -> BootSpec:
    return BootSpec(
        kernel=Path("/store/vmlinux"),
        initramfs=Path("/store/initramfs.cpio"),
        command_line="console=ttyS0 quiet",
        disks=(
            Disk(Path(rootfs), read_only=read_only_rootfs),
            Disk(Path("/store/agent.ext4"), read_only=True),
        ),
        agent_port_name="org.devdep.agent.0",
        digests={},
    )


def command(
    boot: BootSpec | None = None,
    acceleration: Acceleration = Acceleration.TCG,
    sandbox: bool = True,
) -> list[str]:
    return qemu_command(
        boot or spec(),
        run_dir=Path("/run/r-1"),
        resources=VmResources(vcpus=2, memory_mb=768),
        acceleration=acceleration,
        binary="qemu-system-x86_64",
        sandbox=sandbox,
    )


def value_after(arguments: list[str], flag: str) -> list[str]:
    return [arguments[i + 1] for i, a in enumerate(arguments) if a == flag]


def test_the_machine_is_a_bare_microvm() -> None:
    arguments = command()
    assert value_after(arguments, "-M")[0].startswith("microvm")
    for flag in ("-nodefaults", "-no-user-config", "-no-reboot", "-nographic"):
        assert flag in arguments
    assert value_after(arguments, "-smp") == ["2"]
    assert value_after(arguments, "-m") == ["768M"]


def test_tcg_unless_kvm_is_asked_for() -> None:
    assert value_after(command(), "-accel") == ["tcg"]
    assert "-cpu" not in command()
    kvm = command(acceleration=Acceleration.KVM)
    assert value_after(kvm, "-accel") == ["kvm"]
    assert value_after(kvm, "-cpu") == ["host"]


def test_no_accelerator_is_refused() -> None:
    with pytest.raises(ValueError, match="accelerator"):
        command(acceleration=Acceleration.NONE)


def test_the_seccomp_sandbox_when_supported() -> None:
    assert value_after(command(), "-sandbox") == [SANDBOX]
    assert "elevateprivileges=deny" in SANDBOX and "spawn=deny" in SANDBOX
    assert "-sandbox" not in command(sandbox=False)


def test_the_kernel_initramfs_and_command_line() -> None:
    arguments = command()
    assert value_after(arguments, "-kernel") == ["/store/vmlinux"]
    assert value_after(arguments, "-initrd") == ["/store/initramfs.cpio"]
    (append,) = value_after(arguments, "-append")
    assert append.startswith("console=ttyS0 quiet")


def test_tcg_tells_the_guest_its_tsc_frequency() -> None:
    assert "tsc_early_khz=" in guest_command_line("quiet", Acceleration.TCG)
    assert guest_command_line("quiet", Acceleration.KVM) == "quiet"
    given = "quiet tsc_early_khz=1000"
    assert guest_command_line(given, Acceleration.TCG) == given


def test_read_only_disk_is_readonly_and_writable_one_is_a_snapshot() -> None:
    drives = value_after(command(spec(read_only_rootfs=False)), "-drive")
    assert drives[0].endswith("snapshot=on") and "readonly" not in drives[0]
    assert drives[1].endswith("readonly=on")
    drives = value_after(command(spec(read_only_rootfs=True)), "-drive")
    assert all(drive.endswith("readonly=on") for drive in drives)
    assert all("format=raw" in drive for drive in drives)


def test_disks_are_attached_in_order() -> None:
    arguments = command()
    assert value_after(arguments, "-device")[-2:] == [
        "virtio-blk-device,drive=disk0",
        "virtio-blk-device,drive=disk1",
    ]
    drives = value_after(arguments, "-drive")
    assert "file=/store/rootfs.ext4" in drives[0]
    assert "file=/store/agent.ext4" in drives[1]


def test_commas_in_a_disk_path_are_escaped() -> None:
    drives = value_after(command(spec(rootfs="/store/a,b.ext4")), "-drive")
    assert "file=/store/a,,b.ext4," in drives[0]


def test_agent_port_and_sockets_live_in_the_run_directory() -> None:
    arguments = command()
    assert value_after(arguments, "-qmp") == [
        f"unix:/run/r-1/{QMP_SOCKET},server=on,wait=off"
    ]
    chardevs = value_after(arguments, "-chardev")
    assert f"socket,id=agent,path=/run/r-1/{AGENT_SOCKET},server=on,wait=off" in (
        chardevs
    )
    assert "virtserialport,chardev=agent,name=org.devdep.agent.0" in value_after(
        arguments, "-device"
    )
    assert value_after(arguments, "-serial") == ["chardev:console"]
