"""Side requests: a secret replaced while a step runs, from another thread.

Against the real agent in a subprocess, and against a scripted peer for the
orderings a real agent produces only by chance.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from devdep.guest.client import AgentClient, ClientState
from devdep.guest.protocol import (
    AgentDisconnected,
    AgentProtocolError,
    AgentRequestFailed,
    FrameReader,
    MessageType,
    encode_frame,
    encode_json,
    supports_side_requests,
)
from tests.guest.conftest import RunningAgent
from tests.guest.test_agent import run, tar_of, text_of

HELLO = {
    "protocol_version": "1.1",
    "agent_version": "4.2.0",
    "kernel_release": "6.1.0-test",
    "boot_id": "00000000-0000-0000-0000-000000000001",
}

# Polls the secret file until it changes, for at most 20 s.
POLL_FOR_NEW_VALUE = """
first=$(cat /run/devdep/secrets/API_TOKEN 2>/dev/null || cat "$SECRETS/API_TOKEN")
echo "waiting; env has $API_TOKEN"
i=0
while [ $i -lt 200 ]; do
  now=$(cat "$SECRETS/API_TOKEN")
  if [ "$now" != "$first" ]; then echo "file now $now"; exit 0; fi
  sleep 0.1; i=$((i+1))
done
echo "never changed"; exit 3
"""


def test_a_secret_replaced_mid_step_reaches_the_running_step(
    agent: RunningAgent,
) -> None:
    agent.client.put_workspace(tar_of())
    agent.client.put_secret("API_TOKEN", b"first-value")
    chunks: list[tuple[str, bytes]] = []
    errors: list[BaseException] = []

    def rotate() -> None:
        try:
            agent.client.put_secret("API_TOKEN", b"second-value")
        except BaseException as exc:  # handed to the test's thread
            errors.append(exc)

    rotator = threading.Thread(target=rotate)

    def on_output(channel: str, data: bytes) -> None:
        chunks.append((channel, data))
        if b"waiting" in data and not rotator.is_alive() and not rotator.ident:
            rotator.start()

    secrets = agent.sysroot / "run/devdep/secrets"
    status = agent.client.run_step(
        POLL_FOR_NEW_VALUE, {"SECRETS": str(secrets)}, on_output, timeout=30
    )
    rotator.join(timeout=10)

    assert errors == []
    assert status == 0, text_of(chunks, "stdout") + text_of(chunks, "stderr")
    assert "env has first-value" in text_of(chunks, "stdout")
    assert "file now second-value" in text_of(chunks, "stdout")
    assert agent.client.state is ClientState.READY
    later = run(agent, 'printf %s "$API_TOKEN"')
    assert text_of(later[1], "stdout") == "second-value"
    assert "second-value" not in agent.log()


def test_put_secret_from_another_thread_between_steps(agent: RunningAgent) -> None:
    agent.client.put_workspace(tar_of())

    worker = threading.Thread(
        target=agent.client.put_secret, args=("API_TOKEN", b"from-a-thread")
    )
    worker.start()
    worker.join(timeout=20)

    assert (agent.sysroot / "run/devdep/secrets/API_TOKEN").read_bytes() == (
        b"from-a-thread"
    )
    assert agent.client.state is ClientState.READY


def test_any_other_frame_during_a_step_still_ends_the_agent(
    agent: RunningAgent,
) -> None:
    agent.client.put_workspace(tar_of())

    def interrupt(channel: str, data: bytes) -> None:
        agent.host_socket.sendall(encode_json(MessageType.REQUEST, {"op": "ping"}))

    with pytest.raises((AgentDisconnected, AgentProtocolError)):
        agent.client.run_step("echo started; exec sleep 30", {}, interrupt, timeout=20)

    assert agent.process.wait(timeout=10) == 1
    assert "while a step was running" in agent.log()


def test_the_protocol_version_tells_whether_side_requests_work() -> None:
    assert supports_side_requests("1.1")
    assert supports_side_requests("1.7")
    assert not supports_side_requests("1.0")


# --- against a scripted peer ----------------------------------------------------


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    host, guest = socket.socketpair()
    yield host, guest
    host.close()
    guest.close()


def _client(host: socket.socket, guest: socket.socket, version: str) -> AgentClient:
    guest.sendall(
        encode_json(MessageType.HELLO, {**HELLO, "protocol_version": version})
    )
    client = AgentClient(host, io_timeout=5)
    client.wait_ready(timeout=5)
    return client


def test_a_side_answer_after_the_step_is_read_by_the_waiting_thread(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    host, guest = pair
    client = _client(host, guest, "1.1")
    reader = FrameReader(guest.recv)
    results: list[BaseException | None] = []

    def peer() -> None:
        assert reader.read_frame().json()["op"] == "run_step"
        guest.sendall(encode_frame(MessageType.STDOUT, b"go\n"))
        side = reader.read_frame().json()
        assert side["op"] == "put_secret" and side["side"] == 1
        # The step ends before the agent gets to the side request.
        guest.sendall(encode_json(MessageType.REPLY, {"exit_status": 0}))
        guest.sendall(encode_json(MessageType.SIDE_REPLY, {"side": 1, "ok": True}))

    def rotate() -> None:
        try:
            client.put_secret("API_TOKEN", b"v2")
            results.append(None)
        except BaseException as exc:
            results.append(exc)

    threading.Thread(target=peer, daemon=True).start()
    rotator = threading.Thread(target=rotate)

    def on_output(_channel: str, _data: bytes) -> None:
        rotator.start()

    assert client.run_step("true", {}, on_output, timeout=5) == 0
    rotator.join(timeout=5)

    assert results == [None]
    assert client.state is ClientState.READY


def test_a_refused_side_request_fails_only_itself(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    host, guest = pair
    client = _client(host, guest, "1.1")
    reader = FrameReader(guest.recv)
    results: list[BaseException | None] = []
    refusal = {"side": 1, "ok": False, "kind": "agent_failure", "message": "full"}

    def peer() -> None:
        reader.read_frame()
        guest.sendall(encode_frame(MessageType.STDOUT, b"go\n"))
        reader.read_frame()
        guest.sendall(encode_json(MessageType.SIDE_REPLY, refusal))
        guest.sendall(encode_frame(MessageType.STDOUT, b"more\n"))
        guest.sendall(encode_json(MessageType.REPLY, {"exit_status": 0}))

    def rotate() -> None:
        try:
            client.put_secret("API_TOKEN", b"v2")
            results.append(None)
        except BaseException as exc:
            results.append(exc)

    threading.Thread(target=peer, daemon=True).start()
    rotator = threading.Thread(target=rotate)
    output: list[bytes] = []

    def on_output(_channel: str, data: bytes) -> None:
        output.append(data)
        if len(output) == 1:
            rotator.start()

    assert client.run_step("true", {}, on_output, timeout=5) == 0
    rotator.join(timeout=5)

    assert isinstance(results[0], AgentRequestFailed)
    assert results[0].message == "full"
    assert output == [b"go\n", b"more\n"]
    assert client.state is ClientState.READY


def test_an_agent_without_side_requests_gets_the_secret_after_the_step(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    host, guest = pair
    client = _client(host, guest, "1.0")
    reader = FrameReader(guest.recv)
    seen: list[str] = []

    def peer() -> None:
        seen.append(reader.read_frame().json()["op"])
        guest.sendall(encode_frame(MessageType.STDOUT, b"go\n"))
        guest.sendall(encode_json(MessageType.REPLY, {"exit_status": 0}))
        request = reader.read_frame().json()
        seen.append(request["op"])
        assert "side" not in request
        guest.sendall(encode_json(MessageType.REPLY, {}))

    threading.Thread(target=peer, daemon=True).start()
    rotator = threading.Thread(target=client.put_secret, args=("API_TOKEN", b"v2"))

    def on_output(_channel: str, _data: bytes) -> None:
        rotator.start()

    assert client.run_step("true", {}, on_output, timeout=5) == 0
    rotator.join(timeout=5)

    assert not rotator.is_alive()
    assert seen == ["run_step", "put_secret"]
    assert client.state is ClientState.READY
