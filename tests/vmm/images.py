"""Make sure the image store holds what a real VM boots from, building what is
missing with `devdep-cli image` (the first time, this takes a few minutes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from devdep.images.boot import DEFAULT_IMAGE, BootSpec, ImageStore
from devdep.images.errors import AgentRuntimeMissing, ImageNotFound, KernelMissing

DEVDEP_CLI = str(Path(sys.executable).parent / "devdep-cli")


def ensure_boot_spec(*, read_only_rootfs: bool = True) -> BootSpec:
    store = ImageStore()
    for _ in range(4):
        try:
            return store.boot_spec(DEFAULT_IMAGE, read_only_rootfs=read_only_rootfs)
        except KernelMissing:
            build = "kernel"
        except ImageNotFound:
            build = "build-base"
        except AgentRuntimeMissing:
            build = "agent"
        subprocess.run([DEVDEP_CLI, "image", build], check=True, timeout=1800)
    return store.boot_spec(DEFAULT_IMAGE, read_only_rootfs=read_only_rootfs)


def qemu_processes_under(directory: Path) -> list[int]:
    """The pids of QEMU processes whose command line names `directory`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            arguments = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"qemu-system" in a for a in arguments[:4]) and any(
            str(directory).encode() in a for a in arguments
        ):
            found.append(int(proc.name))
    return found
