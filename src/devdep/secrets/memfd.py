"""Secret values held in sealed, anonymous memory files, and a process that keeps
them out of core dumps.

A value lives in a `memfd_create` file: anonymous (no path, nothing on a
disk), closed on exec (no child process receives it), and sealed once written,
so no code holding the descriptor can change, grow or shrink it. Its pages are
locked in RAM where the memlock limit allows, so they are not written to swap
either.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import mmap
import os
import threading

logger = logging.getLogger(__name__)

# The memfd's name shows in /proc/<pid>/fd and /proc/<pid>/maps; it is fixed so
# that no byte of a value (or of its env name) ever appears there.
MEMFD_NAME = "devdep-secret"

# Python has had these since 3.8 on Linux; the fallbacks are the values from
# <linux/fcntl.h> for a build that lacks them.
F_ADD_SEALS: int = getattr(fcntl, "F_ADD_SEALS", 1024 + 9)
F_GET_SEALS: int = getattr(fcntl, "F_GET_SEALS", 1024 + 10)
F_SEAL_SEAL: int = getattr(fcntl, "F_SEAL_SEAL", 0x0001)
F_SEAL_SHRINK: int = getattr(fcntl, "F_SEAL_SHRINK", 0x0002)
F_SEAL_GROW: int = getattr(fcntl, "F_SEAL_GROW", 0x0004)
F_SEAL_WRITE: int = getattr(fcntl, "F_SEAL_WRITE", 0x0008)
ALL_SEALS = F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3

# The interpreter itself links the C library, so its symbols are found without
# ctypes.util.find_library, which would run ldconfig on every start.
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_FAILED = ctypes.c_void_p(-1).value

_memlock_warned = threading.Event()


def mark_process_non_dumpable() -> None:
    """Keep this process out of core dumps and out of reach of ptrace and
    /proc/<pid>/mem for other processes of the same user."""
    if _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl(PR_SET_DUMPABLE, 0): {os.strerror(code)}")


def process_is_dumpable() -> bool:
    return bool(_libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))


class SealedMemory:
    """One value in a sealed memfd; the bytes live nowhere else in this object."""

    def __init__(self, value: bytes) -> None:
        self.length = len(value)
        self.fd = os.memfd_create(MEMFD_NAME, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        self._mapping: int | None = None
        try:
            _write_all(self.fd, value)
            fcntl.fcntl(self.fd, F_ADD_SEALS, ALL_SEALS)
            self._mapping = _lock_in_ram(self.fd, self.length)
        except BaseException:
            os.close(self.fd)
            raise

    def read(self) -> bytes:
        chunks: list[bytes] = []
        offset = 0
        while offset < self.length:
            chunk = os.pread(self.fd, self.length - offset, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        if self._mapping is not None:
            _libc.munmap(self._mapping, self.length)
            self._mapping = None
        os.close(self.fd)


def _write_all(fd: int, value: bytes) -> None:
    view = memoryview(value)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _lock_in_ram(fd: int, length: int) -> int | None:
    """Map the sealed file read-only and mlock it, so its pages never go to swap.

    A read-only shared mapping is allowed on a write-sealed memfd. Locking can
    fail under a small RLIMIT_MEMLOCK (8 MiB by default for non-root users); the
    value is still kept, with a warning that swap could then hold it.
    """
    if length == 0:
        return None
    address = _libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if address in (None, _MAP_FAILED):
        _warn_unlocked(ctypes.get_errno())
        return None
    if _libc.mlock(address, length) != 0:
        code = ctypes.get_errno()
        _libc.munmap(address, length)
        _warn_unlocked(code)
        return None
    return int(address)


def _warn_unlocked(code: int) -> None:
    if not _memlock_warned.is_set():
        _memlock_warned.set()
        logger.warning(
            "cannot lock secret memory in RAM (%s); swap could hold secret values "
            "(raise RLIMIT_MEMLOCK, or run without swap)",
            errno.errorcode.get(code, str(code)),
        )


class SealedSecret:
    """One secret of a run: its env name, its version, and its value in a memfd.

    Rotation replaces the memfd under a lock, so `read()` returns either the old
    value or the new one, never a mix.
    """

    def __init__(self, name: str, value: bytes, version: int | None) -> None:
        self.name = name
        self.version = version
        self._lock = threading.Lock()
        self._memory: SealedMemory | None = SealedMemory(value)

    def __repr__(self) -> str:
        state = "closed" if self._memory is None else f"fd={self._memory.fd}"
        return f"SealedSecret(name={self.name!r}, version={self.version}, {state})"

    @property
    def closed(self) -> bool:
        return self._memory is None

    def fileno(self) -> int:
        """The memfd holding the current value."""
        return self._open_memory().fd

    def read(self) -> bytes:
        with self._lock:
            return self._open_memory().read()

    def replace(self, value: bytes, version: int | None) -> None:
        """Swap in a new value: a new sealed memfd first, then the old one closed."""
        fresh = SealedMemory(value)
        with self._lock:
            if self._memory is None:
                # Closed while the new value was being fetched: keep it closed.
                stale = fresh
            else:
                stale, self._memory = self._memory, fresh
                self.version = version
        stale.close()

    def close(self) -> None:
        with self._lock:
            memory, self._memory = self._memory, None
        if memory is not None:
            memory.close()

    def _open_memory(self) -> SealedMemory:
        if self._memory is None:
            raise ValueError(f"secret {self.name} is closed")
        return self._memory
