"""Which hardware acceleration really works on this host: kvm, tcg or none.

`/dev/kvm` alone proves little. A host whose KVM module is kvm_pvm
(pagetable-based virtualization) has a `/dev/kvm` too, but it only runs guest
kernels built for PVM; a stock kernel hangs early in boot. Real KVM is the
kvm_intel or kvm_amd module, with the CPU's vmx or svm flag.

`cached_acceleration` makes the decision once per host boot and QEMU build and
keeps it in a small JSON file, so every run uses the same accelerator and the
choice is logged once, when it is made.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

QEMU_BINARY = "qemu-system-x86_64"


class Acceleration(enum.StrEnum):
    KVM = "kvm"
    TCG = "tcg"  # QEMU's software emulation: slower, but works everywhere
    NONE = "none"  # no QEMU at all


@dataclass(frozen=True)
class AccelerationReport:
    acceleration: Acceleration
    reason: str


def _kvm_modules(sys_module: Path) -> set[str]:
    names = ("kvm_intel", "kvm_amd", "kvm_pvm")
    return {name for name in names if (sys_module / name).exists()}


def _cpu_has_virtualisation(cpuinfo: Path) -> bool:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = line.split(":", 1)[1].split()
            return "vmx" in flags or "svm" in flags
    return False


def detect_acceleration(
    *,
    qemu_binary: str | None = None,
    dev_kvm: Path = Path("/dev/kvm"),
    sys_module: Path = Path("/sys/module"),
    cpuinfo: Path = Path("/proc/cpuinfo"),
) -> AccelerationReport:
    """Decide from the host's modules and devices, without booting anything."""
    if qemu_binary is None:
        qemu_binary = shutil.which(QEMU_BINARY)
    if qemu_binary is None:
        return AccelerationReport(Acceleration.NONE, f"{QEMU_BINARY} is not installed")

    if not dev_kvm.exists():
        return AccelerationReport(Acceleration.TCG, "no /dev/kvm on this host")

    modules = _kvm_modules(sys_module)
    real_kvm = modules & {"kvm_intel", "kvm_amd"}
    if not real_kvm:
        if "kvm_pvm" in modules:
            return AccelerationReport(
                Acceleration.TCG,
                "/dev/kvm is kvm_pvm, which cannot run a stock guest kernel",
            )
        return AccelerationReport(
            Acceleration.TCG, "/dev/kvm exists but neither kvm_intel nor kvm_amd"
        )
    if not _cpu_has_virtualisation(cpuinfo):
        return AccelerationReport(
            Acceleration.TCG, "the CPU reports neither the vmx nor the svm flag"
        )
    if not os.access(dev_kvm, os.R_OK | os.W_OK):
        return AccelerationReport(
            Acceleration.TCG, f"{dev_kvm} is not readable and writable by this user"
        )
    module = sorted(real_kvm)[0]
    return AccelerationReport(Acceleration.KVM, f"{module} with a usable /dev/kvm")


def _host_key(qemu_binary: str | None, boot_id: Path) -> str:
    """What the decision depends on: this boot of the host (modules are loaded
    per boot) and this QEMU build."""
    try:
        boot = boot_id.read_text().strip()
    except OSError:
        boot = "unknown-boot"
    if qemu_binary is None:
        return f"{boot}:no-qemu"
    try:
        built = Path(qemu_binary).stat().st_mtime_ns
    except OSError:
        built = 0
    return f"{boot}:{qemu_binary}:{built}"


def cached_acceleration(
    cache_file: Path,
    *,
    qemu_binary: str | None = None,
    boot_id: Path = Path("/proc/sys/kernel/random/boot_id"),
) -> AccelerationReport:
    """`detect_acceleration()`, decided once per host boot and QEMU build and kept
    in `cache_file`; the decision is logged when it is made."""
    if qemu_binary is None:
        qemu_binary = shutil.which(QEMU_BINARY)
    key = _host_key(qemu_binary, boot_id)

    try:
        cached = json.loads(cache_file.read_text())
        if cached.get("host") == key:
            return AccelerationReport(
                Acceleration(cached["acceleration"]), str(cached["reason"])
            )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass

    report = detect_acceleration(qemu_binary=qemu_binary)
    logger.info("acceleration: %s (%s)", report.acceleration.value, report.reason)
    document = {
        "host": key,
        "acceleration": report.acceleration.value,
        "reason": report.reason,
    }
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = cache_file.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(document) + "\n")
        temporary.replace(cache_file)
    except OSError as exc:
        logger.debug("cannot cache the acceleration decision: %s", exc)
    return report
