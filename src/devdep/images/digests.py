"""SHA-384 digests of files and of source trees, as lowercase hex."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from devdep.telemetry.digests import sha384_bytes as bytes_sha384
from devdep.telemetry.digests import sha384_file as file_sha384

__all__ = ["bytes_sha384", "file_sha384", "inputs_digest", "tree_sha384"]


def tree_sha384(root: Path, *, suffixes: Iterable[str] = (".py",)) -> str:
    """One digest over every file below `root` with one of `suffixes`: their
    relative paths and contents, in sorted order, so it moves when any file is
    added, removed, renamed or changed."""
    wanted = tuple(suffixes)
    digest = hashlib.sha384()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if not path.name.endswith(wanted) or "__pycache__" in path.parts:
            continue
        relative = path.relative_to(root).as_posix().encode()
        content = path.read_bytes()
        digest.update(len(relative).to_bytes(4, "big") + relative)
        digest.update(len(content).to_bytes(8, "big") + content)
    return digest.hexdigest()


def inputs_digest(*parts: str) -> str:
    """A digest that names a build's inputs, to tell whether a rebuild is due."""
    return bytes_sha384("\0".join(parts).encode())
