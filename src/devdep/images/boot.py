"""The image store, and the BootSpec it hands to the VMM: everything a guest
boots from, with the SHA-384 of each part.

Layout of the store (see docs/images.md)::

    <root>/kernel/       vmlinux, modules/*.ko, manifest.json
    <root>/initramfs/    initramfs.cpio, manifest.json
    <root>/agent/        agent.ext4 (the guest agent's Python runtime), manifest.json
    <root>/images/<name>/rootfs.ext4, manifest.json
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devdep.config.schema import DEFAULT_BASE_OS
from devdep.images.digests import file_sha384, tree_sha384
from devdep.images.errors import (
    AgentRuntimeMissing,
    ImageCorrupt,
    ImageNotFound,
    KernelMissing,
)
from devdep.images.manifest import Manifest, read_manifest, write_manifest

logger = logging.getLogger(__name__)

STORE_ENVIRONMENT_VARIABLE = "DEVDEP_IMAGE_STORE"
SYSTEM_STORE = Path("/var/lib/devdep/images")
AGENT_PORT_NAME = "org.devdep.agent.0"
DEFAULT_IMAGE = DEFAULT_BASE_OS

_IMAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")

# The guest's kernel command line. quiet keeps the serial console, which TCG
# emulates byte by byte, nearly silent until something goes wrong; panic=-1
# with QEMU's -no-reboot turns a kernel panic into the VM's exit; pci=off
# skips probing a bus microvm does not have.
_BASE_COMMAND_LINE = "console=ttyS0 quiet panic=-1 reboot=t pci=off rdinit=/init"


@dataclass(frozen=True)
class Disk:
    """One virtio-blk disk. A disk that is not read-only is attached with
    QEMU's snapshot=on, a throw-away copy-on-write overlay: the file is never
    modified either way."""

    path: Path
    read_only: bool


@dataclass(frozen=True)
class BootSpec:
    kernel: Path  # uncompressed ELF vmlinux, booted through PVH
    initramfs: Path  # busybox + kernel modules + /init
    command_line: str  # the whole kernel command line
    disks: tuple[Disk, ...]  # vda: the user's rootfs image; vdb: the agent runtime
    agent_port_name: str  # the virtserialport the guest agent listens on
    digests: dict[str, str]  # "kernel", "initramfs", "rootfs", "agent" -> SHA-384


def default_store_root() -> Path:
    override = os.environ.get(STORE_ENVIRONMENT_VARIABLE)
    if override:
        return Path(override)
    if os.geteuid() == 0:
        return SYSTEM_STORE
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local/share")
    return Path(data_home) / "devdep" / "images"


def host_tsc_khz(cpuinfo: Path = Path("/proc/cpuinfo")) -> int | None:
    """The host CPU's clock in kHz, as its kernel reports it."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    match = re.search(r"^cpu MHz\s*:\s*([0-9.]+)", text, re.MULTILINE)
    return round(float(match.group(1)) * 1000) if match else None


def tsc_hint_khz(
    sys_module: Path = Path("/sys/module"), cpuinfo: Path = Path("/proc/cpuinfo")
) -> int | None:
    """The TSC rate to tell the guest kernel, or None where it should measure
    its own.

    Only guests under TCG need the hint. Under real KVM (kvm_intel, kvm_amd)
    the kernel reads the rate from kvmclock, which is exact, while the host's
    "cpu MHz" may be a scaled current frequency rather than the TSC's."""
    if (sys_module / "kvm_intel").exists() or (sys_module / "kvm_amd").exists():
        return None
    return host_tsc_khz(cpuinfo)


def command_line(
    *, read_only_rootfs: bool, extra: str = "", tsc_khz: int | None = None
) -> str:
    rootfs = "ro" if read_only_rootfs else "rw"
    words = [
        _BASE_COMMAND_LINE,
        f"devdep.rootfs={rootfs}",
        f"devdep.agent_port={AGENT_PORT_NAME}",
    ]
    if tsc_khz:
        # Under TCG the guest's TSC runs at the host's rate, and on a busy
        # host the kernel's calibration of it against the emulated PIT fails;
        # with no HPET on microvm it is then left with no clock and hangs at
        # boot. Told the rate, it skips calibrating. A rate that is a little
        # off is caught by the clocksource watchdog, which falls back to
        # jiffies.
        words.append(f"tsc_early_khz={tsc_khz}")
    if extra:
        words.append(extra)
    return " ".join(words)


def guest_sources() -> Path:
    """The installed `devdep.guest` package, which the agent disk carries."""
    return Path(__file__).resolve().parent.parent / "guest"


def guest_sources_digest() -> str:
    directory = guest_sources()
    return tree_sha384(directory) if directory.is_dir() else "absent"


def valid_image_name(name: str) -> bool:
    return bool(_IMAGE_NAME.fullmatch(name))


class ImageStore:
    """The images, guest kernel, initramfs and agent runtime on this host."""

    KERNEL = "kernel"
    INITRAMFS = "initramfs"
    AGENT = "agent"
    IMAGES = "images"

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else default_store_root()

    # --- reading ------------------------------------------------------------

    def kernel_manifest(self) -> Manifest | None:
        return self._complete(self.root / self.KERNEL)

    def initramfs_manifest(self) -> Manifest | None:
        return self._complete(self.root / self.INITRAMFS)

    def agent_manifest(self) -> Manifest | None:
        return self._complete(self.root / self.AGENT)

    def image_manifest(self, name: str) -> Manifest | None:
        if not valid_image_name(name):
            return None
        return self._complete(self.root / self.IMAGES / name)

    def names(self) -> list[str]:
        """The images in the store, for validate and `image ls`."""
        directory = self.root / self.IMAGES
        if not directory.is_dir():
            return []
        return sorted(
            entry.name
            for entry in directory.iterdir()
            if valid_image_name(entry.name) and self._complete(entry) is not None
        )

    def entries(self) -> list[Manifest]:
        """Everything the store holds: the kernel, the initramfs, the agent
        runtime disk, then the images by name."""
        found = [
            self.kernel_manifest(),
            self.initramfs_manifest(),
            self.agent_manifest(),
            *(self.image_manifest(name) for name in self.names()),
        ]
        return [manifest for manifest in found if manifest is not None]

    def path_of(self, slot: str, manifest: Manifest) -> Path:
        return manifest.artefact(self.root / slot)

    def _complete(self, directory: Path) -> Manifest | None:
        manifest = read_manifest(directory)
        if manifest is None or not manifest.artefact(directory).is_file():
            return None
        return manifest

    def boot_spec(self, base_os: str, *, read_only_rootfs: bool) -> BootSpec:
        """What to boot a guest of image `base_os` from; raises ImageNotFound,
        KernelMissing or AgentRuntimeMissing naming what to build."""
        image = self.image_manifest(base_os)
        if image is None:
            raise ImageNotFound(base_os, self.names())

        kernel = self.kernel_manifest()
        if kernel is None:
            raise KernelMissing(f"the image store {self.root} holds no guest kernel")
        initramfs = self.initramfs_manifest()
        if initramfs is None or initramfs.details.get("kernel_sha384") != kernel.sha384:
            raise KernelMissing(
                f"the image store {self.root} holds no boot initramfs for kernel "
                f"{kernel.name}"
            )

        agent = self.agent_manifest()
        if agent is None:
            raise AgentRuntimeMissing(
                f"the image store {self.root} holds no guest agent runtime disk"
            )
        if agent.details.get("agent_sources") != guest_sources_digest():
            raise AgentRuntimeMissing(
                "the guest agent runtime disk holds other agent code than the "
                "installed devdep"
            )

        return BootSpec(
            kernel=self.path_of(self.KERNEL, kernel),
            initramfs=self.path_of(self.INITRAMFS, initramfs),
            command_line=command_line(
                read_only_rootfs=read_only_rootfs, tsc_khz=tsc_hint_khz()
            ),
            disks=(
                Disk(self.path_of(f"{self.IMAGES}/{base_os}", image), read_only_rootfs),
                Disk(self.path_of(self.AGENT, agent), read_only=True),
            ),
            agent_port_name=AGENT_PORT_NAME,
            digests={
                "kernel": kernel.sha384,
                "initramfs": initramfs.sha384,
                "rootfs": image.sha384,
                "agent": agent.sha384,
            },
        )

    def verify(self, spec: BootSpec) -> None:
        """Hash every file of `spec` again and compare with the digests recorded
        when it was built; raises ImageCorrupt naming the first that differs.

        Reads every byte (about 350 MB for the default image), so it is a
        choice of the caller, not part of boot_spec."""
        parts = {
            "kernel": spec.kernel,
            "initramfs": spec.initramfs,
            "rootfs": spec.disks[0].path,
            "agent": spec.disks[1].path,
        }
        for part, path in parts.items():
            try:
                actual = file_sha384(path)
            except OSError as exc:
                raise ImageCorrupt(
                    f"cannot read the {part} {path}: {exc.strerror or exc}"
                ) from exc
            if actual != spec.digests[part]:
                raise ImageCorrupt(
                    f"the {part} {path} has SHA-384 {actual[:16]}..., not the "
                    f"{spec.digests[part][:16]}... recorded when it was built",
                    hint="rebuild it with --force (devdep-cli image kernel, agent "
                    "or build-base), or re-import the image",
                )

    # --- writing ------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the store's build lock: two builds never interleave."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def scratch(self) -> Path:
        """A directory for builds, on the store's file system so that a finished
        build moves into place with a rename."""
        directory = self.root / ".scratch"
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def install(self, slot: str, built: Path, manifest: Manifest) -> None:
        """Move a finished build into `slot`, replacing what was there.

        The manifest is written last, and the old slot is renamed away before
        the new one is renamed in, so a reader sees the old artefact, nothing,
        or the new one: never half of one."""
        write_manifest(built, manifest)
        built.chmod(0o755)
        target = self.root / slot
        target.parent.mkdir(parents=True, exist_ok=True)
        retired = Path(tempfile.mkdtemp(dir=self.scratch(), prefix="retired-"))
        if target.exists():
            target.replace(retired / "old")
        built.replace(target)
        shutil.rmtree(retired, ignore_errors=True)
        logger.debug("installed %s %s in %s", manifest.kind, manifest.name, target)
