"""The host's side of the guest agent protocol: a blocking client on a socket.

`AgentClient` drives one agent over any connected byte-stream socket (the
unix socket behind QEMU's virtio-serial port, or a vsock connection). It sends
one request at a time and reads the agent's answer to the end before the next
one. One thread drives the conversation; the one exception is `put_secret`,
which any thread may call at any time: while a step runs it goes to the agent
as a side request (protocol 1.1) whose answer the step's reader hands over,
otherwise it waits for its turn between requests.
"""

from __future__ import annotations

import base64
import contextlib
import enum
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from devdep.guest.protocol import (
    CHUNK_SIZE,
    MAX_SECRET_BYTES,
    SIDE_OPERATIONS,
    AgentDisconnected,
    AgentHello,
    AgentProtocolError,
    AgentRequestFailed,
    AgentTimeout,
    Frame,
    FrameReader,
    MalformedMessage,
    MessageType,
    encode_frame,
    encode_json,
    is_env_name,
    supports_side_requests,
)

logger = logging.getLogger(__name__)

# How long a request other than run_step may go without a byte moving either way.
DEFAULT_IO_TIMEOUT = 60.0

OutputCallback = Callable[[str, bytes], None]


class ClientState(enum.Enum):
    """Where the conversation with the agent stands."""

    CONNECTED = "connected"  # the socket is open, the agent has not said HELLO
    READY = "ready"  # the handshake is done; a request may be sent
    BUSY = "busy"  # a request is in flight
    BROKEN = "broken"  # the stream failed mid-conversation; only closing is left


class AgentClient:
    """Drives one guest agent: handshake, workspace, secrets, steps, artifacts."""

    def __init__(
        self, sock: socket.socket, *, io_timeout: float = DEFAULT_IO_TIMEOUT
    ) -> None:
        self._sock = sock
        self._io_timeout = io_timeout
        self._deadline: float | None = None
        self._idle_timeout: float | None = None
        self._reader = FrameReader(self._recv)
        self.state = ClientState.CONNECTED
        self.hello: AgentHello | None = None
        # Guards the state, the conversation's owner and the side requests;
        # waited on by threads wanting a turn or a side answer.
        self._turn = threading.Condition()
        self._owner: int | None = None
        self._stepping = False
        self._side_ids = itertools.count(1)
        self._side_answers: dict[int, dict[str, Any] | None] = {}
        # Whole frames only: a side request may be sent from another thread.
        self._send_lock = threading.Lock()

    def wait_ready(self, timeout: float) -> AgentHello:
        """Wait for the agent's HELLO and check that it speaks our major version."""
        with self._conversation(
            ClientState.CONNECTED,
            deadline=time.monotonic() + timeout,
            idle_limit=False,
        ):
            frame = self._read_frame()
            if frame.type != MessageType.HELLO:
                raise MalformedMessage(f"the agent began with {frame.name}, not HELLO")
            hello = AgentHello.from_json(frame.json())
        logger.debug(
            "agent %s ready: protocol %s, kernel %s, boot id %s",
            hello.agent_version,
            hello.protocol_version,
            hello.kernel_release,
            hello.boot_id,
        )
        self.hello = hello
        return hello

    def ping(self) -> None:
        """Ask the agent to answer, proving it still serves requests."""
        with self._conversation():
            self._send_request({"op": "ping"})
            self._read_reply()

    def put_workspace(self, archive: BinaryIO) -> None:
        """Send a tar stream for the agent to extract into its workspace."""
        with self._conversation():
            self._send_request({"op": "put_workspace"})
            sent = 0
            while chunk := archive.read(CHUNK_SIZE):
                self._send(encode_frame(MessageType.DATA, chunk))
                sent += len(chunk)
            self._send(encode_frame(MessageType.DATA_END))
            reply = self._read_reply()
        logger.debug("workspace sent: %d bytes, %s members", sent, reply.get("members"))

    def put_secret(self, name: str, value: bytes) -> None:
        """Hand the agent a secret for its RAM-backed secrets directory and env."""
        if not is_env_name(name):
            raise ValueError(f"{name!r} is not an environment variable name")
        if len(value) > MAX_SECRET_BYTES:
            raise ValueError(
                f"secret {name} is {len(value)} bytes, over the "
                f"{MAX_SECRET_BYTES}-byte limit"
            )
        request: dict[str, object] = {
            "op": "put_secret",
            "name": name,
            "value": base64.b64encode(value).decode("ascii"),
        }
        side = self._claim_or_send_side(request)
        if side is None:
            with self._conversation(claimed=True):
                self._send_request(request)
                self._read_reply()
        else:
            self._wait_side_answer(side)
        logger.debug("secret %s delivered", name)

    def run_step(
        self,
        command: str,
        env: dict[str, str],
        on_output: OutputCallback,
        *,
        timeout: float | None = None,
    ) -> int:
        """Run `/bin/sh -c command` in the guest; return its exit status.

        Output reaches `on_output("stdout" | "stderr", chunk)` as the agent
        reads it from the step. Without `timeout` the step may run silently for
        as long as it likes: the caller's own deadline ends it by stopping the
        VM, which closes the stream.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._conversation(deadline=deadline, idle_limit=False):
            self._send_request({"op": "run_step", "command": command, "env": env})
            with self._turn:
                self._stepping = self.hello is not None and supports_side_requests(
                    self.hello.protocol_version
                )
            while True:
                frame = self._read_frame()
                if frame.type == MessageType.STDOUT:
                    on_output("stdout", frame.payload)
                elif frame.type == MessageType.STDERR:
                    on_output("stderr", frame.payload)
                else:
                    reply = self._reply_from(frame)
                    break
            exit_status = reply.get("exit_status")
            if not isinstance(exit_status, int) or isinstance(exit_status, bool):
                raise MalformedMessage("the run_step reply has no integer exit_status")
        return exit_status

    def get_artifacts(self, paths: list[str], destination: BinaryIO) -> list[str]:
        """Write a tar stream of the workspace-relative `paths` to `destination`.

        Returns the paths that were not in the workspace. The tar stream comes
        from inside the VM, where the job's code ran: extract it only with
        `devdep.guest.archive.extract_archive` or tarfile's `data` filter.
        """
        with self._conversation():
            self._send_request({"op": "get_artifacts", "paths": paths})
            while True:
                frame = self._read_frame()
                if frame.type == MessageType.DATA:
                    destination.write(frame.payload)
                elif frame.type == MessageType.DATA_END:
                    reply = self._read_reply()
                    break
                else:
                    reply = self._reply_from(frame)
                    break
            missing = reply.get("missing")
            if not isinstance(missing, list) or not all(
                isinstance(path, str) for path in missing
            ):
                raise MalformedMessage("the get_artifacts reply has no list 'missing'")
        return missing

    def poweroff(self) -> None:
        """Ask the agent to sync the guest's disks and power the VM off.

        Returns once the agent has acknowledged; the VM's process then exits
        on its own. Waiting for that is the VMM's business.
        """
        with self._conversation():
            self._send_request({"op": "poweroff"})
            self._read_reply()

    def _require(self, state: ClientState) -> None:
        if self.state is not state:
            raise AgentProtocolError(
                f"the agent client is {self.state.value}; this needs it {state.value}"
            )

    def _claim(self, needs: ClientState) -> None:
        """Take the conversation, waiting while another thread has it."""
        with self._turn:
            me = threading.get_ident()
            while self.state is ClientState.BUSY and self._owner != me:
                self._turn.wait()
            self._require(needs)
            self.state = ClientState.BUSY
            self._owner = me

    def _release(self, state: ClientState) -> None:
        with self._turn:
            self.state = state
            self._owner = None
            self._stepping = False
            self._turn.notify_all()

    @contextlib.contextmanager
    def _conversation(
        self,
        needs: ClientState = ClientState.READY,
        *,
        deadline: float | None = None,
        idle_limit: bool = True,
        claimed: bool = False,
    ) -> Iterator[None]:
        """One request and its whole answer, with its timeouts.

        A request that ends in the agent's ERROR leaves the stream in step, so
        the client is READY again; any other failure leaves it BROKEN.
        """
        if not claimed:
            self._claim(needs)
        self._deadline = deadline
        self._idle_timeout = self._io_timeout if idle_limit else None
        outcome = ClientState.BROKEN
        try:
            yield
        except AgentRequestFailed:
            outcome = ClientState.READY
            raise
        else:
            outcome = ClientState.READY
        finally:
            self._deadline = None
            self._idle_timeout = None
            self._release(outcome)

    # --- side requests -------------------------------------------------------

    def _claim_or_send_side(self, request: dict[str, object]) -> int | None:
        """Either take the conversation (None), or, while a step runs, send
        `request` as a side request and return its id."""
        assert request["op"] in SIDE_OPERATIONS
        with self._turn:
            me = threading.get_ident()
            while True:
                if self.state is ClientState.BUSY and self._stepping:
                    side = next(self._side_ids)
                    self._side_answers[side] = None
                    frame = encode_json(MessageType.REQUEST, {**request, "side": side})
                    # Taken before the turn is let go: the stepping thread
                    # cannot send its next request until this frame is out.
                    self._send_lock.acquire()
                    break
                if self.state is not ClientState.BUSY or self._owner == me:
                    self._require(ClientState.READY)
                    self.state = ClientState.BUSY
                    self._owner = me
                    return None
                self._turn.wait()
        try:
            logger.debug("side request %d: %s", side, request["op"])
            # The socket's timeout belongs to the stepping thread's reads.
            self._sock.sendall(frame)
        except OSError as exc:
            with self._turn:
                del self._side_answers[side]
            raise AgentDisconnected(
                f"the connection to the agent broke: {exc}"
            ) from exc
        finally:
            self._send_lock.release()
        return side

    def _wait_side_answer(self, side: int) -> None:
        """Wait for the answer to side request `side`: the stepping thread
        hands it over, or, once the agent is idle, this thread reads it."""
        deadline = time.monotonic() + self._io_timeout
        with self._turn:
            while self._side_answers[side] is None:
                if self.state is ClientState.READY:
                    self.state = ClientState.BUSY
                    self._owner = threading.get_ident()
                    break
                if self.state is not ClientState.BUSY:
                    del self._side_answers[side]
                    raise AgentDisconnected(
                        f"the agent client became {self.state.value} before "
                        f"side request {side} was answered"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    del self._side_answers[side]
                    raise AgentTimeout(f"side request {side} was not answered")
                # Bounded waits: a socket closed under us notifies no one.
                self._turn.wait(min(remaining, 0.5))
                if self._sock.fileno() == -1:
                    self.state = ClientState.BROKEN
            else:
                answer = self._side_answers.pop(side)
                assert answer is not None
                _raise_for_side(answer)
                return

        # The step ended before the agent read the side request; it answers it
        # now, and no one else is reading.
        with self._conversation(claimed=True):
            while self._side_answers[side] is None:
                frame = self._reader.read_frame()
                if frame.type != MessageType.SIDE_REPLY:
                    raise MalformedMessage(f"the agent sent {frame.name} out of turn")
                self._take_side_answer(frame)
        with self._turn:
            answer = self._side_answers.pop(side)
        assert answer is not None
        _raise_for_side(answer)

    def _take_side_answer(self, frame: Frame) -> None:
        answer = frame.json()
        side = answer.get("side")
        with self._turn:
            if not isinstance(side, int) or side not in self._side_answers:
                raise MalformedMessage(f"a SIDE_REPLY answers no side request: {side}")
            self._side_answers[side] = answer
            self._turn.notify_all()

    # --- the stream ----------------------------------------------------------

    def _send_request(self, request: dict[str, object]) -> None:
        logger.debug("request %s", request["op"])
        self._send(encode_json(MessageType.REQUEST, request))

    def _send(self, data: bytes) -> None:
        try:
            with self._send_lock:
                self._sock.settimeout(self._timeout_now())
                self._sock.sendall(data)
        except TimeoutError as exc:
            raise AgentTimeout("the agent stopped reading its input") from exc
        except OSError as exc:
            raise AgentDisconnected(
                f"the connection to the agent broke: {exc}"
            ) from exc

    def _recv(self, size: int) -> bytes:
        self._sock.settimeout(self._timeout_now())
        try:
            return self._sock.recv(size)
        except TimeoutError as exc:
            raise AgentTimeout("the agent did not answer in time") from exc
        except OSError as exc:
            raise AgentDisconnected(
                f"the connection to the agent broke: {exc}"
            ) from exc

    def _timeout_now(self) -> float | None:
        """The socket timeout for the next call: the idle limit or the deadline."""
        timeout = self._idle_timeout
        if self._deadline is not None:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise AgentTimeout("the agent did not finish in time")
            timeout = remaining if timeout is None else min(timeout, remaining)
        return timeout

    def _read_frame(self) -> Frame:
        """The next frame of the conversation; side answers are handed over."""
        while True:
            frame = self._reader.read_frame()
            if frame.type != MessageType.SIDE_REPLY:
                return frame
            self._take_side_answer(frame)

    def _read_reply(self) -> dict[str, Any]:
        return self._reply_from(self._read_frame())

    def _reply_from(self, frame: Frame) -> dict[str, Any]:
        """The REPLY's content; an ERROR becomes AgentRequestFailed."""
        if frame.type == MessageType.REPLY:
            return frame.json()
        if frame.type == MessageType.ERROR:
            error = frame.json()
            kind = error.get("kind")
            message = error.get("message")
            if not isinstance(kind, str) or not isinstance(message, str):
                raise MalformedMessage("an ERROR lacks a string kind and message")
            raise AgentRequestFailed(kind, message)
        raise MalformedMessage(f"the agent sent {frame.name} out of turn")


def _raise_for_side(answer: dict[str, Any]) -> None:
    """Nothing for a side request that succeeded; AgentRequestFailed otherwise."""
    if answer.get("ok") is True:
        return
    kind = answer.get("kind")
    message = answer.get("message")
    if not isinstance(kind, str) or not isinstance(message, str):
        raise MalformedMessage("a failed SIDE_REPLY lacks a string kind and message")
    raise AgentRequestFailed(kind, message)
