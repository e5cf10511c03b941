"""The QEMU `microvm` backend: one QEMU process per VM, driven over QMP, with the
guest agent reached through a virtio-serial port on a unix socket.

Everything the VM leaves on the host lives in its run directory: the QMP and
agent sockets, and the copy-on-write overlay QEMU makes for a writable disk
(`snapshot=on` puts it in $TMPDIR, which points there).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from qemu.qmp import QMPClient, QMPError

from devdep.guest.client import AgentClient
from devdep.guest.protocol import (
    AgentError,
    AgentHello,
    AgentTimeout,
    ProtocolVersionMismatch,
)
from devdep.images.boot import BootSpec
from devdep.vmm.accel import QEMU_BINARY, Acceleration
from devdep.vmm.backend import (
    VmBackend,
    VmLaunchFailed,
    VmNotReady,
    VmState,
    VmStateError,
)
from devdep.vmm.console import DEFAULT_CAPACITY, PipeReader, RingBuffer

logger = logging.getLogger(__name__)

# x-option-roms=off: the kernel is booted directly through PVH, so the
# firmware needs no option ROM to load it. Under TCG it measured neutral;
# turning the legacy PIT and PIC off gained nothing, and rtc=off cost two
# seconds and leaves the guest's clock in 1970, where TLS certificates fail.
# docs/performance.md has the measurements.
MICROVM_MACHINE = "microvm,x-option-roms=off"

# The seccomp filter forbids what a QEMU that runs one guest never needs:
# obsolete system calls, setuid and friends, fork/exec, and changing its own
# scheduling or resource limits.
SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

QMP_SOCKET = "qmp.sock"
AGENT_SOCKET = "agent.sock"
_LAUNCH_TIMEOUT = 10.0  # QEMU itself, not the guest: it starts in milliseconds
_QMP_COMMAND_TIMEOUT = 5.0
_STDERR_CAPACITY = 64 * 1024
_TAIL_LINES = 40
_UNIX_PATH_MAX = 108
# Vault credentials devdep may have been given: QEMU has no use for them, and a
# process's environment is readable in /proc by every process of its user.
_CREDENTIAL_VARIABLES = frozenset(
    {
        "DEVDEP_VAULT_TOKEN",
        "VAULT_TOKEN",
        "DEVDEP_VAULT_ROLE_ID",
        "DEVDEP_VAULT_SECRET_ID",
    }
)


@functools.cache
def sandbox_supported(binary: str) -> bool:
    """Whether this QEMU was built with seccomp (`-sandbox` in its help)."""
    try:
        completed = subprocess.run(
            [binary, "-help"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return "-sandbox" in completed.stdout


@dataclass(frozen=True)
class VmResources:
    vcpus: int
    memory_mb: int


@dataclass(frozen=True)
class VmNetwork:
    """How the QEMU process joins its run's network: `command_prefix` starts it
    inside the run's network namespace, and `arguments` are its NIC (none: the
    VM has no network device). QMP and the agent's port are unix sockets in the
    run directory and the console is a pipe: a network namespace affects none
    of them."""

    command_prefix: tuple[str, ...] = ()
    arguments: tuple[str, ...] = ()


def qemu_command(
    spec: BootSpec,
    *,
    run_dir: Path,
    resources: VmResources,
    acceleration: Acceleration,
    binary: str = QEMU_BINARY,
    sandbox: bool = True,
) -> list[str]:
    """The QEMU command line that boots `spec` in `run_dir`."""
    if acceleration is Acceleration.NONE:
        raise ValueError("cannot build a QEMU command without an accelerator")
    command = [
        binary,
        "-M",
        MICROVM_MACHINE,
        "-accel",
        acceleration.value,
        *(["-cpu", "host"] if acceleration is Acceleration.KVM else []),
        "-smp",
        str(resources.vcpus),
        "-m",
        f"{resources.memory_mb}M",
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
        "-nographic",
    ]
    if sandbox:
        command += ["-sandbox", SANDBOX]
    command += [
        "-kernel",
        str(spec.kernel),
        "-initrd",
        str(spec.initramfs),
        "-append",
        guest_command_line(spec.command_line, acceleration),
        # The console goes to QEMU's stdout, a pipe the host reads into a ring
        # buffer; signal=off keeps a stray ^C on it from reaching QEMU.
        "-chardev",
        "stdio,id=console,signal=off",
        "-serial",
        "chardev:console",
        "-qmp",
        f"unix:{run_dir / QMP_SOCKET},server=on,wait=off",
        "-chardev",
        f"socket,id=agent,path={run_dir / AGENT_SOCKET},server=on,wait=off",
        "-device",
        "virtio-serial-device",
        "-device",
        f"virtserialport,chardev=agent,name={spec.agent_port_name}",
    ]
    for index, disk in enumerate(spec.disks):
        # format=raw: never let QEMU probe a format from bytes the user controls.
        mode = "readonly=on" if disk.read_only else "snapshot=on"
        command += [
            "-drive",
            f"id=disk{index},file={_escape(str(disk.path))},format=raw,if=none,{mode}",
            "-device",
            f"virtio-blk-device,drive=disk{index}",
        ]
    return command


def guest_command_line(command_line: str, acceleration: Acceleration) -> str:
    """The kernel command line, with what the accelerator needs added.

    Under TCG the guest calibrates its TSC against the emulated PIT. On a busy
    host that calibration fails, the kernel is left without a working clock and
    hangs early in boot with its timestamps stuck at 0.000000 (QEMU 7.2, Linux
    6.1). Telling it the TSC frequency skips the calibration.
    """
    if acceleration is not Acceleration.TCG or "tsc_early_khz=" in command_line:
        return command_line
    return f"{command_line} tsc_early_khz={host_tsc_khz()}"


@functools.cache
def host_tsc_khz(cpuinfo: Path = Path("/proc/cpuinfo")) -> int:
    """The host CPU's clock in kHz, which TCG's guest TSC runs at."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("cpu MHz"):
                return round(float(line.split(":", 1)[1]) * 1000)
    except (OSError, ValueError):
        pass
    return 2_000_000


def _escape(value: str) -> str:
    """Escape a value for QEMU's comma-separated option syntax."""
    return value.replace(",", ",,")


class QemuVm(VmBackend):
    """One QEMU microvm: launch, wait_ready, then shutdown or kill.

    Methods are called from the thread that launched the VM, except `kill`,
    which a watchdog may call from another thread to end a run at its deadline.
    """

    def __init__(
        self,
        spec: BootSpec,
        *,
        run_dir: Path,
        resources: VmResources,
        acceleration: Acceleration,
        binary: str | None = None,
        console_capacity: int = DEFAULT_CAPACITY,
        network: VmNetwork | None = None,
    ) -> None:
        self.spec = spec
        self.network = network or VmNetwork()
        self.run_dir = run_dir
        self.resources = resources
        self.acceleration = acceleration
        self.binary = binary or shutil.which(QEMU_BINARY) or QEMU_BINARY
        self.console = RingBuffer(console_capacity)
        self._stderr = RingBuffer(_STDERR_CAPACITY)
        self._state = VmState.CREATED
        self._owner_thread = threading.get_ident()
        self._state_lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._readers: list[PipeReader] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._qmp: QMPClient | None = None
        self._agent_socket: socket.socket | None = None
        self._agent: AgentClient | None = None
        self.command: list[str] = []
        self.launched_at: float | None = None
        self.ready_at: float | None = None

    # --- state ---------------------------------------------------------------

    @property
    def state(self) -> VmState:
        return self._state

    def _require(self, method: str, *needed: VmState) -> None:
        if self._state not in needed:
            raise VmStateError(method, needed, self._state)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def boot_seconds(self) -> float | None:
        """From launch to the agent's hello."""
        if self.launched_at is None or self.ready_at is None:
            return None
        return self.ready_at - self.launched_at

    # --- launch ----------------------------------------------------------------

    def launch(self) -> None:
        self._require("launch", VmState.CREATED)
        self.command = qemu_command(
            self.spec,
            run_dir=self.run_dir,
            resources=self.resources,
            acceleration=self.acceleration,
            binary=self.binary,
            sandbox=sandbox_supported(self.binary),
        )
        self.command += self.network.arguments
        logger.debug("launching: %s", " ".join(self.command))
        self._owner_thread = threading.get_ident()
        longest = self.run_dir / AGENT_SOCKET
        if len(os.fsencode(longest)) >= _UNIX_PATH_MAX:
            # sun_path holds 108 bytes; QEMU and the host would both fail later
            # with a less telling error.
            raise VmLaunchFailed(
                f"the run directory {self.run_dir} is too long for a unix socket "
                f"path ({_UNIX_PATH_MAX} bytes at most)",
                command=self.command,
                exit_code=None,
                output_tail=[],
            )
        if shutil.which(self.binary) is None:
            self._state = VmState.STOPPED
            raise VmLaunchFailed(
                f"cannot start {self.binary}: not found or not executable",
                command=self.command,
                exit_code=None,
                output_tail=[],
            )

        console_read, console_write = os.pipe()
        stderr_read, stderr_write = os.pipe()
        self.launched_at = time.monotonic()
        try:
            self._process = subprocess.Popen(
                _with_parent_death_signal(
                    [*self.network.command_prefix, *self.command]
                ),
                stdin=subprocess.DEVNULL,
                stdout=console_write,
                stderr=stderr_write,
                cwd=self.run_dir,
                env={
                    **{
                        name: value
                        for name, value in os.environ.items()
                        if name not in _CREDENTIAL_VARIABLES
                    },
                    "TMPDIR": str(self.run_dir),
                },
                # Its own session: a ^C on the terminal reaches devdep, which
                # tears the VM down in order, and not QEMU directly.
                start_new_session=True,
            )
        except OSError as exc:
            for descriptor in (console_read, console_write, stderr_read, stderr_write):
                os.close(descriptor)
            raise VmLaunchFailed(
                f"cannot start {self.binary}: {exc.strerror or exc}",
                command=self.command,
                exit_code=None,
                output_tail=[],
            ) from exc
        finally:
            if self._process is not None:
                os.close(console_write)
                os.close(stderr_write)
        self._state = VmState.UP

        self._readers = [
            PipeReader(console_read, self.console, f"vm-console-{self.pid}"),
            PipeReader(stderr_read, self._stderr, f"vm-stderr-{self.pid}"),
        ]
        for reader in self._readers:
            reader.start()

        self._connect_qmp()
        self._agent_socket = self._connect_unix(self.run_dir / AGENT_SOCKET)
        logger.debug("up: pid %s", self.pid)

    def _launch_failed(self, message: str, cause: BaseException | None) -> None:
        exit_code = self._process.poll() if self._process else None
        self.kill()
        tail = self._stderr.tail(_TAIL_LINES) + self.console.tail(_TAIL_LINES)
        raise VmLaunchFailed(
            message, command=self.command, exit_code=exit_code, output_tail=tail
        ) from cause

    def _connect_unix(self, path: Path) -> socket.socket:
        """Connect to a socket QEMU serves, retrying until it exists or QEMU dies."""
        deadline = time.monotonic() + _LAUNCH_TIMEOUT
        last_error: OSError | None = None
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                break
            connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                connection.connect(str(path))
            except OSError as exc:
                connection.close()
                last_error = exc
                time.sleep(0.005)
                continue
            return connection
        if self._process is not None and self._process.poll() is not None:
            message = f"QEMU exited with code {self._process.returncode} at launch"
        else:
            message = f"QEMU did not open {path.name} within {_LAUNCH_TIMEOUT:g}s"
        self._launch_failed(message, last_error)
        raise AssertionError("unreachable")  # _launch_failed always raises

    def _connect_qmp(self) -> None:
        # The QMP socket is opened first, so the agent socket is there as soon
        # as QMP answers; a QEMU that rejects its command line exits before.
        qmp_socket = self._connect_unix(self.run_dir / QMP_SOCKET)
        self._loop = asyncio.new_event_loop()
        self._qmp = QMPClient(f"devdep-vm-{self.pid}")
        try:
            self._loop.run_until_complete(
                asyncio.wait_for(self._qmp.connect(qmp_socket), _LAUNCH_TIMEOUT)
            )
        except (QMPError, OSError, EOFError, TimeoutError) as exc:
            self._launch_failed("QEMU's monitor (QMP) did not answer", exc)

    def _qmp_execute(self, command: str) -> object:
        if self._qmp is None or self._loop is None:
            raise VmStateError(
                f"qmp:{command}", (VmState.UP, VmState.READY), self._state
            )
        return self._loop.run_until_complete(
            asyncio.wait_for(self._qmp.execute(command), _QMP_COMMAND_TIMEOUT)
        )

    def query_status(self) -> str:
        """QEMU's own view of the guest: "running", "shutdown", ..."""
        self._require("query_status", VmState.UP, VmState.READY)
        result = self._qmp_execute("query-status")
        return str(result["status"]) if isinstance(result, dict) else "unknown"

    # --- ready -------------------------------------------------------------------

    def wait_ready(self, timeout: float) -> AgentHello:
        self._require("wait_ready", VmState.UP)
        assert self._agent_socket is not None
        agent = AgentClient(self._agent_socket)
        try:
            hello = agent.wait_ready(timeout)
        except AgentTimeout as exc:
            raise self._not_ready(
                f"the guest agent did not report ready within {timeout:g}s"
            ) from exc
        except ProtocolVersionMismatch as exc:
            raise self._not_ready(
                f"the guest agent speaks another protocol: {exc}"
            ) from exc
        except (AgentError, OSError) as exc:
            raise self._not_ready(
                f"the guest ended its agent connection before it was ready: {exc}"
            ) from exc
        self._agent = agent
        self.ready_at = time.monotonic()
        self._state = VmState.READY
        logger.debug("ready after %.2fs: %s", self.boot_seconds or 0.0, hello)
        return hello

    def _not_ready(self, message: str) -> VmNotReady:
        # Stop first: the console tail is complete only once QEMU has exited.
        self.kill()
        tail = self.console.tail(_TAIL_LINES) or ["(the guest printed nothing)"]
        return VmNotReady(message, console_tail=tail + self._stderr.tail(5))

    @property
    def agent(self) -> AgentClient:
        self._require("agent", VmState.READY)
        assert self._agent is not None
        return self._agent

    def console_tail(self, lines: int = _TAIL_LINES) -> list[str]:
        return self.console.tail(lines)

    # --- stop --------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> int | None:
        self._require("wait", VmState.UP, VmState.READY, VmState.STOPPED)
        assert self._process is not None
        try:
            code = self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._release()
        return code

    def shutdown(self, timeout: float) -> None:
        """Ask nicely (the agent if ready, else ACPI), then QMP quit, then kill."""
        if self._state in (VmState.CREATED, VmState.STOPPED):
            self._release()
            return
        deadline = time.monotonic() + timeout
        try:
            if self._state is VmState.READY and self._agent is not None:
                self._agent.poweroff()
            else:
                self._qmp_execute("system_powerdown")
        except Exception as exc:  # any failure here means: force it
            logger.debug("polite power-off failed: %s", exc)
        if self.wait(max(0.0, (deadline - time.monotonic()) / 2)) is not None:
            return
        try:
            self._qmp_execute("quit")
        except Exception as exc:
            logger.debug("QMP quit failed: %s", exc)
        if self.wait(max(0.0, deadline - time.monotonic())) is None:
            logger.debug("QEMU ignored quit; killing it")
            self.kill()

    def kill(self) -> None:
        """SIGKILL the QEMU process; any thread may call it."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            logger.debug("killed QEMU pid %s", process.pid)
        if threading.get_ident() == self._owner_thread or self._loop is None:
            self._release()
        else:
            # The event loop belongs to the launching thread; that thread
            # releases the rest once it sees the VM stopped.
            with self._state_lock:
                self._state = VmState.STOPPED

    def _release(self) -> None:
        """Free everything the VM held on the host, once its process is gone."""
        with self._state_lock:
            if self._process is not None and self._process.poll() is None:
                return
            self._state = VmState.STOPPED
        if self._agent_socket is not None:
            self._agent_socket.close()
            self._agent_socket = None
        if self._qmp is not None and self._loop is not None:
            try:
                self._loop.run_until_complete(self._qmp.disconnect())
            except (QMPError, OSError, EOFError) as exc:
                # EOFError: QEMU hung up first, as it does once it has quit.
                logger.debug("QMP disconnect: %r", exc)
            self._qmp = None
        if self._loop is not None:
            self._loop.close()
            self._loop = None
        for reader in self._readers:
            reader.join(timeout=2.0)
        self._readers = []
        for name in (QMP_SOCKET, AGENT_SOCKET):
            (self.run_dir / name).unlink(missing_ok=True)


def _with_parent_death_signal(command: Sequence[str]) -> list[str]:
    """Prefix `setpriv --pdeathsig KILL`, so QEMU dies with devdep even when devdep
    is SIGKILLed and cannot tear down.

    The death signal fires when the *thread* that forked QEMU exits, so VMs are
    launched from the thread that lives as long as the run.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        logger.warning("setpriv not found: QEMU will outlive a SIGKILLed devdep")
        return list(command)
    return [setpriv, "--pdeathsig", "KILL", "--", *command]
