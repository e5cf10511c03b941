"""The runner's side of the egress sandbox, without root: which runs count as
alive, and what the VMM and the guest kernel are told. The real namespaces,
VMs and rules are in test_network_vm.py."""

from __future__ import annotations

import fcntl
import ipaddress
import os
from pathlib import Path
from typing import Any, cast

from devdep.config.schema import Runtime
from devdep.images.boot import BootSpec
from devdep.netsandbox import GuestNetwork, NetworkSandbox
from devdep.runner.network import RunLease, RuntimeNetwork, _lease_is_held
from devdep.vmm.qemu import VmNetwork


def test_a_lease_is_held_while_its_run_lives(tmp_path: Path) -> None:
    lease = RunLease.take("r-0123456789", tmp_path)
    path = tmp_path / "r-0123456789.lock"

    assert _lease_is_held(path)
    lease.release()
    assert not path.exists()
    assert not _lease_is_held(path)


def test_the_lock_of_a_dead_run_is_free_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "r-dead000000.lock"
    # What a SIGKILLed run leaves: the file, with no process holding its lock.
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    os.close(descriptor)

    assert not _lease_is_held(path)
    assert not path.exists()


class StubSandbox:
    """The parts of a NetworkSandbox that the VM's launch reads."""

    def __init__(self, guest: GuestNetwork | None) -> None:
        self.guest = guest
        self.tap = None if guest is None else "dd-tap0"
        self.netns = "devdep-r-0123456789"

    def kernel_ip_argument(self) -> str | None:
        return None if self.guest is None else self.guest.kernel_ip_argument()

    def command_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns]


def network(sandbox: dict[str, Any], stub: StubSandbox) -> RuntimeNetwork:
    runtime = Runtime.model_validate(
        {"name": "build", "run_command": ["true"], "sandbox": sandbox}
    )
    lease = RunLease(Path("/nonexistent"), -1)
    return RuntimeNetwork(runtime, cast(NetworkSandbox, stub), lease)


SPEC = BootSpec(
    kernel=Path("vmlinux"),
    initramfs=Path("initramfs.cpio"),
    command_line="console=ttyS0 rdinit=/init",
    disks=(),
    agent_port_name="org.devdep.agent.0",
    digests={},
)


def test_an_allowlist_vm_gets_a_nic_on_the_tap_and_its_address() -> None:
    guest = GuestNetwork(
        mac="02:dd:00:00:00:06",
        address=ipaddress.IPv4Interface("10.213.0.6/30"),
        gateway=ipaddress.IPv4Address("10.213.0.5"),
        dns_server=ipaddress.IPv4Address("10.213.0.5"),
    )
    runtime_network = network(
        {"network_sandbox": "allowlist", "allow_dns_resolution": True},
        StubSandbox(guest),
    )

    assert runtime_network.boot_spec(SPEC).command_line == (
        "console=ttyS0 rdinit=/init ipv6.disable=1 "
        "ip=10.213.0.6::10.213.0.5:255.255.255.252::eth0:off:10.213.0.5"
    )
    assert runtime_network.vm_network() == VmNetwork(
        ("ip", "netns", "exec", "devdep-r-0123456789"),
        (
            "-netdev",
            "tap,id=net0,ifname=dd-tap0,script=no,downscript=no",
            "-device",
            "virtio-net-device,netdev=net0,mac=02:dd:00:00:00:06",
        ),
    )


def test_an_isolated_vm_gets_no_nic_and_no_address() -> None:
    runtime_network = network({"network_sandbox": "isolated"}, StubSandbox(None))

    assert runtime_network.boot_spec(SPEC).command_line == (
        "console=ttyS0 rdinit=/init ipv6.disable=1"
    )
    vm_network = runtime_network.vm_network()
    assert vm_network.arguments == ()
    assert vm_network.command_prefix[:3] == ("ip", "netns", "exec")
