"""A real guest agent in a subprocess, on one end of a socketpair, for the tests.

The agent runs exactly as in the VM except that its port is an inherited
socket, its sysroot a temporary directory, and it neither chroots nor powers
anything off.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devdep.guest.client import AgentClient


@dataclass
class RunningAgent:
    client: AgentClient
    host_socket: socket.socket
    process: subprocess.Popen[bytes]
    sysroot: Path
    log_path: Path

    @property
    def workspace(self) -> Path:
        return self.sysroot / "workspace"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_agent(
    sysroot: Path,
    log_path: Path,
    *,
    extra_arguments: tuple[str, ...] = ("--no-chroot",),
    extra_env: dict[str, str] | None = None,
    python: str = sys.executable,
) -> RunningAgent:
    host_socket, guest_socket = socket.socketpair()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                python,
                "-m",
                "devdep.guest.agent",
                f"--fd={guest_socket.fileno()}",
                f"--sysroot={sysroot}",
                "--no-poweroff",
                *extra_arguments,
            ],
            pass_fds=[guest_socket.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env={**os.environ, **(extra_env or {})},
        )
    guest_socket.close()
    return RunningAgent(
        AgentClient(host_socket, io_timeout=20), host_socket, process, sysroot, log_path
    )


def stop_agent(agent: RunningAgent) -> None:
    agent.host_socket.close()
    try:
        agent.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        agent.process.kill()
        agent.process.wait()


AgentFactory = Callable[..., RunningAgent]


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[AgentFactory]:
    """Starts agents on fresh sysroots; stops every one at the end of the test.

    Its keyword arguments are those of `start_agent`.
    """
    started: list[RunningAgent] = []

    def factory(**options: Any) -> RunningAgent:
        index = len(started)
        sysroot = tmp_path / f"sysroot{index}"
        sysroot.mkdir()
        agent = start_agent(sysroot, tmp_path / f"agent{index}.log", **options)
        started.append(agent)
        return agent

    yield factory
    for agent in started:
        stop_agent(agent)


@pytest.fixture
def agent(agent_factory: AgentFactory) -> RunningAgent:
    """A started agent whose HELLO has been received."""
    running = agent_factory()
    running.client.wait_ready(timeout=20)
    return running
