"""A writer of the "newc" cpio format, the one the Linux kernel unpacks as an
initramfs, so building an initramfs needs neither root nor the cpio tool.

Every entry has uid 0, gid 0 and mtime 0: the same inputs give the same bytes,
and so the same SHA-384.
"""

from __future__ import annotations

import stat
from pathlib import PurePosixPath

_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


class CpioWriter:
    """Collects entries in order; `finish()` returns the archive's bytes.

    A directory must be added before what it contains: the kernel creates the
    entries in archive order and does not create missing parents."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._next_inode = 1
        self._names: set[str] = set()

    def add_directory(self, path: str, mode: int = 0o755) -> None:
        self._entry(path, stat.S_IFDIR | mode, b"", nlink=2)

    def add_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(path, stat.S_IFREG | mode, data)

    def add_symlink(self, path: str, target: str) -> None:
        self._entry(path, stat.S_IFLNK | 0o777, target.encode())

    def add_character_device(
        self, path: str, major: int, minor: int, mode: int = 0o600
    ) -> None:
        self._entry(path, stat.S_IFCHR | mode, b"", device=(major, minor))

    def has(self, path: str) -> bool:
        return _normalise(path) in self._names

    def _entry(
        self,
        path: str,
        mode: int,
        data: bytes,
        *,
        nlink: int = 1,
        device: tuple[int, int] = (0, 0),
    ) -> None:
        name = _normalise(path)
        if name in self._names:
            raise ValueError(f"{path} is already in the archive")
        self._names.add(name)
        inode = self._next_inode
        self._next_inode += 1
        self._write(name, mode, data, inode=inode, nlink=nlink, device=device)

    def _write(
        self,
        name: str,
        mode: int,
        data: bytes,
        *,
        inode: int,
        nlink: int,
        device: tuple[int, int],
    ) -> None:
        encoded = name.encode() + b"\0"
        fields = (
            inode,
            mode,
            0,  # uid
            0,  # gid
            nlink,
            0,  # mtime
            len(data),
            0,  # devmajor
            0,  # devminor
            device[0],  # rdevmajor
            device[1],  # rdevminor
            len(encoded),
            0,  # check: unused by newc
        )
        header = _MAGIC + b"".join(b"%08X" % value for value in fields)
        self._chunks.append(header + encoded + _pad(len(header) + len(encoded)))
        self._chunks.append(data + _pad(len(data)))

    def finish(self) -> bytes:
        self._write(_TRAILER, 0, b"", inode=0, nlink=1, device=(0, 0))
        return b"".join(self._chunks)


def _normalise(path: str) -> str:
    # newc names are relative ("bin/sh"), and "." is the archive's root.
    name = str(PurePosixPath("/", path)).lstrip("/")
    return name or "."
