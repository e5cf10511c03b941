"""`deploy`: run a pipeline, each runtime in its own fresh micro-VM.

Only `--local` exists so far: the host agent runs inside this process. The
command parses, hands the pipeline to `devdep.runner.local`, and prints what it
reports: step output live on stdout, progress on stderr (only on a terminal),
and the run summary at the end.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
from rich.status import Status

from devdep.cli.options import file_option
from devdep.cli.output import (
    OutputFormat,
    output_option,
    print_json,
    stderr_console,
    stdout_console,
)
from devdep.config.durations import parse_duration
from devdep.config.loader import load_config
from devdep.errors import DevdepError, UsageError
from devdep.guest.protocol import AgentHello
from devdep.images.boot import ImageStore
from devdep.runner.local import DEFAULT_BOOT_TIMEOUT, LocalRunner, RunOptions
from devdep.runner.workspace import ARTIFACTS_DIRECTORY
from devdep.telemetry.summary import RunSummary

MAX_CAPTURED_BYTES = 16 * 1024 * 1024  # per step, in --output json


def one_line(command: str) -> str:
    """A step as one line: its first line, marked when more follow."""
    lines = command.strip().splitlines() or [""]
    return lines[0] if len(lines) == 1 else f"{lines[0]} …"


def _duration(value: str | None, option: str) -> timedelta | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


class TextObserver:
    """Step output straight to stdout; progress as a spinner on a terminal."""

    def __init__(self) -> None:
        self._stdout = sys.stdout.buffer
        self._console = stderr_console()
        self._status: Status | None = None
        self._live = sys.stderr.isatty()
        self._at_line_start = True

    def phase(self, description: str) -> None:
        if not self._live:
            return
        if self._status is None:
            self._status = self._console.status(description)
            self._status.start()
        else:
            self._status.update(description)

    def _stop_progress(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def ready(self, runtime: str, hello: AgentHello, boot_seconds: float) -> None:
        self._stop_progress()
        self._console.print(
            f"{runtime}: guest ready in {boot_seconds:.2f}s "
            f"(kernel {hello.kernel_release})",
            markup=False,
        )

    def step_started(self, runtime: str, index: int, count: int, command: str) -> None:
        self._stop_progress()
        self._line(f"==> {runtime} [{index}/{count}] $ {one_line(command)}")

    def output(self, runtime: str, index: int, stream: str, chunk: bytes) -> None:
        self._stdout.write(chunk)
        self._stdout.flush()
        self._at_line_start = chunk.endswith(b"\n")

    def step_finished(self, runtime: str, index: int, status: int) -> None:
        if not self._at_line_start:
            self._line("")
        if status != 0:
            self._line(f"==> {runtime} [{index}] exited with status {status}")

    def _line(self, text: str) -> None:
        sys.stdout.flush()
        self._stdout.write(text.encode() + b"\n")
        self._stdout.flush()
        self._at_line_start = True

    def close(self) -> None:
        self._stop_progress()


class JsonObserver:
    """Collects every step's output for the one JSON document printed at the end."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self._buffers: list[bytearray] = []

    def phase(self, description: str) -> None:
        pass

    def ready(self, runtime: str, hello: AgentHello, boot_seconds: float) -> None:
        pass

    def step_started(self, runtime: str, index: int, count: int, command: str) -> None:
        self.steps.append({"runtime": runtime, "step": index, "command": command})
        self._buffers.append(bytearray())

    def output(self, runtime: str, index: int, stream: str, chunk: bytes) -> None:
        buffer = self._buffers[-1]
        room = MAX_CAPTURED_BYTES - len(buffer)
        if room > 0:
            buffer += chunk[:room]

    def step_finished(self, runtime: str, index: int, status: int) -> None:
        self.steps[-1]["exit_status"] = status

    def captured(self) -> list[dict[str, Any]]:
        return [
            {**step, "output": bytes(buffer).decode("utf-8", "replace")}
            for step, buffer in zip(self.steps, self._buffers, strict=True)
        ]

    def close(self) -> None:
        pass


def _print_summary(summary: RunSummary) -> None:
    console = stdout_console()
    console.print("")
    console.print(f"run {summary.run_id}: {summary.outcome}", markup=False)
    console.print(f"  acceleration: {summary.acceleration}", markup=False)
    for runtime in summary.runtimes:
        boot = (
            f"{runtime.boot_seconds:.2f}s" if runtime.boot_seconds is not None else "-"
        )
        hooks = ", ".join(
            f"{hook} {seconds:.2f}s" for hook, seconds in runtime.hooks.items()
        )
        console.print(f"  {runtime.name}: boot {boot}; {hooks}", markup=False)
    for step in summary.steps:
        status = (
            "not finished" if step.exit_status is None else f"exit {step.exit_status}"
        )
        console.print(
            f"  {step.runtime} [{step.index}] {status}: {one_line(step.command)}",
            markup=False,
        )
    if summary.artifacts_dir:
        console.print(f"  artifacts: {summary.artifacts_dir}", markup=False)
    if summary.log_path:
        console.print(f"  log: {summary.log_path}", markup=False)


@click.command()
@click.option(
    "--env",
    "environment",
    required=True,
    help="The environment to deploy; must equal metadata.environment.",
)
@file_option
@click.option(
    "--timeout",
    default=None,
    help="Stop the whole pipeline after this long, e.g. 10m (default: each "
    "runtime's own timeout).",
)
@click.option(
    "--workspace",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The directory copied to /workspace (default: the current directory).",
)
@click.option(
    "--boot-timeout",
    default=f"{DEFAULT_BOOT_TIMEOUT:g}s",
    show_default=True,
    envvar="DEVDEP_BOOT_TIMEOUT",
    help="How long a guest may take to report ready.",
)
@click.option(
    "--local",
    is_flag=True,
    help="Run on this host, in this process, with no gateway and no login.",
)
@output_option
def deploy(
    environment: str,
    file: Path,
    timeout: str | None,
    workspace: Path | None,
    boot_timeout: str,
    local: bool,
    output: OutputFormat,
) -> None:
    """Run the pipeline in devdep.yaml, each runtime in its own micro-VM.

    Exits 0 when every step succeeded, 1 when a step failed or the pipeline
    timed out, 2 on bad input or a missing image, 201 when a secret mapping
    cannot be resolved, 301 when a VM could not boot, and 401 on an egress
    violation (301 and 401 reach a shell as 45 and 145). docs/deploy.md
    describes the run and its summary.
    """
    if not local:
        raise UsageError(
            "fleet mode (deploy through a gateway) is not available yet",
            hint="run on this host with --local",
        )
    pipeline_timeout = _duration(timeout, "--timeout")
    boot_limit = _duration(boot_timeout, "--boot-timeout") or timedelta(
        seconds=DEFAULT_BOOT_TIMEOUT
    )
    loaded = load_config(file)

    options = RunOptions(
        environment=environment,
        workspace=(workspace or Path.cwd()).resolve(),
        artifacts_root=Path.cwd() / ARTIFACTS_DIRECTORY,
        timeout=pipeline_timeout,
        boot_timeout=boot_limit.total_seconds(),
    )
    observer: TextObserver | JsonObserver = (
        JsonObserver() if output is OutputFormat.JSON else TextObserver()
    )
    runner = LocalRunner(loaded, ImageStore(), observer, options)
    try:
        summary = runner.run()
    except DevdepError as error:
        _report_failed_run(runner.summary, observer, error)
        raise
    except KeyboardInterrupt:
        if isinstance(observer, TextObserver) and runner.summary.runtimes:
            observer.close()
            _print_summary(runner.summary)
        raise
    finally:
        observer.close()

    if isinstance(observer, JsonObserver):
        print_json(
            {"ok": True, "summary": summary.to_json(), "steps": observer.captured()}
        )
        return
    _print_summary(summary)


def _report_failed_run(
    summary: RunSummary, observer: TextObserver | JsonObserver, error: DevdepError
) -> None:
    """Show what the failed run did; the error itself is printed by the CLI."""
    if summary.acceleration == "unknown" and not summary.runtimes:
        return  # nothing ran: the error says it all
    if isinstance(observer, JsonObserver):
        # main.py adds this to the one JSON document it prints for an error.
        error.run_document = {  # type: ignore[attr-defined]
            "summary": summary.to_json(),
            "steps": observer.captured(),
        }
        return
    observer.close()
    _print_summary(summary)
