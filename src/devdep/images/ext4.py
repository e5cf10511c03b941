"""ext4 file systems made from a directory tree with `mkfs.ext4 -d`: no loop
device, no mount, no root needed for the image itself."""

from __future__ import annotations

import os
from pathlib import Path

from devdep.images.debian import run_tool

_BLOCK = 4096


def tree_size(root: Path) -> int:
    """Bytes the tree takes on disk, counting each file in whole blocks."""
    total = 0
    for directory, directories, files in os.walk(root):
        for name in [*directories, *files]:
            size = os.lstat(Path(directory) / name).st_size
            total += max(_BLOCK, -(-size // _BLOCK) * _BLOCK)
    return total


def make_ext4(
    tree: Path,
    output: Path,
    *,
    label: str,
    journal: bool,
    free_fraction: float = 0.15,
) -> None:
    """Write `tree` as an ext4 file system to `output`, sized to the tree plus
    room for metadata and `free_fraction` of free space.

    A disk that is only ever mounted read-only needs no journal."""
    used = tree_size(tree)
    size = int(used * (1 + free_fraction)) + 32 * 1024 * 1024
    size -= size % (1024 * 1024)
    features = [] if journal else ["-O", "^has_journal"]
    run_tool(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            label,
            "-m",
            "0",
            *features,
            "-d",
            str(tree),
            str(output),
            f"{size // 1024}k",
        ],
        env={**os.environ, "E2FSPROGS_FAKE_TIME": "1"},
    )
