"""Root file system images: the default Debian image built with debootstrap,
and ext4 images imported from a file. Each is stored with its SHA-384.

The guest mounts an image read-only (or through a throw-away snapshot), so an
image needs no Python and no special layout: /init and the agent bring their
own, on the initramfs and the agent runtime disk.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from devdep.images.boot import DEFAULT_IMAGE, ImageStore, valid_image_name
from devdep.images.debian import run_tool
from devdep.images.digests import file_sha384, inputs_digest
from devdep.images.errors import ImageBuildFailed, ImageError
from devdep.images.ext4 import make_ext4
from devdep.images.manifest import Manifest, utc_now
from devdep.images.progress import BuildProgress, SilentProgress

logger = logging.getLogger(__name__)

ROOTFS_NAME = "rootfs.ext4"
MIRROR_ENVIRONMENT_VARIABLE = "DEVDEP_DEBIAN_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Bump when the recipe below changes, so stores rebuild the image.
LAYOUT_VERSION = "1"

_EXT4_MAGIC_OFFSET = 1024 + 0x38
_EXT4_MAGIC = b"\x53\xef"


@dataclass(frozen=True)
class DebianRecipe:
    name: str
    suite: str
    variant: str
    include: tuple[str, ...]


DEFAULT_RECIPE = DebianRecipe(
    name=DEFAULT_IMAGE,
    suite="bookworm",
    variant="minbase",
    include=("busybox", "curl", "ca-certificates"),
)

# What debootstrap leaves that no job needs: apt's downloaded packages and
# indexes (the guest has no network to refresh them with by default).
_TRIMMED = ("var/cache/apt", "var/lib/apt/lists", "var/log")


@dataclass(frozen=True)
class ImageBuild:
    manifest: Manifest
    built: bool


def build_base_image(
    store: ImageStore,
    progress: BuildProgress | None = None,
    *,
    recipe: DebianRecipe = DEFAULT_RECIPE,
    force: bool = False,
) -> ImageBuild:
    """Build a Debian image with debootstrap from Debian's archive and store it
    as an ext4 file; nothing to do when the store holds one of the same recipe."""
    progress = progress or SilentProgress()
    mirror = os.environ.get(MIRROR_ENVIRONMENT_VARIABLE) or DEFAULT_MIRROR
    inputs = inputs_digest(
        "image",
        LAYOUT_VERSION,
        recipe.suite,
        recipe.variant,
        ",".join(recipe.include),
        mirror,
    )
    existing = store.image_manifest(recipe.name)
    if existing is not None and existing.inputs == inputs and not force:
        progress.note(f"image {recipe.name} is already in the store")
        return ImageBuild(existing, built=False)
    if os.geteuid() != 0:
        raise ImageBuildFailed(
            "building a Debian image needs root (debootstrap creates device "
            "nodes and runs package scripts in a chroot)",
            hint="run 'devdep-cli image build-base' as root",
        )

    with store.lock(), tempfile.TemporaryDirectory(dir=store.scratch()) as scratch:
        work = Path(scratch)
        tree = work / "tree"
        with progress.step(
            f"debootstrap {recipe.suite} ({recipe.variant}, with "
            f"{', '.join(recipe.include)})"
        ):
            try:
                run_tool(
                    [
                        "debootstrap",
                        f"--variant={recipe.variant}",
                        f"--include={','.join(recipe.include)}",
                        recipe.suite,
                        str(tree),
                        mirror,
                    ]
                )
            finally:
                _unmount_below(tree)
        for relative in _TRIMMED:
            target = tree / relative
            if target.is_dir():
                shutil.rmtree(target)
                target.mkdir(mode=0o755)
        manifest = _store_tree(
            store,
            recipe.name,
            tree,
            work,
            inputs,
            progress,
            details={
                "source": "debootstrap",
                "suite": recipe.suite,
                "variant": recipe.variant,
                "include": list(recipe.include),
                "mirror": mirror,
            },
        )
    logger.info("stored image %s (%s)", recipe.name, manifest.sha384[:16])
    return ImageBuild(manifest, built=True)


def _unmount_below(tree: Path) -> None:
    """Unmount what a failed debootstrap left mounted in its tree (/proc,
    /sys), deepest first, so removing the tree cannot reach the host's."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    prefix = f"{tree.resolve()}/"
    # /proc/mounts escapes spaces and other blanks as octal sequences.
    points = [
        line.split()[1].encode().decode("unicode_escape")
        for line in lines
        if len(line.split()) > 1
    ]
    for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
        logger.warning("unmounting %s, left behind by debootstrap", point)
        subprocess.run(["umount", "--lazy", point], check=False)


def _store_tree(
    store: ImageStore,
    name: str,
    tree: Path,
    work: Path,
    inputs: str,
    progress: BuildProgress,
    details: dict[str, object],
) -> Manifest:
    output = work / "image"
    output.mkdir()
    with progress.step("writing the ext4 image (mkfs.ext4 -d)"):
        # With a journal: a job that asks for a writable rootfs mounts it
        # read-write, through a snapshot the VMM throws away afterwards.
        make_ext4(tree, output / ROOTFS_NAME, label=name[:16], journal=True)
    return _install(store, name, output, inputs, progress, details)


def _install(
    store: ImageStore,
    name: str,
    output: Path,
    inputs: str,
    progress: BuildProgress,
    details: dict[str, object],
) -> Manifest:
    with progress.step(f"computing the SHA-384 of {name}"):
        digest = file_sha384(output / ROOTFS_NAME)
    manifest = Manifest(
        kind="image",
        name=name,
        file=ROOTFS_NAME,
        sha384=digest,
        size=(output / ROOTFS_NAME).stat().st_size,
        created=utc_now(),
        inputs=inputs,
        details=details,
    )
    store.install(f"{ImageStore.IMAGES}/{name}", output, manifest)
    return manifest


def is_ext4(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            handle.seek(_EXT4_MAGIC_OFFSET)
            return handle.read(2) == _EXT4_MAGIC
    except OSError:
        return False


def import_image(
    store: ImageStore,
    name: str,
    source: Path,
    progress: BuildProgress | None = None,
    *,
    force: bool = False,
) -> ImageBuild:
    """Copy an ext4 file into the store as image `name`."""
    progress = progress or SilentProgress()
    if not valid_image_name(name):
        raise ImageError(
            f"{name!r} is not a valid image name",
            hint="use lowercase letters, digits, '.', '_' and '-', up to 63 "
            "characters, starting with a letter or digit",
        )
    if not source.is_file():
        raise ImageError(f"{source} is not a file")
    if not is_ext4(source):
        raise ImageError(
            f"{source} is not an ext4 file system",
            hint="make one from a directory tree with 'mkfs.ext4 -d TREE FILE SIZE'",
        )
    if store.image_manifest(name) is not None and not force:
        raise ImageError(
            f"image {name!r} is already in the store",
            hint="pass --force to replace it",
        )

    with store.lock(), tempfile.TemporaryDirectory(dir=store.scratch()) as scratch:
        output = Path(scratch) / "image"
        output.mkdir()
        with progress.step(f"copying {source}"):
            shutil.copyfile(source, output / ROOTFS_NAME)
        manifest = _install(
            store,
            name,
            output,
            inputs_digest("import", str(source.resolve())),
            progress,
            details={"source": "import", "file": str(source.resolve())},
        )
    logger.info("imported image %s from %s", name, source)
    return ImageBuild(manifest, built=True)
