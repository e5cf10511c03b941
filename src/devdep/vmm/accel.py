"""Which hardware acceleration really works on this host: kvm, tcg or none.

`/dev/kvm` alone proves little. A host whose KVM module is kvm_pvm
(pagetable-based virtualization) has a `/dev/kvm` too, but it only runs guest
kernels built for PVM; a stock kernel hangs early in boot. Real KVM is the
kvm_intel or kvm_amd module, with the CPU's vmx or svm flag.
"""

from __future__ import annotations

import enum
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

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
