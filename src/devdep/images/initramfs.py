"""The boot initramfs: a static busybox, the guest's kernel modules and /init.

It is written as a newc cpio by Python, so no root and no cpio tool are needed.
It is stored uncompressed: under TCG the kernel's own gunzip costs more boot
time than reading the larger archive does (see docs/images.md).
"""

from __future__ import annotations

import enum
import gzip
import logging
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from devdep.images.boot import ImageStore
from devdep.images.cpio import CpioWriter
from devdep.images.debian import candidate, download, unpack
from devdep.images.digests import bytes_sha384, inputs_digest
from devdep.images.errors import ImageBuildFailed, KernelMissing
from devdep.images.kernel import MODULES_DIRECTORY
from devdep.images.manifest import Manifest, utc_now
from devdep.images.progress import BuildProgress, SilentProgress

logger = logging.getLogger(__name__)

BUSYBOX_PACKAGE = "busybox-static"
# Bump when the layout below changes, so stores rebuild their initramfs.
LAYOUT_VERSION = "2"


class Compression(enum.StrEnum):
    NONE = "none"
    GZIP = "gzip"


DEFAULT_COMPRESSION = Compression.NONE


def init_script() -> bytes:
    return resources.files("devdep.images").joinpath("init.sh").read_bytes()


def busybox_applets(busybox: Path) -> list[str]:
    """The applets a busybox binary provides, asked of the binary itself (it is
    static, so the host can run it)."""
    try:
        listed = subprocess.run(
            [str(busybox), "--list"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ImageBuildFailed(f"cannot list the applets of {busybox}: {exc}") from exc
    return sorted({name for name in listed.split() if "/" not in name})


@dataclass(frozen=True)
class ModuleLoad:
    file_name: str
    optional: bool
    network: bool = False

    def load_order_line(self) -> str:
        """`<file> [optional] [network]`, the line /init reads."""
        flags = ["optional"] * self.optional + ["network"] * self.network
        return " ".join([self.file_name, *flags]) + "\n"


def compose(
    busybox: bytes,
    applets: list[str],
    modules: list[tuple[ModuleLoad, bytes]],
    init: bytes,
) -> bytes:
    """The initramfs's cpio bytes, from its parts."""
    archive = CpioWriter()
    archive.add_directory(".")
    for directory in ("bin", "dev", "proc", "sys", "run", "tmp", "sysroot", "agent"):
        archive.add_directory(directory)
    # The kernel opens /dev/console for /init's stdin, stdout and stderr before
    # /init can mount devtmpfs, so the node must be in the archive.
    archive.add_character_device("dev/console", 5, 1)

    archive.add_file("bin/busybox", busybox, 0o755)
    for applet in applets:
        if applet != "busybox":
            archive.add_symlink(f"bin/{applet}", "busybox")

    archive.add_directory("lib")
    archive.add_directory("lib/modules")
    for load, data in modules:
        archive.add_file(f"lib/modules/{load.file_name}", data)
    order = "".join(load.load_order_line() for load, _ in modules)
    archive.add_file("lib/modules/load-order", order.encode())

    # The agent runtime disk, mounted at /agent, holds a Debian /usr and /lib
    # tree; these links let its Python and its dynamic loader find their files
    # at the paths they were built for.
    archive.add_symlink("usr", "/agent/usr")
    archive.add_symlink("lib64", "/agent/lib64")
    archive.add_symlink("lib/x86_64-linux-gnu", "/agent/lib/x86_64-linux-gnu")

    archive.add_file("init", init, 0o755)
    return archive.finish()


@dataclass(frozen=True)
class InitramfsBuild:
    manifest: Manifest
    built: bool


def build_initramfs(
    store: ImageStore,
    progress: BuildProgress | None = None,
    *,
    compression: Compression = DEFAULT_COMPRESSION,
    force: bool = False,
) -> InitramfsBuild:
    """Put the initramfs for the stored kernel in the store; nothing to do when
    one was built from the same kernel, busybox, /init and compression."""
    progress = progress or SilentProgress()
    kernel = store.kernel_manifest()
    if kernel is None:
        raise KernelMissing(f"the image store {store.root} holds no guest kernel")

    with progress.step(f"resolving {BUSYBOX_PACKAGE}"):
        busybox_package, _ = candidate(BUSYBOX_PACKAGE)
    init = init_script()
    inputs = inputs_digest(
        "initramfs",
        LAYOUT_VERSION,
        kernel.sha384,
        busybox_package.version,
        bytes_sha384(init),
        compression.value,
    )
    existing = store.initramfs_manifest()
    if existing is not None and existing.inputs == inputs and not force:
        progress.note(f"the initramfs for kernel {kernel.name} is already in the store")
        return InitramfsBuild(existing, built=False)

    with store.lock(), tempfile.TemporaryDirectory(dir=store.scratch()) as scratch:
        work = Path(scratch)
        with progress.step(f"downloading {BUSYBOX_PACKAGE} {busybox_package.version}"):
            deb = download([busybox_package], work)[BUSYBOX_PACKAGE]
            unpack(deb, work / "busybox")
        busybox = work / "busybox" / "bin" / "busybox"
        if not busybox.is_file():
            raise ImageBuildFailed(f"{BUSYBOX_PACKAGE} holds no /bin/busybox")

        with progress.step("writing the initramfs"):
            modules_directory = store.root / ImageStore.KERNEL / MODULES_DIRECTORY
            modules = [
                (
                    ModuleLoad(
                        str(entry["file"]),
                        bool(entry["optional"]),
                        bool(entry.get("network", False)),
                    ),
                    (modules_directory / str(entry["file"])).read_bytes(),
                )
                for entry in kernel.details["modules"]
            ]
            archive = compose(
                busybox.read_bytes(), busybox_applets(busybox), modules, init
            )
            if compression is Compression.GZIP:
                archive = gzip.compress(archive, compresslevel=6, mtime=0)
            file_name = "initramfs.cpio" + (
                ".gz" if compression is Compression.GZIP else ""
            )
            output = work / "initramfs"
            output.mkdir()
            (output / file_name).write_bytes(archive)

        manifest = Manifest(
            kind="initramfs",
            name=f"initramfs-{kernel.name}",
            file=file_name,
            sha384=bytes_sha384(archive),
            size=len(archive),
            created=utc_now(),
            inputs=inputs,
            details={
                "kernel_release": kernel.name,
                "kernel_sha384": kernel.sha384,
                "busybox_version": busybox_package.version,
                "init_sha384": bytes_sha384(init),
                "compression": compression.value,
            },
        )
        store.install(ImageStore.INITRAMFS, output, manifest)
    logger.info("stored the initramfs for kernel %s", kernel.name)
    return InitramfsBuild(manifest, built=True)
