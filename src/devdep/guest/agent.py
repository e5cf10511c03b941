"""The guest agent: serves the host's requests from inside the job's micro-VM.

The VM's /init starts it as::

    python3 -m devdep.guest.agent --port=/dev/vportXpY --sysroot=/sysroot

It says HELLO on the port, then serves one request at a time: it unpacks the
workspace, keeps the secrets (in RAM, on a ramfs, and in the environment of
later steps), runs each step chrooted into the job's root filesystem while
streaming its output, sends artifacts back and powers the VM off. On the host,
for tests, `--port` may name a unix socket, `--fd` an inherited socket, and
`--no-chroot` runs the steps in place.

Python starts slowly under emulation, so the agent imports little: it reads
its own command line, forks its steps itself rather than through
`subprocess`, loads `ctypes` only with the first secret, and writes its log
lines straight to stderr (the VM's console) rather than through `logging`.
"""

from __future__ import annotations

import os
import select
import sys
import time

from devdep.guest import AGENT_VERSION
from devdep.guest.archive import extract_archive, relative_member_path, write_archive
from devdep.guest.protocol import (
    CHUNK_SIZE,
    ERROR_AGENT_FAILURE,
    ERROR_BAD_ARCHIVE,
    ERROR_INVALID_REQUEST,
    ERROR_STEP_NOT_STARTED,
    ERROR_UNSAFE_ARCHIVE,
    MAX_SECRET_BYTES,
    PROTOCOL_VERSION,
    SIDE_OPERATIONS,
    AgentDisconnected,
    AgentHello,
    AgentProtocolError,
    ArchiveError,
    FrameReader,
    MalformedMessage,
    MessageType,
    UnsafeArchive,
    encode_frame,
    encode_json,
    is_env_name,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from collections.abc import Callable
    from typing import Any
else:
    # The C module behind `signal`, with the same functions and constants;
    # `signal` itself would import enum (and functools, collections) only to
    # wrap the numbers in IntEnums.
    import _signal

USAGE = """\
usage: python3 -m devdep.guest.agent (--port=PATH | --fd=N) [--sysroot=DIR]
                                     [--no-chroot] [--no-poweroff]

The devdep guest agent: speaks the devdep agent protocol on PATH (a virtio-serial
port, or a unix socket to connect to) or on the inherited descriptor N, and
runs the job's steps chrooted into DIR (default /sysroot).

  --no-chroot    run steps in DIR without chroot (chroot is also skipped when
                 not running as root)
  --no-poweroff  exit instead of powering the machine off when asked to
"""

STEP_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STEP_HOME = "/root"
WORKSPACE = "workspace"
SECRETS_DIRECTORY = "run/devdep/secrets"

# How long a step's output is still collected after its shell has exited, for
# the processes it left running in the background that still hold its pipes.
OUTPUT_GRACE_SECONDS = 1.0

# How often the agent looks again for the host on a virtio port nobody has
# opened on the host's side yet.
HOST_POLL_SECONDS = 0.02

_PR_SET_DUMPABLE = 4
_LINUX_REBOOT_CMD_POWER_OFF = 0x4321FEDC


def log(message: str, *args: object) -> None:
    """One line on stderr, which /init connects to the VM's serial console."""
    sys.stderr.write("devdep-agent: " + (message % args if args else message) + "\n")
    sys.stderr.flush()


class BadArguments(Exception):
    """The agent's command line is wrong."""


class Options:
    """The agent's command line."""

    __slots__ = ("chroot", "fd", "port", "poweroff", "sysroot")

    def __init__(self) -> None:
        self.port: str | None = None
        self.fd: int | None = None
        self.sysroot = "/sysroot"
        self.chroot = True
        self.poweroff = True


def parse_arguments(arguments: list[str]) -> Options | None:
    """The options, or None when help was asked for; BadArguments when wrong."""
    options = Options()
    for argument in arguments:
        name, _, value = argument.partition("=")
        if name in ("-h", "--help"):
            return None
        if name == "--port" and value:
            options.port = value
        elif name == "--fd" and value.isdigit():
            options.fd = int(value)
        elif name == "--sysroot" and value:
            options.sysroot = os.path.abspath(value)
        elif argument == "--no-chroot":
            options.chroot = False
        elif argument == "--no-poweroff":
            options.poweroff = False
        else:
            raise BadArguments(f"unknown or incomplete argument {argument!r}")
    if (options.port is None) == (options.fd is None):
        raise BadArguments("give exactly one of --port=PATH and --fd=N")
    return options


class Port:
    """The agent's end of the byte stream to the host.

    On a virtio-serial port a read of zero bytes means that nobody is connected
    on the host's side right now, not that the stream is over for good: the
    host may connect (again) later, and then gets a fresh HELLO.
    """

    def __init__(self, fd: int, *, is_virtio_port: bool) -> None:
        self.fd = fd
        self.is_virtio_port = is_virtio_port

    def recv(self, size: int) -> bytes:
        try:
            return os.read(self.fd, size)
        except ConnectionResetError as exc:
            raise AgentDisconnected("the host reset the connection") from exc

    def send_all(self, data: bytes) -> None:
        # A virtio port takes at most a few pages per write; a socket may also
        # take less than it was offered.
        view = memoryview(data)
        try:
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise AgentDisconnected("the host closed the connection") from exc

    def send(self, type: int, payload: bytes = b"") -> None:
        self.send_all(encode_frame(type, payload))

    def send_json(self, type: int, message: dict[str, Any]) -> None:
        self.send_all(encode_json(type, message))

    def wait_for_host(self) -> None:
        """On a virtio port, wait until the host's side of it is connected.

        The port reports POLLHUP for as long as nothing is attached to the
        host's end (QEMU's chardev socket), and that does not wait, so look again
        after a short sleep.
        """
        if not self.is_virtio_port:
            return
        poller = select.poll()
        poller.register(self.fd, select.POLLIN | select.POLLOUT)
        waited = False
        while any(events & select.POLLHUP for _, events in poller.poll(0)):
            if not waited:
                log("waiting for the host to connect")
                waited = True
            time.sleep(HOST_POLL_SECONDS)

    def close(self) -> None:
        os.close(self.fd)


def open_port(options: Options) -> Port:
    """The port named on the command line: a device, a unix socket or an fd."""
    if options.fd is not None:
        return Port(options.fd, is_virtio_port=False)

    assert options.port is not None
    import stat

    mode = os.stat(options.port).st_mode
    if stat.S_ISSOCK(mode):
        import socket

        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.connect(options.port)
        return Port(connection.detach(), is_virtio_port=False)
    fd = os.open(options.port, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    return Port(fd, is_virtio_port=stat.S_ISCHR(mode))


class _Refused(Exception):
    """A request the agent answers with ERROR; the connection stays good."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class Agent:
    """Serves the host's requests, one at a time, over one port."""

    def __init__(self, port: Port, options: Options) -> None:
        self.port = port
        self.sysroot = options.sysroot
        self.workspace = os.path.join(options.sysroot, WORKSPACE)
        self.secrets_directory = os.path.join(options.sysroot, SECRETS_DIRECTORY)
        self.chroot = options.chroot and options.sysroot != "/"
        if self.chroot and os.geteuid() != 0:
            log("not running as root: steps run in %s without chroot", self.sysroot)
            self.chroot = False
        # Powering off for real is only ever done from inside a VM, where the
        # port is a virtio device; an agent on a socket just exits.
        self.power_off_machine = options.poweroff and port.is_virtio_port
        self.secrets: dict[str, bytes] = {}
        self._reader = FrameReader(port.recv)
        self._handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "ping": self._ping,
            "put_workspace": self._put_workspace,
            "put_secret": self._put_secret,
            "run_step": self._run_step,
            "get_artifacts": self._get_artifacts,
            "poweroff": self._poweroff,
        }
        self._powering_off = False

    def serve(self) -> int:
        """Serve connections until told to power off; the process's exit status."""
        while True:
            self.port.wait_for_host()
            self._say_hello()
            try:
                self._serve_connection()
            except AgentDisconnected:
                if not self.port.is_virtio_port:
                    log("the host closed the connection")
                    return 0
                log("the host disconnected; waiting for it to connect again")
                self._reader = FrameReader(self.port.recv)
                continue
            except AgentProtocolError as exc:
                log("protocol error, giving up: %s", exc)
                return 1
            return 0

    def _say_hello(self) -> None:
        hello = AgentHello(
            protocol_version=PROTOCOL_VERSION,
            agent_version=AGENT_VERSION,
            kernel_release=os.uname().release,
            boot_id=_read_boot_id(),
        )
        self.port.send_json(MessageType.HELLO, hello.to_json())
        log(
            "ready: agent %s, protocol %s, %s",
            AGENT_VERSION,
            PROTOCOL_VERSION,
            _startup_timing(),
        )

    def _serve_connection(self) -> None:
        while not self._powering_off:
            frame = self._reader.read_frame()
            if frame.type != MessageType.REQUEST:
                raise MalformedMessage(f"the host sent {frame.name} out of turn")
            request = frame.json()
            if "side" in request:
                # Sent during a step that ended before the agent read it.
                self._serve_side_request(request)
                continue
            operation = request.get("op")
            handler = (
                self._handlers.get(operation) if isinstance(operation, str) else None
            )
            if handler is None:
                self._refuse(ERROR_INVALID_REQUEST, f"unknown operation {operation!r}")
                continue
            try:
                reply = handler(request)
            except _Refused as exc:
                log("%s refused: %s", operation, exc.message)
                self._refuse(exc.kind, exc.message)
                continue
            except (AgentProtocolError, AgentDisconnected):
                raise
            except Exception as exc:
                log("%s failed: %s: %s", operation, type(exc).__name__, exc)
                self._refuse(ERROR_AGENT_FAILURE, f"{type(exc).__name__}: {exc}")
                continue
            self.port.send_json(MessageType.REPLY, reply)
            if self._powering_off:
                self._power_off()

    def _refuse(self, kind: str, message: str) -> None:
        self.port.send_json(MessageType.ERROR, {"kind": kind, "message": message})

    def _serve_frames_during_step(self) -> None:
        """Answer the side requests the host sent while a step runs.

        Reads at least one frame (the port was readable), then every frame
        already buffered: a poll on the port does not see those.
        """
        while True:
            frame = self._reader.read_frame()
            request = frame.json() if frame.type == MessageType.REQUEST else None
            if request is None or "side" not in request:
                raise MalformedMessage(
                    f"the host sent {frame.name} while a step was running"
                )
            self._serve_side_request(request)
            if not self._reader.has_frame:
                return

    def _serve_side_request(self, request: dict[str, Any]) -> None:
        """Handle a side request and answer it with SIDE_REPLY, whatever happens."""
        side = request.get("side")
        if not isinstance(side, int) or isinstance(side, bool):
            raise MalformedMessage("a side request's 'side' is not an integer")
        operation = request.get("op")
        answer: dict[str, Any] = {"side": side, "ok": True}
        try:
            handler = self._handlers.get(operation)  # type: ignore[arg-type]
            if operation not in SIDE_OPERATIONS or handler is None:
                raise _Refused(
                    ERROR_INVALID_REQUEST, f"{operation!r} cannot be a side request"
                )
            handler(request)
        except _Refused as exc:
            log("side %s refused: %s", operation, exc.message)
            answer = {"side": side, "ok": False, "kind": exc.kind}
            answer["message"] = exc.message
        except (AgentProtocolError, AgentDisconnected):
            raise
        except Exception as exc:
            log("side %s failed: %s: %s", operation, type(exc).__name__, exc)
            answer = {"side": side, "ok": False, "kind": ERROR_AGENT_FAILURE}
            answer["message"] = f"{type(exc).__name__}: {exc}"
        self.port.send_json(MessageType.SIDE_REPLY, answer)

    def _ping(self, request: dict[str, Any]) -> dict[str, Any]:
        return {}

    def _put_workspace(self, request: dict[str, Any]) -> dict[str, Any]:
        incoming = _IncomingData(self._reader)
        try:
            members = extract_archive(incoming, self.workspace)
        except UnsafeArchive as exc:
            raise _Refused(ERROR_UNSAFE_ARCHIVE, str(exc)) from exc
        except ArchiveError as exc:
            raise _Refused(ERROR_BAD_ARCHIVE, str(exc)) from exc
        finally:
            # Whatever happened, read the stream to its end so that the next
            # frame the host sees from us is the answer.
            incoming.drain()
        log("workspace extracted: %d members", members)
        return {"members": members}

    def _put_secret(self, request: dict[str, Any]) -> dict[str, Any]:
        import binascii

        name = request.get("name")
        encoded = request.get("value")
        if not isinstance(name, str) or not is_env_name(name):
            raise _Refused(ERROR_INVALID_REQUEST, "a secret needs a variable name")
        if not isinstance(encoded, str):
            raise _Refused(ERROR_INVALID_REQUEST, f"secret {name} has no value")
        try:
            value = binascii.a2b_base64(encoded, strict_mode=True)
        except binascii.Error as exc:
            raise _Refused(
                ERROR_INVALID_REQUEST, f"secret {name}'s value is not base64"
            ) from exc
        if len(value) > MAX_SECRET_BYTES:
            raise _Refused(ERROR_INVALID_REQUEST, f"secret {name} is too large")

        if not self.secrets:
            # Before the agent holds its first secret (ctypes is too slow to
            # import at start under emulation for a job that may have none).
            _make_undumpable()
        _write_secret_file(self.secrets_directory, name, value)
        self.secrets[name] = value
        if b"\0" in value:
            log("secret %s holds a NUL byte: it is a file only, not in the env", name)
        log("secret %s stored", name)
        return {}

    def _run_step(self, request: dict[str, Any]) -> dict[str, Any]:
        command = request.get("command")
        env = request.get("env", {})
        if not isinstance(command, str) or "\0" in command:
            raise _Refused(ERROR_INVALID_REQUEST, "a step needs a command string")
        if not isinstance(env, dict) or not all(
            isinstance(name, str)
            and is_env_name(name)
            and isinstance(value, str)
            and "\0" not in value
            for name, value in env.items()
        ):
            raise _Refused(
                ERROR_INVALID_REQUEST, "a step's env must map variable names to strings"
            )

        step = _Step(command, self._step_environment(env))
        step.launch(self.sysroot, chroot=self.chroot)
        try:
            exit_status = step.stream_output(self.port, self._serve_frames_during_step)
        except BaseException:
            step.kill()
            raise
        log("step exited with status %d", exit_status)
        return {"exit_status": exit_status}

    def _step_environment(self, env: dict[str, str]) -> dict[str, str | bytes]:
        """PATH and HOME, then the secrets, then the step's own variables."""
        environment: dict[str, str | bytes] = {"PATH": STEP_PATH, "HOME": STEP_HOME}
        for name, value in self.secrets.items():
            if b"\0" not in value:
                environment[name] = value
        environment.update(env)
        return environment

    def _get_artifacts(self, request: dict[str, Any]) -> dict[str, Any]:
        paths = request.get("paths")
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise _Refused(ERROR_INVALID_REQUEST, "artifacts need a list of paths")
        try:
            for path in paths:
                relative_member_path(path)
        except ValueError as exc:
            raise _Refused(ERROR_INVALID_REQUEST, f"artifact path {exc}") from exc

        outgoing = _OutgoingData(self.port)
        try:
            missing = write_archive(self.workspace, paths, outgoing)
        finally:
            # Once DATA has started the host expects DATA_END, then the answer.
            outgoing.finish()
        log("artifacts sent: %d bytes, %d missing", outgoing.sent, len(missing))
        return {"missing": missing}

    def _poweroff(self, request: dict[str, Any]) -> dict[str, Any]:
        os.sync()
        self._powering_off = True
        return {}

    def _power_off(self) -> None:
        """Turn the VM off now; on the host (tests), just stop serving."""
        if not self.power_off_machine:
            log("poweroff asked for: exiting")
            return
        log("powering off")
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.reboot(_LINUX_REBOOT_CMD_POWER_OFF)
            log("reboot(POWER_OFF) failed: errno %d", ctypes.get_errno())
        except (OSError, AttributeError) as exc:
            log("reboot(POWER_OFF) unavailable: %s", exc)
        try:
            with open("/proc/sysrq-trigger", "w") as trigger:
                trigger.write("o")
        except OSError as exc:
            # /init powers the VM off itself when the agent exits.
            log("sysrq poweroff failed: %s", exc)


class _IncomingData:
    """The DATA frames of one request, read as a stream of bytes."""

    def __init__(self, reader: FrameReader) -> None:
        self._reader = reader
        self._buffer = b""
        self._ended = False

    def read(self, size: int = -1, /) -> bytes:
        while not self._ended and (size < 0 or len(self._buffer) < size):
            self._take_frame()
        if size < 0:
            size = len(self._buffer)
        chunk, self._buffer = self._buffer[:size], self._buffer[size:]
        return chunk

    def drain(self) -> None:
        while not self._ended:
            self._take_frame()
        self._buffer = b""

    def _take_frame(self) -> None:
        frame = self._reader.read_frame()
        if frame.type == MessageType.DATA:
            self._buffer += frame.payload
        elif frame.type == MessageType.DATA_END:
            self._ended = True
        else:
            raise MalformedMessage(f"the host sent {frame.name} inside a data stream")


class _OutgoingData:
    """A stream of bytes sent on as DATA frames, then a DATA_END."""

    def __init__(self, port: Port) -> None:
        self._port = port
        self._buffer = bytearray()
        self.sent = 0

    def write(self, data: bytes, /) -> int:
        self._buffer += data
        while len(self._buffer) >= CHUNK_SIZE:
            self._flush(CHUNK_SIZE)
        return len(data)

    def finish(self) -> None:
        if self._buffer:
            self._flush(len(self._buffer))
        self._port.send(MessageType.DATA_END)

    def _flush(self, size: int) -> None:
        chunk = bytes(self._buffer[:size])
        del self._buffer[:size]
        self._port.send(MessageType.DATA, chunk)
        self.sent += len(chunk)


class _Step:
    """One `/bin/sh -c` process, its two output pipes and its exit status."""

    def __init__(self, command: str, environment: dict[str, str | bytes]) -> None:
        self.command = command
        self.environment = environment
        self.pid = 0
        self._outputs: dict[int, int] = {}

    def launch(self, sysroot: str, *, chroot: bool) -> None:
        """Start the shell; _Refused if it could not be started at all."""
        stdout_read, stdout_write = os.pipe()
        stderr_read, stderr_write = os.pipe()
        error_read, error_write = os.pipe()
        null = os.open(os.devnull, os.O_RDONLY)
        workspace = "/" + WORKSPACE if chroot else os.path.join(sysroot, WORKSPACE)

        # fork and exec by hand rather than through subprocess, whose imports
        # cost a cold start more than this does; the agent has no threads, so
        # the child may run Python until exec. Every descriptor the agent holds
        # is close-on-exec, so the shell inherits only 0, 1 and 2.
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.setsid()
                os.dup2(null, 0)
                os.dup2(stdout_write, 1)
                os.dup2(stderr_write, 2)
                _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
                _signal.signal(_signal.SIGXFSZ, _signal.SIG_DFL)
                if chroot:
                    os.chroot(sysroot)
                os.chdir(workspace)
                os.execve("/bin/sh", ["/bin/sh", "-c", self.command], self.environment)
            except BaseException as exc:
                reason = f"{type(exc).__name__}: {exc}".encode(errors="replace")
                os.write(error_write, reason[:1000])
            finally:
                os._exit(127)

        self.pid = pid
        for fd in (null, stdout_write, stderr_write, error_write):
            os.close(fd)
        failure = _read_all(error_read)
        os.close(error_read)
        if failure:
            os.waitpid(pid, 0)
            os.close(stdout_read)
            os.close(stderr_read)
            raise _Refused(
                ERROR_STEP_NOT_STARTED,
                f"/bin/sh could not be started: {failure.decode(errors='replace')}",
            )
        self._outputs = {
            stdout_read: MessageType.STDOUT,
            stderr_read: MessageType.STDERR,
        }

    def stream_output(self, port: Port, serve_port: Callable[[], None]) -> int:
        """Send the step's output as it comes; return its exit status.

        `serve_port()` is called when the port turns readable: the host may
        send side requests during a step; anything else, or the port hanging
        up, raises, and the caller kills the step.
        """
        poller = select.poll()
        for fd in self._outputs:
            poller.register(fd, select.POLLIN)
        poller.register(port.fd, select.POLLIN)
        exit_watch = _ExitWatch(self.pid, poller)
        try:
            self._forward_until_done(port, poller, exit_watch, serve_port)
            status = exit_watch.wait()
        finally:
            exit_watch.close()
        self.pid = 0

        code = os.waitstatus_to_exitcode(status)
        return 128 - code if code < 0 else code

    def _forward_until_done(
        self,
        port: Port,
        poller: select.poll,
        exit_watch: _ExitWatch,
        serve_port: Callable[[], None],
    ) -> None:
        """Forward output until both pipes close, or a grace period after exit."""
        output_deadline: float | None = None
        while self._outputs:
            timeout = exit_watch.poll_timeout_ms()
            if output_deadline is not None:
                left_ms = max(0, int((output_deadline - time.monotonic()) * 1000))
                timeout = left_ms if timeout is None else min(timeout, left_ms)
            events = poller.poll(timeout)

            for fd, event in events:
                if fd in self._outputs:
                    self._forward(fd, poller, port)
                elif fd == port.fd:
                    if event & select.POLLHUP:
                        raise AgentDisconnected("the host went away during the step")
                    serve_port()

            if exit_watch.exited(events) and output_deadline is None:
                output_deadline = time.monotonic() + OUTPUT_GRACE_SECONDS
            if output_deadline is not None and time.monotonic() >= output_deadline:
                log("step's background processes still hold its output; leaving it")
                break
        self._close_outputs()

    def kill(self) -> None:
        """End the step and everything it started (its session)."""
        self._close_outputs()
        if self.pid:
            try:
                os.killpg(self.pid, _signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                # Gone already: a zombie still counts for killpg, so this
                # means the step was reaped before.
                return

    def _forward(self, fd: int, poller: select.poll, port: Port) -> None:
        data = os.read(fd, CHUNK_SIZE)
        if data:
            port.send(self._outputs[fd], data)
            return
        poller.unregister(fd)
        os.close(fd)
        del self._outputs[fd]

    def _close_outputs(self) -> None:
        for fd in self._outputs:
            os.close(fd)
        self._outputs = {}


class _ExitWatch:
    """Notices the step's shell exiting: through a pidfd, or by asking now and then."""

    _POLL_MS = 100

    def __init__(self, pid: int, poller: select.poll) -> None:
        self.pid = pid
        self.status: int | None = None
        self._poller = poller
        try:
            self.pidfd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self.pidfd = None
        if self.pidfd is not None:
            poller.register(self.pidfd, select.POLLIN)

    def poll_timeout_ms(self) -> int | None:
        if self.status is not None or self.pidfd is not None:
            return None
        return self._POLL_MS

    def exited(self, events: list[tuple[int, int]]) -> bool:
        if self.status is not None:
            return True
        if self.pidfd is not None and not any(fd == self.pidfd for fd, _ in events):
            return False
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return False
        self.status = status
        if self.pidfd is not None:
            self._poller.unregister(self.pidfd)
        return True

    def wait(self) -> int:
        if self.status is None:
            _, self.status = os.waitpid(self.pid, 0)
        return self.status

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


def _startup_timing() -> str:
    """How long the guest and this process had been up, for the boot's log."""
    try:
        with open("/proc/uptime") as uptime_file:
            uptime = float(uptime_file.read().split()[0])
        with open("/proc/self/stat") as stat_file:
            # The fields after the command name, which may itself hold spaces.
            fields = stat_file.read().rpartition(")")[2].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return "start-up time unknown"
    return f"{uptime - started:.2f}s after the agent started, {uptime:.2f}s after boot"


def _read_boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as boot_id:
            return boot_id.read().strip()
    except OSError:
        return "unknown"


def _write_secret_file(directory: str, name: str, value: bytes) -> None:
    """Write <directory>/<name> mode 0400, replacing any earlier one atomically."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    final_path = os.path.join(directory, name)
    temporary_path = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    if os.path.lexists(temporary_path):  # left by an agent that died mid-write
        os.unlink(temporary_path)

    fd = os.open(
        temporary_path,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o400,
    )
    try:
        os.fchmod(fd, 0o400)
        view = memoryview(value)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        os.unlink(temporary_path)
        raise
    os.close(fd)
    os.rename(temporary_path, final_path)


def _make_undumpable() -> None:
    """Keep the secrets in this process's memory out of core dumps and ptrace.

    Best effort: a process with CAP_SYS_PTRACE can still attach.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            log("prctl(PR_SET_DUMPABLE) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError) as exc:
        log("prctl unavailable: %s", exc)


def _ensure_standard_descriptors() -> None:
    """Open /dev/null on any of fds 0-2 left closed, so no pipe lands there."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)


def main(arguments: list[str] | None = None) -> int:
    try:
        options = parse_arguments(sys.argv[1:] if arguments is None else arguments)
    except BadArguments as exc:
        sys.stderr.write(f"{USAGE}\nerror: {exc}\n")
        return 2
    if options is None:
        sys.stdout.write(USAGE)
        return 0

    _ensure_standard_descriptors()
    try:
        port = open_port(options)
    except OSError as exc:
        log("cannot open the port %s: %s", options.port, exc)
        return 1

    agent = Agent(port, options)
    try:
        return agent.serve()
    except AgentDisconnected:
        return 0
    except OSError as exc:
        log("the port failed: %s", exc)
        return 1
    finally:
        port.close()


if __name__ == "__main__":
    sys.exit(main())
