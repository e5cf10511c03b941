"""Build the real guest kernel, initramfs, agent disk and default image, and
boot them in QEMU: /init's mounts, and the agent it starts.

The first run downloads from Debian's archive and takes minutes; later runs
find everything in the image store and only boot.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devdep.guest.client import AgentClient
from devdep.images.agentdisk import build_agent_disk
from devdep.images.boot import BootSpec, ImageStore
from devdep.images.digests import file_sha384
from devdep.images.initramfs import build_initramfs
from devdep.images.kernel import build_kernel
from devdep.images.rootfs import build_base_image
from devdep.vmm.accel import Acceleration, detect_acceleration

pytestmark = pytest.mark.integration

IMAGE = "debian-bookworm-minimal"
BOOT_TIMEOUT = 90.0  # TCG on a busy two-core host


@pytest.fixture(scope="module")
def store() -> ImageStore:
    store = ImageStore()
    build_kernel(store)
    build_initramfs(store)
    build_agent_disk(store)
    build_base_image(store)
    return store


def qemu_command(
    spec: BootSpec, socket_path: Path, extra_command_line: str
) -> list[str]:
    """The VMM's translation of a BootSpec, reduced to what these tests need."""
    report = detect_acceleration()
    if report.acceleration is Acceleration.NONE:
        pytest.fail(f"cannot boot a VM here: {report.reason}")
    command = [
        "qemu-system-x86_64",
        "-M",
        "microvm",
        "-accel",
        report.acceleration.value,
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-m",
        "512",
        "-kernel",
        str(spec.kernel),
        "-initrd",
        str(spec.initramfs),
        "-append",
        f"{spec.command_line} {extra_command_line}".strip(),
    ]
    for index, disk in enumerate(spec.disks):
        mode = "readonly=on" if disk.read_only else "snapshot=on"
        command += [
            "-drive",
            f"id=disk{index},file={disk.path},format=raw,if=none,{mode}",
            "-device",
            f"virtio-blk-device,drive=disk{index}",
        ]
    command += [
        "-device",
        "virtio-serial-device",
        "-device",
        f"virtserialport,chardev=agent,name={spec.agent_port_name}",
        "-chardev",
        f"socket,id=agent,path={socket_path},server=on,wait=off",
    ]
    return command


@contextlib.contextmanager
def launched(command: list[str]) -> Iterator[subprocess.Popen[str]]:
    vm = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    try:
        yield vm
    finally:
        if vm.poll() is None:
            vm.kill()
        vm.wait()
        if vm.stdout is not None:
            vm.stdout.close()


# What the network sandbox gives an allowlist run: address, gateway, netmask,
# device, and the DNS responder in the eighth field.
GUEST_IP = "ip=10.213.0.6::10.213.0.5:255.255.255.252::eth0:off:10.213.0.5"
# A NIC on a QEMU hub with no other port: the guest sees a device, and nothing
# it sends leaves QEMU.
DEAD_END_NIC = [
    "-netdev",
    "hubport,id=net0,hubid=0",
    "-device",
    "virtio-net-device,netdev=net0,mac=02:dd:00:00:00:06",
]


def init_self_test(
    store: ImageStore,
    tmp_path: Path,
    *,
    read_only: bool,
    extra_command_line: str = "",
    extra_arguments: tuple[str, ...] = (),
) -> str:
    spec = store.boot_spec(IMAGE, read_only_rootfs=read_only)
    command = qemu_command(
        spec, tmp_path / "agent.sock", f"devdep.init_test=1 {extra_command_line}"
    )
    command += extra_arguments
    with launched(command) as vm:
        try:
            console, _ = vm.communicate(timeout=BOOT_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail("the VM did not power off in time")
    assert "DEVDEP-INIT-TEST end" in console, console[-3000:]
    return console.split("DEVDEP-INIT-TEST begin", 1)[1]


def mounts(report: str) -> dict[str, tuple[str, str]]:
    """mount point -> (file system type, options), from /proc/mounts lines."""
    found = {}
    for line in report.splitlines():
        fields = line.split()
        if len(fields) == 6 and fields[1].startswith("/sysroot"):
            found[fields[1]] = (fields[2], fields[3])
    return found


def test_init_mounts_the_rootfs_read_only_with_writable_scratch(
    store: ImageStore, tmp_path: Path
) -> None:
    # With a NIC and ip=, as an allowlist run boots: the network modules load,
    # eth0 gets the address and route, and resolv.conf names the responder
    # although the image below it is read-only.
    report = init_self_test(
        store,
        tmp_path,
        read_only=True,
        extra_command_line=GUEST_IP,
        extra_arguments=tuple(DEAD_END_NIC),
    )
    mounted = mounts(report)

    assert mounted["/sysroot"][0] == "overlay"
    assert mounted["/sysroot"][1].startswith("ro,")
    assert mounted["/sysroot/tmp"][0] == "tmpfs"
    assert mounted["/sysroot/workspace"][0] == "tmpfs"
    assert mounted["/sysroot/run/devdep/secrets"][0] == "ramfs"
    assert "mode=700" in mounted["/sysroot/run/devdep/secrets"][1]
    assert "read-only /usr" in report
    assert "writable /tmp" in report
    assert "writable /workspace" in report
    assert "writable /run/devdep/secrets" in report
    assert "mode /run/devdep/secrets 700" in report
    assert "swap 0" in report
    assert "agent /usr/bin/python3 -I -S -m devdep.guest.agent --port=/dev/vport" in (
        report
    )
    assert "--sysroot=/sysroot" in report
    assert "python-start warm" in report
    assert "interfaces eth0 lo " in report
    assert "address eth0 10.213.0.6/30" in report
    assert "route default via 10.213.0.5 dev eth0" in report
    assert "resolv.conf nameserver 10.213.0.5" in report


def test_a_writable_rootfs_never_changes_the_image_file(
    store: ImageStore, tmp_path: Path
) -> None:
    image = store.image_manifest(IMAGE)
    assert image is not None

    report = init_self_test(store, tmp_path, read_only=False)

    assert "writable /usr" in report
    assert mounts(report)["/sysroot"][0] == "ext4"
    # No ip=: an isolated VM keeps only lo, and its network modules stay out.
    assert "interfaces lo " in report
    assert file_sha384(store.path_of(f"images/{IMAGE}", image)) == image.sha384


def test_init_starts_the_agent_and_powers_off_after_it(
    store: ImageStore, tmp_path: Path
) -> None:
    spec = store.boot_spec(IMAGE, read_only_rootfs=True)
    kernel = store.kernel_manifest()
    assert kernel is not None
    socket_path = tmp_path / "agent.sock"
    with launched(qemu_command(spec, socket_path, "")) as vm:
        deadline = time.monotonic() + 10
        while not socket_path.exists():
            assert time.monotonic() < deadline, "QEMU made no agent socket"
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.connect(str(socket_path))
            client = AgentClient(connection)
            hello = client.wait_ready(BOOT_TIMEOUT)
            assert hello.kernel_release == kernel.name
            client.poweroff()
        try:
            console, _ = vm.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("the VM did not power off after the agent was told to")
    assert "reboot: Power down" in console or vm.returncode == 0
