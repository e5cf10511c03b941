"""AgentClient against a scripted peer: handshake failures, timeouts and states."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator
from importlib.metadata import version

import pytest

from devdep.guest import AGENT_VERSION
from devdep.guest.client import AgentClient, ClientState
from devdep.guest.protocol import (
    HEADER,
    MAGIC,
    AgentDisconnected,
    AgentProtocolError,
    AgentRequestFailed,
    AgentTimeout,
    FrameReader,
    MalformedMessage,
    MessageType,
    ProtocolVersionMismatch,
    encode_frame,
    encode_json,
)

HELLO = {
    "protocol_version": "1.0",
    "agent_version": "4.2.0",
    "kernel_release": "6.1.0-test",
    "boot_id": "00000000-0000-0000-0000-000000000001",
}


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    host, guest = socket.socketpair()
    yield host, guest
    host.close()
    guest.close()


def test_the_agent_version_is_devdeps_version() -> None:
    assert version("devdep") == AGENT_VERSION


def test_wait_ready_returns_the_hello(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    host, guest = pair
    guest.sendall(encode_json(MessageType.HELLO, HELLO))
    client = AgentClient(host)

    hello = client.wait_ready(timeout=5)

    assert hello.kernel_release == "6.1.0-test"
    assert hello.boot_id == HELLO["boot_id"]
    assert client.state is ClientState.READY


def test_a_hello_of_another_major_version_is_refused(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    host, guest = pair
    guest.sendall(encode_json(MessageType.HELLO, {**HELLO, "protocol_version": "2.0"}))
    client = AgentClient(host)

    with pytest.raises(ProtocolVersionMismatch, match=r"2\.0"):
        client.wait_ready(timeout=5)
    assert client.state is ClientState.BROKEN


def test_a_frame_of_another_major_version_is_refused(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    host, guest = pair
    guest.sendall(HEADER.pack(MAGIC, 7, 0, MessageType.HELLO, 0, 2) + b"{}")

    with pytest.raises(ProtocolVersionMismatch):
        AgentClient(host).wait_ready(timeout=5)


def test_a_first_frame_other_than_hello_is_a_protocol_error(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    host, guest = pair
    guest.sendall(encode_frame(MessageType.STDOUT, b"boot noise"))

    with pytest.raises(MalformedMessage, match="not HELLO"):
        AgentClient(host).wait_ready(timeout=5)


def test_garbage_before_hello_is_a_protocol_error(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    host, guest = pair
    guest.sendall(b"[    0.000000] Linux version 6.1.0\n")

    with pytest.raises(AgentProtocolError):
        AgentClient(host).wait_ready(timeout=5)


def test_silence_is_a_timeout(pair: tuple[socket.socket, socket.socket]) -> None:
    host, _guest = pair

    with pytest.raises(AgentTimeout):
        AgentClient(host).wait_ready(timeout=0.2)


def test_a_hello_cut_short_is_a_truncated_frame(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    host, guest = pair
    guest.sendall(encode_json(MessageType.HELLO, HELLO)[:20])
    guest.close()

    with pytest.raises(AgentProtocolError, match="ended"):
        AgentClient(host).wait_ready(timeout=5)


def test_a_closed_connection_is_a_disconnect(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    host, guest = pair
    guest.close()

    with pytest.raises(AgentDisconnected):
        AgentClient(host).wait_ready(timeout=5)


def test_requests_need_the_handshake_first(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    host, _guest = pair

    with pytest.raises(AgentProtocolError, match="needs it ready"):
        AgentClient(host).run_step("true", {}, lambda _c, _d: None)


def answer_one_request(guest: socket.socket, *frames: bytes) -> threading.Thread:
    """A peer that says HELLO, reads one request and answers with `frames`."""

    def peer() -> None:
        guest.sendall(encode_json(MessageType.HELLO, HELLO))
        FrameReader(guest.recv).read_frame()
        for frame in frames:
            guest.sendall(frame)

    thread = threading.Thread(target=peer, daemon=True)
    thread.start()
    return thread


def test_an_error_reply_leaves_the_client_ready(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    host, guest = pair
    answer_one_request(
        guest,
        encode_json(MessageType.ERROR, {"kind": "invalid_request", "message": "no"}),
    )
    client = AgentClient(host)
    client.wait_ready(timeout=5)

    with pytest.raises(AgentRequestFailed) as failed:
        client.ping()

    assert (failed.value.kind, failed.value.message) == ("invalid_request", "no")
    assert client.state is ClientState.READY


def test_a_step_that_outlives_its_timeout_breaks_the_client(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    host, guest = pair
    answer_one_request(guest, encode_frame(MessageType.STDOUT, b"still going\n"))
    client = AgentClient(host)
    client.wait_ready(timeout=5)
    received: list[bytes] = []

    with pytest.raises(AgentTimeout):
        client.run_step(
            "sleep 99", {}, lambda _c, data: received.append(data), timeout=0.3
        )

    assert received == [b"still going\n"]
    assert client.state is ClientState.BROKEN
    with pytest.raises(AgentProtocolError, match="broken"):
        client.ping()


def test_a_reply_out_of_turn_is_a_protocol_error(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    host, guest = pair
    answer_one_request(guest, encode_frame(MessageType.DATA, b"unasked"))
    client = AgentClient(host)
    client.wait_ready(timeout=5)

    with pytest.raises(MalformedMessage, match="out of turn"):
        client.run_step("true", {}, lambda _c, _d: None)


def test_a_run_step_reply_without_a_status_is_malformed(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    host, guest = pair
    answer_one_request(guest, encode_json(MessageType.REPLY, {"exit_status": "0"}))
    client = AgentClient(host)
    client.wait_ready(timeout=5)

    with pytest.raises(MalformedMessage):
        client.run_step("true", {}, lambda _c, _d: None)
    assert client.state is ClientState.BROKEN


def test_artifacts_before_an_error_are_written_then_the_error_raised(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    host, guest = pair
    answer_one_request(
        guest,
        encode_frame(MessageType.DATA, b"partial"),
        encode_frame(MessageType.DATA_END),
        encode_json(MessageType.ERROR, {"kind": "agent_failure", "message": "EIO"}),
    )
    client = AgentClient(host)
    client.wait_ready(timeout=5)
    destination = io.BytesIO()

    with pytest.raises(AgentRequestFailed, match="EIO"):
        client.get_artifacts(["dist"], destination)

    assert destination.getvalue() == b"partial"
    assert client.state is ClientState.READY


def test_an_oversize_secret_is_refused_before_sending(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    host, guest = pair
    guest.sendall(encode_json(MessageType.HELLO, HELLO))
    client = AgentClient(host)
    client.wait_ready(timeout=5)

    with pytest.raises(ValueError, match="limit"):
        client.put_secret("BIG", b"x" * (1024 * 1024))
    assert client.state is ClientState.READY
