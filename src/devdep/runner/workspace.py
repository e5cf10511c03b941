"""The workspace a run copies into its VM: the files of a directory, less what its
`.gitignore` and `.devdepignore` files exclude, as a tar archive.

Ignore files work as in git: each applies to its own directory and below, a
deeper file overrides a shallower one, `!pattern` re-includes, and an excluded
directory is not entered at all. `.git` and `devdep-artifacts/` are never
copied. The size limit is checked on the files' sizes before any VM boots.
"""

from __future__ import annotations

import logging
import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pathspec

from devdep.errors import UsageError

logger = logging.getLogger(__name__)

DEFAULT_SIZE_LIMIT = 512 * 1024 * 1024
IGNORE_FILES = (".gitignore", ".devdepignore")
ARTIFACTS_DIRECTORY = "devdep-artifacts"
_NEVER_COPIED = {".git", ARTIFACTS_DIRECTORY}


class WorkspaceError(UsageError):
    """The workspace cannot be copied: missing, unreadable or too large."""


class WorkspaceTooLarge(WorkspaceError):
    def __init__(self, root: Path, size: int, limit: int) -> None:
        super().__init__(
            f"the workspace {root} holds more than {_mebibytes(limit)} of files "
            f"to copy (at least {_mebibytes(size)}), the limit",
            hint="exclude build outputs and data in .devdepignore (gitignore "
            "syntax), or point --workspace at a smaller directory",
        )
        self.size = size
        self.limit = limit


def _mebibytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


@dataclass(frozen=True)
class WorkspaceEntry:
    relative: str  # POSIX path inside the workspace
    path: Path
    kind: str  # "file", "dir" or "symlink"
    size: int


@dataclass(frozen=True)
class Workspace:
    root: Path
    entries: tuple[WorkspaceEntry, ...]

    @property
    def size(self) -> int:
        return sum(entry.size for entry in self.entries)

    @property
    def file_count(self) -> int:
        return sum(1 for entry in self.entries if entry.kind == "file")

    def write_tar(self, destination: BinaryIO) -> None:
        """Write the workspace as an uncompressed tar stream: the guest is slow at
        decompressing and the bytes only cross a local socket."""
        with tarfile.open(
            fileobj=destination, mode="w|", format=tarfile.PAX_FORMAT
        ) as tar:
            for entry in self.entries:
                info = tar.gettarinfo(str(entry.path), arcname=entry.relative)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                if entry.kind == "file":
                    with entry.path.open("rb") as handle:
                        tar.addfile(info, handle)
                else:
                    tar.addfile(info)


class _IgnoreRules:
    """The stack of ignore files that apply to one directory."""

    def __init__(
        self, layers: tuple[tuple[str, pathspec.GitIgnoreSpec], ...] = ()
    ) -> None:
        self.layers = layers

    def entered(self, directory: Path, relative: str) -> _IgnoreRules:
        specs: list[str] = []
        for name in IGNORE_FILES:
            ignore_file = directory / name
            try:
                specs += ignore_file.read_text(
                    encoding="utf-8", errors="replace"
                ).splitlines()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise WorkspaceError(
                    f"cannot read {ignore_file}: {exc.strerror}"
                ) from exc
        if not specs:
            return self
        layer = (relative, pathspec.GitIgnoreSpec.from_lines(specs))
        return _IgnoreRules((*self.layers, layer))

    def ignores(self, relative: str, is_directory: bool) -> bool:
        """Whether the last layer with a matching pattern excludes `relative`."""
        verdict = False
        for base, spec in self.layers:
            inside = relative[len(base) + 1 :] if base else relative
            candidate = f"{inside}/" if is_directory else inside
            result = spec.check_file(candidate)
            if result.include is not None:
                verdict = result.include
        return verdict


def collect_workspace(root: Path, *, size_limit: int = DEFAULT_SIZE_LIMIT) -> Workspace:
    """List the files to copy from `root`; raise WorkspaceTooLarge past the limit."""
    if not root.is_dir():
        raise WorkspaceError(f"the workspace {root} is not a directory")
    entries: list[WorkspaceEntry] = []
    total = 0
    for entry in _walk(root, "", _IgnoreRules().entered(root, "")):
        entries.append(entry)
        total += entry.size
        if total > size_limit:
            # Stop at once: a huge tree should not keep the user waiting for
            # an error, so the size reported is a lower bound.
            raise WorkspaceTooLarge(root, total, size_limit)
    logger.debug("workspace %s: %d entries, %d bytes", root, len(entries), total)
    return Workspace(root, tuple(entries))


def _walk(root: Path, relative: str, rules: _IgnoreRules) -> Iterator[WorkspaceEntry]:
    directory = root / relative if relative else root
    try:
        children = sorted(os.scandir(directory), key=lambda child: child.name)
    except OSError as exc:
        raise WorkspaceError(f"cannot list {directory}: {exc.strerror}") from exc
    for child in children:
        child_relative = f"{relative}/{child.name}" if relative else child.name
        if child.name in _NEVER_COPIED and not relative:
            continue
        if child.name == ".git":
            continue
        status = child.stat(follow_symlinks=False)
        if stat.S_ISLNK(status.st_mode):
            if not rules.ignores(child_relative, is_directory=False):
                yield WorkspaceEntry(child_relative, Path(child.path), "symlink", 0)
        elif stat.S_ISDIR(status.st_mode):
            if rules.ignores(child_relative, is_directory=True):
                continue
            yield WorkspaceEntry(child_relative, Path(child.path), "dir", 0)
            yield from _walk(
                root, child_relative, rules.entered(Path(child.path), child_relative)
            )
        elif stat.S_ISREG(status.st_mode) and not rules.ignores(
            child_relative, is_directory=False
        ):
            yield WorkspaceEntry(
                child_relative, Path(child.path), "file", status.st_size
            )
        # Sockets, FIFOs and devices are never copied: they have no content.
