"""The guest agent in a real micro-VM, over a real virtio-serial port.

One VM, driven through the protocol directly rather than through the runner.
It checks what only a virtio port shows: a host that connects after the agent
has started, a host that disconnects and connects again, and a real power-off.
"""

from __future__ import annotations

import io
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devdep.guest.client import AgentClient
from devdep.images.boot import BootSpec
from devdep.vmm.accel import Acceleration, detect_acceleration
from devdep.vmm.qemu import AGENT_SOCKET, VmResources, qemu_command
from tests.vmm.images import DEVDEP_CLI, ensure_boot_spec

pytestmark = pytest.mark.integration

BOOT_TIMEOUT = 180.0


@dataclass
class Guest:
    process: subprocess.Popen[bytes]
    agent_socket: Path
    console_log: Path

    def console(self) -> str:
        return self.console_log.read_text(errors="replace")

    def wait_for_console(self, text: str, *, after: int = 0) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while text not in self.console()[after:]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the guest never printed {text!r}:\n{self.console()}")
            time.sleep(0.1)

    def connect(self) -> tuple[AgentClient, socket.socket]:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.connect(str(self.agent_socket))
        return AgentClient(connection, io_timeout=60), connection


@pytest.fixture(scope="module")
def boot_spec() -> BootSpec:
    # Brings the agent runtime disk up to date with these sources (a no-op
    # when it is), so the VM runs the agent under test.
    subprocess.run([DEVDEP_CLI, "image", "agent"], check=True, timeout=1800)
    return ensure_boot_spec(read_only_rootfs=True)


@pytest.fixture
def guest(boot_spec: BootSpec, tmp_path: Path) -> Iterator[Guest]:
    acceleration = detect_acceleration().acceleration
    if acceleration is Acceleration.NONE:
        pytest.fail("qemu-system-x86_64 is not installed (make installs it)")
    command = qemu_command(
        boot_spec,
        run_dir=tmp_path,
        resources=VmResources(vcpus=1, memory_mb=512),
        acceleration=acceleration,
    )
    console_log = tmp_path / "console.log"
    with console_log.open("wb") as console:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=console, stderr=console
        )
    yield Guest(process, tmp_path / AGENT_SOCKET, console_log)
    process.kill()
    process.wait()


def tar_of_file(name: str, content: bytes) -> io.BytesIO:
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as archive:
        member = tarfile.TarInfo(name)
        member.size = len(content)
        archive.addfile(member, io.BytesIO(content))
    stream.seek(0)
    return stream


def run(client: AgentClient, command: str) -> tuple[int, list[tuple[str, bytes]]]:
    chunks: list[tuple[str, bytes]] = []
    status = client.run_step(
        command, {}, lambda channel, data: chunks.append((channel, data)), timeout=120
    )
    return status, chunks


def test_the_agent_serves_a_host_that_comes_late_and_comes_back(
    guest: Guest,
) -> None:
    # Connect only once the agent is up and waiting for the host.
    guest.wait_for_console("devdep-agent: waiting for the host to connect")
    first, first_connection = guest.connect()
    hello = first.wait_ready(timeout=60)
    host_boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert hello.boot_id != host_boot_id

    first.put_workspace(tar_of_file("input.txt", b"from the host\n"))
    first.put_secret("API_TOKEN", b"t0ken")
    status, chunks = run(
        first,
        "cat input.txt; sleep 0.3; echo to-stderr >&2; sleep 0.3; "
        'stat -c %a /run/devdep/secrets/API_TOKEN; printf "%s\\n" "$API_TOKEN"',
    )
    assert status == 0
    assert chunks[:2] == [("stdout", b"from the host\n"), ("stderr", b"to-stderr\n")]
    assert {channel for channel, _ in chunks[2:]} == {"stdout"}
    assert b"".join(data for _, data in chunks[2:]) == b"400\nt0ken\n"
    assert run(first, "kill -TERM $$")[0] == 143

    # Hang up, and come back once the agent has seen it.
    seen = len(guest.console())
    first_connection.close()
    guest.wait_for_console("the host disconnected", after=seen)
    second, second_connection = guest.connect()
    assert second.wait_ready(timeout=60).boot_id == hello.boot_id
    assert run(second, 'printf "%s" "$API_TOKEN"')[1] == [("stdout", b"t0ken")]

    second.poweroff()
    assert guest.process.wait(timeout=60) == 0
    second_connection.close()
