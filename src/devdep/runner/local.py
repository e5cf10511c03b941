"""The host agent run in-process by `deploy --local`: each runtime of a pipeline
in its own fresh micro-VM, one after another, through three timed hooks.

    preflight       every runtime's image resolved and the workspace measured,
                    before any VM starts (a missing image or an oversized
                    workspace is a usage error, exit 2)
    pre_bootstrap   host: verify image digests, create the run directory,
                    attach the network, fetch secrets
    (boot)          launch the VM and wait for its agent's hello
    run_command     guest: upload the workspace and secrets, run the steps,
                    fetch the artifacts
    post_teardown   host, always: stop the VM, remove the run directory, write
                    the run summary

The pipeline deadline (`--timeout`, and each runtime's own `timeout`) is kept
by a watchdog thread that kills the VM; the blocked call then fails and the run
ends as timed out. SIGTERM and SIGHUP become an exception like Ctrl-C, so
post_teardown runs in every case but SIGKILL, where QEMU's parent-death signal
takes the VM down with us.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import BinaryIO, Protocol

from devdep.config.loader import LoadedConfig
from devdep.config.schema import Runtime
from devdep.errors import DevdepError, JobFailed, UsageError, VmBootFailed
from devdep.guest.archive import extract_archive
from devdep.guest.protocol import AgentHello, ArchiveError
from devdep.images.boot import BootSpec
from devdep.runner import paths
from devdep.runner.network import NetworkSettings, RuntimeNetwork
from devdep.runner.secrets import OutputStreams, RunSecrets
from devdep.runner.workspace import DEFAULT_SIZE_LIMIT, Workspace, collect_workspace
from devdep.telemetry.digests import DigestCache, sha384_bytes, sha384_file
from devdep.telemetry.summary import RunSummary, RuntimeRecord, StepRecord
from devdep.vmm.accel import Acceleration, cached_acceleration
from devdep.vmm.backend import VmBackend, VmState
from devdep.vmm.qemu import QemuVm, VmNetwork, VmResources

logger = logging.getLogger(__name__)

HOOKS = ("pre_bootstrap", "run_command", "post_teardown")
DEFAULT_BOOT_TIMEOUT = 120.0  # TCG on a busy 2-core host boots in ~5s; KVM in <1s
SHUTDOWN_TIMEOUT = 5.0
MAX_LOG_BYTES = 64 * 1024 * 1024
DIGEST_NAMES = ("kernel", "initramfs", "rootfs", "agent")


# --- errors --------------------------------------------------------------------


class StepFailed(JobFailed):
    def __init__(self, runtime: str, index: int, command: str, status: int) -> None:
        first_line = command.strip().splitlines()[0] if command.strip() else command
        super().__init__(
            f"step {index} of runtime {runtime!r} failed with exit status {status}: "
            f"{first_line}",
            hint="its output is above; the steps after it did not run",
        )
        self.exit_status = status


class RunTimedOut(JobFailed):
    def __init__(self, runtime: str, limit: timedelta, source: str) -> None:
        super().__init__(
            f"runtime {runtime!r} timed out after {_seconds(limit)} ({source}); "
            "its VM was killed",
            hint="raise the runtime's 'timeout' in devdep.yaml or deploy --timeout",
        )


class ImageDigestMismatch(VmBootFailed):
    """An image file is not the one the store recorded: refuse to boot it."""


class ArtifactsRefused(JobFailed):
    """The guest's artifact archive held something unsafe to unpack on the host."""


class AgentLost(VmBootFailed):
    """The guest's agent connection broke while a step ran."""


class RunTerminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread so teardown runs as for
    Ctrl-C."""


def _seconds(duration: timedelta) -> str:
    return f"{duration.total_seconds():g}s"


# --- seams ---------------------------------------------------------------------


class BootSpecSource(Protocol):
    """Where boot specs come from: the image store, or a test's variant of it."""

    def boot_spec(self, base_os: str, *, read_only_rootfs: bool) -> BootSpec: ...


class RunObserver(Protocol):
    """What the runner tells the person (or program) watching it."""

    def phase(self, description: str) -> None: ...

    def ready(self, runtime: str, hello: AgentHello, boot_seconds: float) -> None: ...

    def step_started(
        self, runtime: str, index: int, count: int, command: str
    ) -> None: ...

    def output(self, runtime: str, index: int, stream: str, chunk: bytes) -> None: ...

    def step_finished(self, runtime: str, index: int, status: int) -> None: ...


VmFactory = Callable[[BootSpec, Path, Runtime, Acceleration, VmNetwork], VmBackend]


def qemu_vm_factory(
    spec: BootSpec,
    run_dir: Path,
    runtime: Runtime,
    acceleration: Acceleration,
    network: VmNetwork,
) -> VmBackend:
    return QemuVm(
        spec,
        run_dir=run_dir,
        resources=VmResources(runtime.vm_vcpus, runtime.vm_memory_mb),
        acceleration=acceleration,
        network=network,
    )


@dataclass
class RunOptions:
    environment: str
    workspace: Path
    artifacts_root: Path
    timeout: timedelta | None = None
    boot_timeout: float = DEFAULT_BOOT_TIMEOUT
    workspace_limit: int = DEFAULT_SIZE_LIMIT
    state_dir: Path = field(default_factory=paths.state_dir)
    run_id: str = field(default_factory=paths.new_run_id)


# --- the run -------------------------------------------------------------------


class _RunLog:
    """The run's log file: lifecycle lines and every step's output, capped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: BinaryIO = path.open("wb")
        self._written = 0
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        stamp = datetime.now(UTC).strftime("%H:%M:%S.%f")[:-3]
        self.write(f"[{stamp}] {text}\n".encode())

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._handle.closed or self._written >= MAX_LOG_BYTES:
                return
            room = MAX_LOG_BYTES - self._written
            self._handle.write(data[:room])
            self._written += min(len(data), room)
            if self._written >= MAX_LOG_BYTES:
                self._handle.write(b"\n[log truncated: size limit reached]\n")

    def close(self) -> None:
        with self._lock:
            self._handle.close()


class LocalRunner:
    """Runs one pipeline on this host; `run` returns or raises once every VM of
    the run is gone and its summary is written."""

    def __init__(
        self,
        loaded: LoadedConfig,
        images: BootSpecSource,
        observer: RunObserver,
        options: RunOptions,
        *,
        vm_factory: VmFactory = qemu_vm_factory,
        network_settings: NetworkSettings | None = None,
    ) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.images = images
        self.observer = observer
        self.options = options
        self.vm_factory = vm_factory
        self.network_settings = network_settings or NetworkSettings.from_environment()
        self._network: RuntimeNetwork | None = None
        self.run_id = options.run_id
        self.log = logging.getLogger(f"devdep.runner.{self.run_id}")
        self.run_dir = paths.runs_dir(options.state_dir) / self.run_id
        self.reports_dir = paths.reports_dir(options.state_dir)
        self.summary = RunSummary(
            run_id=self.run_id,
            environment=options.environment,
            config_path=loaded.filename,
            acceleration="unknown",
            started_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
        )
        self._deadline: float | None = None
        self._timed_out = threading.Event()
        self.acceleration = Acceleration.NONE
        self._run_log: _RunLog | None = None
        self.secrets = RunSecrets(
            self.config.pipeline.secrets, self.run_id, note=self._log_line
        )

    def run(self) -> RunSummary:
        if self.config.metadata.environment != self.options.environment:
            raise UsageError(
                f"--env={self.options.environment} does not match the pipeline's "
                f"environment {self.config.metadata.environment!r}",
                hint=f"run with --env={self.config.metadata.environment}",
            )
        if self.options.timeout is not None:
            self._deadline = time.monotonic() + self.options.timeout.total_seconds()
        with _sigterm_raises():
            try:
                specs, workspace = self._preflight()
                self._run_log = _RunLog(self.reports_dir / f"{self.run_id}.log")
                self.summary.log_path = str(self._run_log.path)
                self._run_log.line(f"run {self.run_id} of {self.loaded.filename}")
                for runtime in self.config.pipeline.runtimes:
                    self._run_runtime(runtime, specs[runtime.name], workspace)
                self.summary.outcome = "succeeded"
            except RunTimedOut as error:
                self._finish("timed-out", error)
                raise
            except DevdepError as error:
                self._finish("failed", error)
                raise
            except KeyboardInterrupt as error:
                self._finish("interrupted", error)
                raise
            except BaseException as error:
                self._finish("failed", error)
                raise
            finally:
                self._close()
        return self.summary

    def _finish(self, outcome: str, error: BaseException) -> None:
        # Before the error is stored or shown: its details may hold a guest
        # console's last lines.
        self.secrets.redact_error(error)
        self.summary.outcome = outcome
        message = getattr(error, "message", None) or str(error) or type(error).__name__
        self.summary.error = message
        if self._run_log is not None:
            self._run_log.line(f"run {outcome}: {message}")

    def _close(self) -> None:
        """The end of every run: the run directory gone, the summary written."""
        with _DeferredSignals():
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.summary.finished_at = datetime.now(UTC).isoformat(
                timespec="milliseconds"
            )
            if self._run_log is not None:
                self._run_log.close()
                self.summary.log_sha384 = sha384_file(self._run_log.path)
            if self.summary.acceleration != "unknown" or self.summary.runtimes:
                self.secrets.scrub(self.summary)
                path = self.summary.write(self.reports_dir)
                self.log.info("summary written to %s", path)
            self.secrets.close()

    # --- preflight -----------------------------------------------------------

    def _preflight(self) -> tuple[dict[str, BootSpec], Workspace]:
        self.observer.phase("checking images")
        specs = {
            runtime.name: self.images.boot_spec(
                runtime.base_os, read_only_rootfs=runtime.sandbox.read_only_rootfs
            )
            for runtime in self.config.pipeline.runtimes
        }
        self.secrets.preflight(len(self.config.pipeline.runtimes))

        self.observer.phase("measuring the workspace")
        workspace = collect_workspace(
            self.options.workspace, size_limit=self.options.workspace_limit
        )

        report = cached_acceleration(
            paths.host_dir(self.options.state_dir) / "acceleration.json"
        )
        if report.acceleration is Acceleration.NONE:
            raise VmBootFailed(
                f"no VM can be started: {report.reason}",
                hint="install QEMU: apt-get install qemu-system-x86",
            )
        self.acceleration = report.acceleration
        self.summary.acceleration = report.acceleration.value
        config_file = Path(self.loaded.filename)
        if config_file.is_file():
            self.summary.config_path = str(config_file.resolve())
            self.summary.config_sha384 = sha384_file(config_file)
        else:
            # Parsed from text that never was a file: digest what was parsed.
            canonical = self.config.model_dump_json().encode()
            self.summary.config_sha384 = sha384_bytes(canonical)
        return specs, workspace

    # --- one runtime -----------------------------------------------------------

    @contextlib.contextmanager
    def _hook(self, record: RuntimeRecord, hook: str) -> Iterator[None]:
        started = time.monotonic()
        self._log_line(f"{record.name}: {hook} started")
        try:
            yield
        finally:
            seconds = time.monotonic() - started
            record.hooks[hook] = round(seconds, 3)
            self.log.info("runtime %s: %s took %.3fs", record.name, hook, seconds)
            self._log_line(f"{record.name}: {hook} took {seconds:.3f}s")

    def _log_line(self, text: str) -> None:
        if self._run_log is not None:
            self._run_log.line(self.secrets.redact_text(text))

    def _run_runtime(
        self, runtime: Runtime, spec: BootSpec, workspace: Workspace
    ) -> None:
        record = RuntimeRecord(
            runtime.name, runtime.base_os, runtime.vm_vcpus, runtime.vm_memory_mb
        )
        self.summary.runtimes.append(record)
        runtime_dir = self.run_dir / runtime.name
        vm: VmBackend | None = None
        watchdog: threading.Timer | None = None
        completed = False
        try:
            with self._hook(record, "pre_bootstrap"):
                self._pre_bootstrap(runtime, spec, record, runtime_dir)
                archive = self._write_workspace(workspace, runtime_dir)

            limit, source = self._limit_for(runtime)
            if limit.total_seconds() <= 0:
                raise RunTimedOut(runtime.name, self.options.timeout or limit, source)
            network = self._network
            assert network is not None  # made by pre_bootstrap
            vm = self.vm_factory(
                network.boot_spec(spec),
                runtime_dir,
                runtime,
                self.acceleration,
                network.vm_network(),
            )
            network.stop_at_first_violation(vm)
            watchdog = threading.Timer(limit.total_seconds(), self._time_out, (vm,))
            watchdog.daemon = True
            watchdog.start()

            try:
                self._boot(runtime, vm, record)
                with self._hook(record, "run_command"):
                    self._run_command(runtime, vm, archive, record)
            except DevdepError as error:
                if self._timed_out.is_set():
                    raise RunTimedOut(runtime.name, limit, source) from error
                violation = network.violation_error()
                if violation is not None:
                    # The VM was stopped at a violation: that is why it failed.
                    raise violation from error
                raise
            # A violation the VM outran (its last packets, as its steps ended)
            # still fails the run.
            violation = network.violation_error()
            if violation is not None:
                raise violation
            completed = True
        finally:
            if watchdog is not None:
                watchdog.cancel()
            with _DeferredSignals(), self._hook(record, "post_teardown"):
                self._post_teardown(vm, runtime_dir, graceful=completed)
                self._close_network(record)
                # The VM is dead: nothing can ask for a value any more.
                self.secrets.close_session()
                self.secrets.scrub(self.summary)
                self.summary.write(self.reports_dir)

    def _close_network(self, record: RuntimeRecord) -> None:
        """After the VM is dead: the sandbox removed, its violations recorded."""
        network, self._network = self._network, None
        if network is not None:
            network.close()
            record.network = network.report()

    def _limit_for(self, runtime: Runtime) -> tuple[timedelta, str]:
        limit, source = runtime.timeout, "the runtime's timeout"
        if self._deadline is not None:
            remaining = timedelta(seconds=self._deadline - time.monotonic())
            if remaining < limit:
                limit, source = remaining, "deploy --timeout"
        return limit, source

    def _time_out(self, vm: VmBackend) -> None:
        self._timed_out.set()
        self.log.info("deadline reached: killing the VM")
        vm.kill()

    def _pre_bootstrap(
        self, runtime: Runtime, spec: BootSpec, record: RuntimeRecord, runtime_dir: Path
    ) -> None:
        self.observer.phase(f"verifying the images of {runtime.name}")
        record.digests = self._verify_digests(spec)

        runtime_dir.mkdir(parents=True, mode=0o700)
        # Fails closed: without its egress policy in place, no VM boots.
        self._network = RuntimeNetwork.open(self.run_id, runtime, self.network_settings)

        self.observer.phase(f"resolving the secrets of {runtime.name}")
        self.secrets.open(runtime.name, self._limit_for(runtime)[0])
        self.summary.secret_names = sorted(self.secrets.names)

    def _verify_digests(self, spec: BootSpec) -> dict[str, str]:
        files = {"kernel": spec.kernel, "initramfs": spec.initramfs}
        if spec.disks:
            files["rootfs"] = spec.disks[0].path
        if len(spec.disks) > 1:
            files["agent"] = spec.disks[1].path
        cache = DigestCache(paths.host_dir(self.options.state_dir) / "digests.json")
        measured: dict[str, str] = {}
        try:
            for name, path in files.items():
                try:
                    measured[name] = cache.sha384(path)
                except OSError as exc:
                    raise ImageDigestMismatch(
                        f"cannot read the {name} image {path}: {exc.strerror or exc}"
                    ) from exc
                expected = spec.digests.get(name)
                if expected is None:
                    raise ImageDigestMismatch(
                        f"the image store recorded no SHA-384 for the {name} {path}"
                    )
                if expected.lower() != measured[name]:
                    raise ImageDigestMismatch(
                        f"the {name} {path} does not match its recorded SHA-384",
                        hint="the file changed after it was stored; rebuild it "
                        "with devdep-cli image",
                        details=[f"recorded {expected}", f"found    {measured[name]}"],
                    )
        finally:
            cache.save()
        return measured

    def _write_workspace(self, workspace: Workspace, runtime_dir: Path) -> Path:
        archive = runtime_dir / "workspace.tar"
        with archive.open("wb") as handle:
            workspace.write_tar(handle)
        return archive

    def _boot(self, runtime: Runtime, vm: VmBackend, record: RuntimeRecord) -> None:
        self.observer.phase(f"booting {runtime.name}")
        started = time.monotonic()
        vm.launch()
        hello = vm.wait_ready(self.options.boot_timeout)
        record.boot_seconds = round(time.monotonic() - started, 3)
        record.kernel_release = hello.kernel_release
        self.log.info("runtime %s: ready in %.3fs", runtime.name, record.boot_seconds)
        self._log_line(
            f"{runtime.name}: guest ready in {record.boot_seconds:.3f}s, "
            f"kernel {hello.kernel_release}"
        )
        self.observer.ready(runtime.name, hello, record.boot_seconds)

    def _run_command(
        self,
        runtime: Runtime,
        vm: VmBackend,
        archive: Path,
        record: RuntimeRecord,
    ) -> None:
        agent = vm.agent
        try:
            # The secrets first: nothing of the job's is in the guest before them.
            self.secrets.deliver(agent)
            with archive.open("rb") as handle:
                agent.put_workspace(handle)
        except Exception as error:
            raise self._agent_lost(
                runtime, vm, "uploading the workspace", error
            ) from error

        count = len(runtime.run_command)
        env = {"DEVDEP_RUN_ID": self.run_id, "DEVDEP_RUNTIME": runtime.name}
        for index, command in enumerate(runtime.run_command, start=1):
            step = StepRecord(runtime.name, index, command)
            self.summary.steps.append(step)
            self.observer.step_started(runtime.name, index, count, command)
            self._log_line(f"{runtime.name}: step {index}/{count}: {command}")
            started = time.monotonic()

            def emit(stream: str, chunk: bytes, index: int = index) -> None:
                if self._run_log is not None:
                    self._run_log.write(chunk)
                self.observer.output(runtime.name, index, stream, chunk)

            # Step output reaches `emit`, the one way out, only redacted.
            streams = self.secrets.output_streams()

            def on_output(
                stream: str, chunk: bytes, streams: OutputStreams = streams
            ) -> None:
                if redacted := streams.feed(stream, chunk):
                    emit(stream, redacted)

            try:
                status = agent.run_step(command, env, on_output)
            except Exception as error:
                raise self._agent_lost(runtime, vm, f"step {index}", error) from error
            finally:
                for stream, rest in streams.flush():
                    emit(stream, rest)
            step.exit_status = status
            step.seconds = round(time.monotonic() - started, 3)
            self._log_line(f"{runtime.name}: step {index} exited {status}")
            self.observer.step_finished(runtime.name, index, status)
            if status != 0:
                raise StepFailed(runtime.name, index, command, status)

        if runtime.artifacts:
            record.missing_artifacts = self._fetch_artifacts(
                runtime, vm, archive.parent
            )

    def _agent_lost(
        self, runtime: Runtime, vm: VmBackend, during: str, error: BaseException
    ) -> DevdepError:
        if isinstance(error, DevdepError):
            return error
        return AgentLost(
            f"runtime {runtime.name!r}: the guest agent was lost during {during}: "
            f"{error}",
            details=["guest console (last lines):", *vm.console_tail()],
        )

    def _fetch_artifacts(
        self, runtime: Runtime, vm: VmBackend, runtime_dir: Path
    ) -> list[str]:
        destination = self.options.artifacts_root / self.run_id
        archive = runtime_dir / "artifacts.tar"
        try:
            with archive.open("w+b") as handle:
                missing = vm.agent.get_artifacts(list(runtime.artifacts), handle)
                handle.seek(0)
                destination.mkdir(parents=True, exist_ok=True)
                # The guest wrote this archive: extract_archive refuses absolute
                # paths, '..', links leading out and device files.
                extract_archive(handle, str(destination))
        except ArchiveError as error:
            raise ArtifactsRefused(
                f"runtime {runtime.name!r}: the artifacts the guest sent were "
                f"refused: {error}"
            ) from error
        except Exception as error:
            raise self._agent_lost(runtime, vm, "fetching artifacts", error) from error
        self.summary.artifacts_dir = str(destination)
        for path in missing:
            self.log.warning(
                "runtime %s: artifact %s was not found", runtime.name, path
            )
            self._log_line(f"{runtime.name}: artifact {path} not found")
        return missing

    def _post_teardown(
        self, vm: VmBackend | None, runtime_dir: Path, *, graceful: bool
    ) -> None:
        # Order: the VM first, since QEMU holds files in the run directory open
        # (the disk overlays); then the directory itself. After a failure the
        # guest is not asked to power off: its agent may be mid-step or gone,
        # and its disks are read-only or throw-away overlays with nothing to
        # flush, so waiting for it would only delay the teardown.
        if vm is not None:
            if graceful and vm.state is VmState.READY:
                vm.shutdown(SHUTDOWN_TIMEOUT)
            vm.kill()  # also releases sockets and threads; safe when stopped
        shutil.rmtree(runtime_dir, ignore_errors=True)


# --- signals -------------------------------------------------------------------


# SIGHUP too: a closed terminal must tear the run down like Ctrl-C does.
_TERMINATING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While running, SIGTERM and SIGHUP raise RunTerminated in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise RunTerminated(f"signal {signum}")

    previous = {
        signum: signal.signal(signum, handler) for signum in _TERMINATING_SIGNALS
    }
    try:
        yield
    finally:
        for signum, earlier in previous.items():
            signal.signal(signum, earlier)


class _DeferredSignals:
    """Hold Ctrl-C and SIGTERM off until teardown is done, then act on them.

    Blocking the signals with a mask is not enough: Python runs its handlers in
    the main thread whichever thread the kernel picked, so the handlers are
    swapped for ones that only remember the signal.
    """

    def __enter__(self) -> None:
        self._received: list[int] = []
        self._previous: dict[int, object] = {}
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, *_TERMINATING_SIGNALS):
            self._previous[signum] = signal.signal(signum, self._remember)

    def _remember(self, signum: int, _frame: FrameType | None) -> None:
        self._received.append(signum)

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        if self._received and exc_type is None:
            if self._received[0] in _TERMINATING_SIGNALS:
                raise RunTerminated("signal received during teardown")
            raise KeyboardInterrupt
