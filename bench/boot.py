"""Boot benchmark: how long `deploy --local` takes to show a step's first output,
against raw QEMU booting the same kernel to a minimal init.

    .venv/bin/python bench/boot.py [--runs 10] [--write-docs]

The baseline boots the image store's kernel with the same QEMU machine options
devdep uses, and an initramfs built here, in a temporary directory, from the
host's static busybox: its /init prints one line and powers off. The deploy
figure is measured from starting `devdep-cli deploy` to the first line of step
output on its stdout, so it includes everything devdep adds: loading the
config, checking images, the workspace, the agent's start and the first step.
Their ratio is devdep's orchestration overhead. One untimed deploy runs first,
so the image digests are cached as on any host that has run a job before.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from devdep.images.boot import DEFAULT_IMAGE, ImageStore
from devdep.images.cpio import CpioWriter
from devdep.vmm.accel import Acceleration, detect_acceleration
from devdep.vmm.qemu import MICROVM_MACHINE, guest_command_line

REPOSITORY = Path(__file__).resolve().parent.parent
DEVDEP_CLI = str(Path(sys.executable).parent / "devdep-cli")
MARKER = "devdep-bench-first-output"
BASELINE_MARKER = "devdep-baseline-init"
DOCS = REPOSITORY / "docs" / "performance.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
PIPELINE = f"""version: "4.2"
metadata: {{namespace: bench, owner: bench-owners, environment: bench}}
pipeline:
  runtimes:
    - name: bench
      run_command:
        - echo {MARKER}
"""


@dataclass
class Sample:
    first_output: float  # seconds from process start to the marker line
    total: float  # seconds from process start to process exit


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: the value at or above `fraction` of the sample."""
    ordered = sorted(values)
    rank = max(1, round(fraction * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def time_until_marker(command: list[str], marker: str, **popen: object) -> Sample:
    started = time.monotonic()
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(  # type: ignore[call-overload]
            command, stdout=subprocess.PIPE, stderr=stderr, **popen
        )
        first_output: float | None = None
        assert process.stdout is not None
        for line in process.stdout:
            if first_output is None and marker.encode() in line:
                first_output = time.monotonic() - started
        process.stdout.close()
        process.wait(timeout=600)
        total = time.monotonic() - started
        if first_output is None:
            stderr.seek(0)
            raise SystemExit(
                f"{command[0]} never printed {marker!r} (exit {process.returncode}):\n"
                + stderr.read().decode(errors="replace")[-2000:]
            )
    return Sample(first_output, total)


def minimal_initramfs(directory: Path) -> Path:
    """A cpio archive with a static busybox and an /init that prints and powers off."""
    busybox = shutil.which("busybox")
    if busybox is None:
        raise SystemExit("busybox not found: apt-get install busybox-static")
    archive = CpioWriter()
    archive.add_directory("bin")
    archive.add_file("bin/busybox", Path(busybox).read_bytes(), mode=0o755)
    init = (
        "#!/bin/busybox sh\n"
        f"/bin/busybox echo {BASELINE_MARKER}\n"
        "/bin/busybox poweroff -f\n"
    )
    archive.add_file("init", init.encode(), mode=0o755)
    path = directory / "minimal.cpio"
    path.write_bytes(archive.finish())
    return path


def baseline_command(
    kernel: Path, initramfs: Path, acceleration: Acceleration
) -> list[str]:
    """QEMU with devdep's machine options, but no disks, no QMP, no agent port."""
    command_line = guest_command_line(
        "console=ttyS0 quiet panic=-1 reboot=t pci=off nomodule rdinit=/init",
        acceleration,
    )
    return [
        "qemu-system-x86_64",
        "-M",
        MICROVM_MACHINE,
        "-accel",
        acceleration.value,
        *(["-cpu", "host"] if acceleration is Acceleration.KVM else []),
        "-m",
        "512M",
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
        "-nographic",
        "-kernel",
        str(kernel),
        "-initrd",
        str(initramfs),
        "-append",
        command_line,
        "-chardev",
        "stdio,id=console,signal=off",
        "-serial",
        "chardev:console",
    ]


def summarise(name: str, samples: list[Sample]) -> dict[str, float]:
    firsts = [sample.first_output for sample in samples]
    figures = {
        "p50": statistics.median(firsts),
        "p95": percentile(firsts, 0.95),
        "min": min(firsts),
        "max": max(firsts),
        "total_p50": statistics.median(sample.total for sample in samples),
    }
    print(
        f"{name}: p50 {figures['p50']:.2f}s  p95 {figures['p95']:.2f}s  "
        f"min {figures['min']:.2f}s  max {figures['max']:.2f}s  "
        f"(process exit p50 {figures['total_p50']:.2f}s, {len(samples)} runs)"
    )
    return figures


def write_docs(text: str) -> None:
    document = DOCS.read_text()
    before, _, rest = document.partition(BEGIN)
    _, _, after = rest.partition(END)
    DOCS.write_text(f"{before}{BEGIN}\n{text}{END}{after}")
    print(f"wrote the figures into {DOCS.relative_to(REPOSITORY)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--write-docs", action="store_true")
    arguments = parser.parse_args()
    if arguments.runs < 1:
        parser.error("--runs must be at least 1")

    acceleration = detect_acceleration().acceleration
    if acceleration is Acceleration.NONE:
        raise SystemExit("qemu-system-x86_64 is not installed")
    spec = ImageStore().boot_spec(DEFAULT_IMAGE, read_only_rootfs=True)
    print(f"accelerator: {acceleration.value}; {arguments.runs} runs each")

    with tempfile.TemporaryDirectory(prefix="devdep-bench-") as temporary:
        directory = Path(temporary)
        initramfs = minimal_initramfs(directory)
        command = baseline_command(spec.kernel, initramfs, acceleration)
        baseline = [
            time_until_marker(command, BASELINE_MARKER, stdin=subprocess.DEVNULL)
            for _ in range(arguments.runs)
        ]

        workspace = directory / "workspace"
        workspace.mkdir()
        (workspace / "devdep.yaml").write_text(PIPELINE)
        deploy_command = [DEVDEP_CLI, "deploy", "--local", "--env=bench"]
        environment = {**os.environ, "DEVDEP_STATE_DIR": str(directory / "state")}
        deploy_options = {"cwd": workspace, "env": environment}
        time_until_marker(deploy_command, MARKER, **deploy_options)  # warm-up
        deploys = [
            time_until_marker(deploy_command, MARKER, **deploy_options)
            for _ in range(arguments.runs)
        ]

    raw = summarise("raw QEMU to the init's first line", baseline)
    ours = summarise("deploy --local to the first step output", deploys)
    ratio_p50 = ours["p50"] / raw["p50"]
    ratio_p95 = ours["p95"] / raw["p95"]
    print(f"ratio deploy/raw: p50 {ratio_p50:.2f}, p95 {ratio_p95:.2f}")

    if arguments.write_docs:
        load = os.getloadavg()
        write_docs(
            f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with "
            f"`bench/boot.py --runs {arguments.runs}` under **{acceleration.value}** "
            f"on {os.cpu_count()} cores (load average at the end: "
            f"{load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}).\n\n"
            "| measure | p50 | p95 | min | max |\n"
            "|---|---|---|---|---|\n"
            f"| raw QEMU, start to the init's first line | {raw['p50']:.2f} s | "
            f"{raw['p95']:.2f} s | {raw['min']:.2f} s | {raw['max']:.2f} s |\n"
            f"| `deploy --local`, start to the first step output | "
            f"{ours['p50']:.2f} s | {ours['p95']:.2f} s | {ours['min']:.2f} s | "
            f"{ours['max']:.2f} s |\n"
            f"| ratio (orchestration overhead) | {ratio_p50:.2f} | {ratio_p95:.2f} "
            "| | |\n\n"
        )


if __name__ == "__main__":
    main()
