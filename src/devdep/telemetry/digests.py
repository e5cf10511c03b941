"""SHA-384 digests of files, with a cache keyed on each file's identity so an
unchanged multi-hundred-megabyte image is hashed once, not on every run."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

_CHUNK = 1024 * 1024


def sha384_file(path: Path) -> str:
    digest = hashlib.sha384()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha384_bytes(data: bytes) -> str:
    return hashlib.sha384(data).hexdigest()


def _identity(path: Path) -> str:
    # ctime cannot be set from user space, so a file rewritten with its old
    # size and mtime restored still gets a new identity and is hashed again.
    status = path.stat()
    return (
        f"{status.st_dev}:{status.st_ino}:{status.st_size}:"
        f"{status.st_mtime_ns}:{status.st_ctime_ns}"
    )


class DigestCache:
    """SHA-384 digests remembered per (device, inode, size, mtime, ctime)."""

    def __init__(self, cache_file: Path) -> None:
        self.cache_file = cache_file
        self._entries: dict[str, str] = {}
        self._changed = False
        try:
            loaded = json.loads(cache_file.read_text())
            if isinstance(loaded, dict):
                self._entries = {str(k): str(v) for k, v in loaded.items()}
        except (OSError, ValueError):
            pass

    def sha384(self, path: Path) -> str:
        key = f"{path.resolve()}@{_identity(path)}"
        cached = self._entries.get(key)
        if cached is not None:
            return cached
        digest = sha384_file(path)
        stale = [k for k in self._entries if k.startswith(f"{path.resolve()}@")]
        for old_key in stale:
            del self._entries[old_key]
        self._entries[key] = digest
        self._changed = True
        return digest

    def save(self) -> None:
        if not self._changed:
            return
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.cache_file.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(self._entries, indent=1) + "\n")
            temporary.replace(self.cache_file)
            self._changed = False
        except OSError as exc:
            logger.debug("cannot save the digest cache: %s", exc)
