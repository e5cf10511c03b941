"""The guest kernel: Debian's stock kernel, unpacked, never installed.

From the `linux-image-amd64` metapackage's current dependency this takes:

- the uncompressed ELF `vmlinux`, which QEMU boots through PVH. It is the XZ
  payload of the bzImage; booting it skips the in-guest decompression, which
  under TCG is most of the boot time;
- the modules the guest needs (virtio, virtio-blk, virtio-console, ext4,
  overlay) with everything they depend on, in an order they can be loaded in;
- the network modules (virtio_net, with failover and net_failover), which
  /init loads only when the VM was given a network device.

Debian's .deb carries no modules.dep (depmod runs at install time), so the
dependencies come from each module's own `.modinfo` section, the data depmod
itself reads: `depends=` for hard dependencies and `softdep=pre:` for modules
to load first (ext4 and jbd2 want the crc32c crypto driver, named by alias).
"""

from __future__ import annotations

import logging
import lzma
import re
import shutil
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from devdep.images.boot import ImageStore
from devdep.images.debian import PackageVersion, candidate, download, unpack
from devdep.images.digests import file_sha384, inputs_digest
from devdep.images.errors import ImageBuildFailed
from devdep.images.manifest import Manifest, utc_now
from devdep.images.progress import BuildProgress, SilentProgress

logger = logging.getLogger(__name__)

KERNEL_METAPACKAGE = "linux-image-amd64"
VMLINUX_NAME = "vmlinux"
MODULES_DIRECTORY = "modules"

# In the order /init loads them; each is preceded by what it needs.
GUEST_MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "virtio_blk",
    "virtio_console",
    "ext4",
    "overlay",
)

# Loaded by /init only when the command line gives the guest a network (an
# isolated VM has no NIC, and loading the driver would cost boot time for
# nothing). Their dependencies already in GUEST_MODULES are not repeated.
NETWORK_MODULES = ("virtio_net",)

_XZ_MAGIC = b"\xfd7zXZ\x00"
_ELF_MAGIC = b"\x7fELF"
_SETUP_HEADER_MAGIC = b"HdrS"


class NotAKernel(ValueError):
    """The bytes hold no bzImage with an XZ-compressed ELF payload."""


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The uncompressed ELF kernel inside a bzImage.

    The setup header says where the payload is (`payload_offset` at 0x248,
    counted from the protected-mode code after the setup sectors); when it does
    not point at an XZ stream, fall back to the first XZ magic in the file.
    """
    start = _payload_start(bzimage)
    if start is None:
        start = bzimage.find(_XZ_MAGIC)
    if start < 0:
        raise NotAKernel("no XZ-compressed payload found")

    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        # The stream is followed by padding and the payload's size; the
        # decompressor stops at the end of the stream and keeps the rest aside.
        vmlinux = decompressor.decompress(bzimage[start:])
    except lzma.LZMAError as exc:
        raise NotAKernel(f"the XZ payload does not decompress: {exc}") from exc
    if not decompressor.eof:
        raise NotAKernel("the XZ payload is truncated")

    if not vmlinux.startswith(_ELF_MAGIC) or vmlinux[4] != 2:
        raise NotAKernel("the payload is not a 64-bit ELF image")
    return vmlinux


def _payload_start(bzimage: bytes) -> int | None:
    if bzimage[0x202:0x206] != _SETUP_HEADER_MAGIC or len(bzimage) < 0x250:
        return None
    setup_sectors = bzimage[0x1F1] or 4  # 0 means 4, for ancient boot protocols
    payload_offset: int = struct.unpack_from("<I", bzimage, 0x248)[0]
    start = (setup_sectors + 1) * 512 + payload_offset
    if bzimage[start : start + len(_XZ_MAGIC)] != _XZ_MAGIC:
        return None
    return start


# --- modules ------------------------------------------------------------------


@dataclass
class ModuleInfo:
    name: str
    path: Path
    depends: list[str] = field(default_factory=list)
    softdeps_before: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LoadStep:
    """One module for /init to load; an optional one may fail to load (a
    CPU-specific crypto driver on a CPU without the instructions it needs); a
    network one is loaded only when the guest has a network device."""

    file_name: str
    optional: bool
    network: bool = False


def module_name(path: Path) -> str:
    # The kernel treats '-' and '_' in module names as the same character.
    return re.sub(r"\.ko(\.xz|\.zst|\.gz)?$", "", path.name).replace("-", "_")


def _module_bytes(path: Path) -> bytes:
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(path.read_bytes())
    return path.read_bytes()


def read_modinfo(path: Path) -> ModuleInfo:
    """Parse the `.modinfo` section of a module's ELF file."""
    data = _module_bytes(path)
    info = ModuleInfo(module_name(path), path)
    for entry in _modinfo_section(data).split(b"\0"):
        key, _, value = entry.decode("utf-8", "replace").partition("=")
        if key == "depends" and value:
            info.depends = [name.replace("-", "_") for name in value.split(",")]
        elif key == "softdep":
            info.softdeps_before += _softdep_before(value)
        elif key == "alias":
            info.aliases.append(value)
    return info


def _softdep_before(value: str) -> list[str]:
    words = value.split()
    names: list[str] = []
    collecting = False
    for word in words:
        if word.endswith(":"):
            collecting = word == "pre:"
        elif collecting:
            names.append(word)
    return names


def _modinfo_section(elf: bytes) -> bytes:
    if not elf.startswith(_ELF_MAGIC) or elf[4] != 2:
        raise ImageBuildFailed("a kernel module is not a 64-bit ELF file")
    section_offset = struct.unpack_from("<Q", elf, 0x28)[0]
    entry_size, count, names_index = struct.unpack_from("<HHH", elf, 0x3A)

    def section(index: int) -> tuple[int, int, int]:
        base = section_offset + index * entry_size
        name, _type, _flags, _address, offset, size = struct.unpack_from(
            "<IIQQQQ", elf, base
        )
        return name, offset, size

    _, names_offset, _ = section(names_index)
    for index in range(count):
        name, offset, size = section(index)
        end = elf.index(b"\0", names_offset + name)
        if elf[names_offset + name : end] == b".modinfo":
            return elf[offset : offset + size]
    return b""


class ModuleTree:
    """The modules of one kernel release, looked up by name or by alias."""

    def __init__(self, release_directory: Path) -> None:
        self.root = release_directory
        self.by_name = {
            module_name(path): path for path in self._files(release_directory)
        }
        self._info: dict[str, ModuleInfo] = {}
        self._aliases: dict[str, list[str]] | None = None

    @staticmethod
    def _files(root: Path) -> Iterator[Path]:
        for path in root.rglob("*.ko*"):
            if re.search(r"\.ko(\.xz)?$", path.name):
                yield path

    def info(self, name: str) -> ModuleInfo:
        if name not in self._info:
            self._info[name] = read_modinfo(self.by_name[name])
        return self._info[name]

    def providers(self, alias: str) -> list[str]:
        """Modules named `alias`, or else the modules declaring it as an alias.

        The alias index reads every module's .modinfo once, so it is built only
        when a soft dependency names an alias rather than a module."""
        normalised = alias.replace("-", "_")
        if normalised in self.by_name:
            return [normalised]
        if self._aliases is None:
            self._aliases = {}
            for name in sorted(self.by_name):
                for declared in self.info(name).aliases:
                    self._aliases.setdefault(declared, []).append(name)
        return self._aliases.get(alias, [])

    def load_order(
        self, wanted: tuple[str, ...], network: tuple[str, ...] = ()
    ) -> list[LoadStep]:
        """Every module `wanted` needs, each after its dependencies, and then
        what `network` needs beyond those, marked as network steps."""
        order: list[LoadStep] = []
        placed: set[str] = set()
        for_network = False

        def place(name: str, optional: bool, trail: tuple[str, ...]) -> None:
            if name in placed:
                return
            if name in trail:
                raise ImageBuildFailed(f"module dependency cycle: {' -> '.join(trail)}")
            if name not in self.by_name:
                raise ImageBuildFailed(
                    f"the kernel package has no module {name!r}, which the guest needs"
                )
            info = self.info(name)
            for before in info.softdeps_before:
                providers = self.providers(before)
                # With several providers (a generic driver and a CPU-specific
                # one), any may be the one that loads; none is required alone.
                for provider in providers:
                    place(provider, optional or len(providers) > 1, (*trail, name))
            for dependency in info.depends:
                place(dependency, optional, (*trail, name))
            placed.add(name)
            order.append(LoadStep(self.by_name[name].name, optional, for_network))

        for name in wanted:
            place(name, False, ())
        for_network = True
        for name in network:
            place(name, False, ())
        return order


# --- the build ----------------------------------------------------------------


@dataclass(frozen=True)
class KernelBuild:
    manifest: Manifest
    built: bool  # False: the store already held this version


def build_kernel(
    store: ImageStore, progress: BuildProgress | None = None, *, force: bool = False
) -> KernelBuild:
    """Put the guest kernel of Debian's current `linux-image-amd64` in the store.

    Does nothing when the store already holds that package version."""
    progress = progress or SilentProgress()

    with progress.step(f"resolving {KERNEL_METAPACKAGE}"):
        metapackage, depends = candidate(KERNEL_METAPACKAGE)
        image_names = [name for name in depends if name.startswith("linux-image-")]
        if not image_names:
            raise ImageBuildFailed(
                f"{KERNEL_METAPACKAGE} {metapackage.version} depends on no "
                "linux-image package"
            )
        package, _ = candidate(image_names[0])
    inputs = inputs_digest(
        "kernel", package.name, package.version, *GUEST_MODULES, "net", *NETWORK_MODULES
    )

    existing = store.kernel_manifest()
    if existing is not None and existing.inputs == inputs and not force:
        progress.note(
            f"kernel {existing.details.get('release')} ({package.version}) "
            "is already in the store"
        )
        return KernelBuild(existing, built=False)

    with store.lock(), tempfile.TemporaryDirectory(dir=store.scratch()) as scratch:
        work = Path(scratch)
        manifest = _build_into(store, package, inputs, work, progress)
    logger.info(
        "stored kernel %s from %s %s", manifest.name, package.name, package.version
    )
    return KernelBuild(manifest, built=True)


def _build_into(
    store: ImageStore,
    package: PackageVersion,
    inputs: str,
    work: Path,
    progress: BuildProgress,
) -> Manifest:
    with progress.step(f"downloading {package.name} {package.version}"):
        deb = download([package], work)[package.name]
    unpacked = work / "unpacked"
    with progress.step("unpacking the kernel package"):
        unpack(deb, unpacked)

    bzimages = sorted((unpacked / "boot").glob("vmlinuz-*"))
    if not bzimages:
        raise ImageBuildFailed(f"{package.name} holds no /boot/vmlinuz-*")
    release = bzimages[0].name.removeprefix("vmlinuz-")
    config = unpacked / "boot" / f"config-{release}"
    if config.exists() and "CONFIG_PVH=y" not in config.read_text():
        raise ImageBuildFailed(f"kernel {release} is built without CONFIG_PVH")

    output = work / "kernel"
    (output / MODULES_DIRECTORY).mkdir(parents=True)
    with progress.step("extracting vmlinux from the bzImage"):
        try:
            vmlinux = extract_vmlinux(bzimages[0].read_bytes())
        except NotAKernel as exc:
            raise ImageBuildFailed(f"{bzimages[0].name}: {exc}") from exc
        (output / VMLINUX_NAME).write_bytes(vmlinux)

    with progress.step("collecting the guest's kernel modules"):
        tree = ModuleTree(unpacked / "lib" / "modules" / release)
        steps = tree.load_order(GUEST_MODULES, NETWORK_MODULES)
        for step in steps:
            source = tree.by_name[module_name(Path(step.file_name))]
            shutil.copyfile(source, output / MODULES_DIRECTORY / step.file_name)

    with progress.step("computing the kernel's SHA-384"):
        digest = file_sha384(output / VMLINUX_NAME)
    manifest = Manifest(
        kind="kernel",
        name=release,
        file=VMLINUX_NAME,
        sha384=digest,
        size=len(vmlinux),
        created=utc_now(),
        inputs=inputs,
        details={
            "release": release,
            "package": package.name,
            "version": package.version,
            "modules": [
                {
                    "file": step.file_name,
                    "optional": step.optional,
                    "network": step.network,
                }
                for step in steps
            ],
        },
    )
    store.install("kernel", output, manifest)
    return manifest
