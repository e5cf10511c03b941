"""The agent runtime disk: a Python 3 runtime from Debian's archive and the
`devdep.guest` package, on a read-only ext4 disk the guest mounts at /agent.

The user's image needs no Python at all: /init runs the agent from this disk,
as `/usr/bin/python3 -I -S -m devdep.guest.agent`, with links in the
initramfs pointing /usr, /lib64 and the library directory into /agent.

The runtime is a handful of packages unpacked with `dpkg -x` (never
installed), trimmed of documentation, locales and modules the agent does not
use, and byte-compiled ahead of time: the disk is read-only, so a module
without its .pyc would be compiled again at every start, which under TCG
costs whole seconds.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from devdep.images.boot import ImageStore, guest_sources, guest_sources_digest
from devdep.images.debian import PackageVersion, candidates, download, run_tool, unpack
from devdep.images.digests import file_sha384, inputs_digest
from devdep.images.errors import ImageBuildFailed
from devdep.images.ext4 import make_ext4
from devdep.images.manifest import Manifest, utc_now
from devdep.images.progress import BuildProgress, SilentProgress

logger = logging.getLogger(__name__)

PYTHON_VERSION = "3.11"
# The interpreter, its standard library, and the shared libraries those load.
RUNTIME_PACKAGES = (
    f"python{PYTHON_VERSION}-minimal",
    f"libpython{PYTHON_VERSION}-minimal",
    f"libpython{PYTHON_VERSION}-stdlib",
    "libc6",
    "zlib1g",
    "libexpat1",
    "libssl3",
    "libbz2-1.0",
    "liblzma5",
    "libffi8",
)
DISK_NAME = "agent.ext4"
# Bump when the layout of the disk changes, so stores rebuild it.
LAYOUT_VERSION = "1"

_LIBRARY = f"usr/lib/python{PYTHON_VERSION}"
# Paths below the unpacked tree that the agent never needs.
_TRIMMED = (
    "usr/share",
    "usr/sbin",
    "sbin",
    "etc",
    "var",
    "usr/lib/x86_64-linux-gnu/gconv",
    "usr/lib/x86_64-linux-gnu/audit",
    "usr/lib/x86_64-linux-gnu/engines-3",
    "usr/lib/x86_64-linux-gnu/ossl-modules",
    f"{_LIBRARY}/config-{PYTHON_VERSION}-x86_64-linux-gnu",
    f"{_LIBRARY}/ensurepip",
    f"{_LIBRARY}/idlelib",
    f"{_LIBRARY}/lib2to3",
    f"{_LIBRARY}/pydoc_data",
    f"{_LIBRARY}/tkinter",
    f"{_LIBRARY}/turtledemo",
    f"{_LIBRARY}/unittest",
    f"{_LIBRARY}/distutils",
    f"{_LIBRARY}/venv",
    f"{_LIBRARY}/test",
)
_PACKAGE_STUB = '"""The guest side of devdep: only devdep.guest ships into the VM."""\n'


@dataclass(frozen=True)
class AgentDiskBuild:
    manifest: Manifest
    built: bool


def build_agent_disk(
    store: ImageStore, progress: BuildProgress | None = None, *, force: bool = False
) -> AgentDiskBuild:
    """Put the agent runtime disk in the store; nothing to do when one was built
    from the same packages and the same `devdep.guest` sources."""
    progress = progress or SilentProgress()
    with progress.step("resolving the Python runtime's packages"):
        resolved = candidates(list(RUNTIME_PACKAGES))
        packages = [resolved[name][0] for name in RUNTIME_PACKAGES]
    sources = guest_sources_digest()
    inputs = inputs_digest(
        "agent", LAYOUT_VERSION, sources, *(package.pinned for package in packages)
    )
    existing = store.agent_manifest()
    if existing is not None and existing.inputs == inputs and not force:
        progress.note("the agent runtime disk is up to date")
        return AgentDiskBuild(existing, built=False)

    with store.lock(), tempfile.TemporaryDirectory(dir=store.scratch()) as scratch:
        work = Path(scratch)
        tree = work / "tree"
        _unpack_runtime(packages, work, tree, progress)
        with progress.step("adding the guest agent"):
            _add_agent(tree)
        with progress.step("byte-compiling the runtime"):
            _compile(tree)
        output = work / "agent"
        output.mkdir()
        with progress.step("writing the agent runtime disk (mkfs.ext4 -d)"):
            make_ext4(tree, output / DISK_NAME, label="devdep-agent", journal=False)
        with progress.step("computing the agent disk's SHA-384"):
            digest = file_sha384(output / DISK_NAME)
        manifest = Manifest(
            kind="agent",
            name=f"python{PYTHON_VERSION}-agent",
            file=DISK_NAME,
            sha384=digest,
            size=(output / DISK_NAME).stat().st_size,
            created=utc_now(),
            inputs=inputs,
            details={
                "python": "/usr/bin/python3",
                "agent_sources": sources,
                "packages": {package.name: package.version for package in packages},
            },
        )
        store.install(ImageStore.AGENT, output, manifest)
    logger.info("stored the agent runtime disk %s", digest[:16])
    return AgentDiskBuild(manifest, built=True)


def _unpack_runtime(
    packages: list[PackageVersion], work: Path, tree: Path, progress: BuildProgress
) -> None:
    downloads = work / "debs"
    downloads.mkdir()
    with progress.step(f"downloading {len(packages)} packages for Python"):
        debs = download(packages, downloads)
    with progress.step("unpacking the Python runtime"):
        for deb in debs.values():
            unpack(deb, tree)
    for relative in _TRIMMED:
        shutil.rmtree(tree / relative, ignore_errors=True)
    python = tree / "usr" / "bin" / f"python{PYTHON_VERSION}"
    if not python.is_file():
        raise ImageBuildFailed(f"the unpacked runtime has no {python.name}")
    for entry in (tree / "usr" / "bin").iterdir():
        if entry.name != python.name:
            entry.unlink()
    (tree / "usr" / "bin" / "python3").symlink_to(python.name)


def _add_agent(tree: Path) -> None:
    # In the standard library's own directory, devdep.guest is importable
    # under -I -S, which ignore PYTHONPATH and .pth files alike.
    package = tree / _LIBRARY / "devdep"
    package.mkdir()
    (package / "__init__.py").write_text(_PACKAGE_STUB)
    sources = guest_sources()
    if sources.is_dir():
        shutil.copytree(
            sources,
            package / "guest",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    else:
        logger.warning("no devdep.guest package at %s; the disk has no agent", sources)


def _compile(tree: Path) -> None:
    """Byte-compile with the runtime's own interpreter, run on the host through
    its own dynamic loader, so the .pyc files match it exactly.

    unchecked-hash: the files never change on a read-only disk, so Python need
    not stat each source to validate its .pyc."""
    libraries = f"{tree}/lib/x86_64-linux-gnu:{tree}/usr/lib/x86_64-linux-gnu"
    run_tool(
        [
            str(tree / "lib64" / "ld-linux-x86-64.so.2"),
            "--library-path",
            libraries,
            str(tree / "usr" / "bin" / f"python{PYTHON_VERSION}"),
            "-I",
            "-S",
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "-o",
            "0",
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
            str(tree),
            "-p",
            "/",
            str(tree / _LIBRARY),
        ]
    )
