"""Sealed memfds: the value cannot change, no child process receives it, and its
name carries nothing of it."""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from devdep.secrets.memfd import (
    ALL_SEALS,
    F_ADD_SEALS,
    F_GET_SEALS,
    F_SEAL_GROW,
    MEMFD_NAME,
    SealedMemory,
    SealedSecret,
)
from tests.secrets.conftest import canary

LIST_INHERITED_MEMFDS = textwrap.dedent(
    """
    import os
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/memfd:"):
            print(fd, target)
    """
)


def expect_eperm(call: object, *args: object) -> None:
    with pytest.raises(PermissionError) as raised:
        call(*args)  # type: ignore[operator]
    assert raised.value.errno == errno.EPERM


def test_a_sealed_memfd_refuses_write_grow_shrink_and_new_seals() -> None:
    value = canary()
    memory = SealedMemory(value)
    try:
        assert fcntl.fcntl(memory.fd, F_GET_SEALS) == ALL_SEALS
        expect_eperm(os.pwrite, memory.fd, b"x", 0)
        expect_eperm(os.write, memory.fd, b"more")
        expect_eperm(os.ftruncate, memory.fd, len(value) + 4096)
        expect_eperm(os.ftruncate, memory.fd, 1)
        expect_eperm(fcntl.fcntl, memory.fd, F_ADD_SEALS, F_SEAL_GROW)
        expect_eperm(mmap.mmap, memory.fd, len(value), mmap.MAP_SHARED, mmap.PROT_WRITE)
        assert memory.read() == value
        assert os.fstat(memory.fd).st_size == len(value)
    finally:
        memory.close()


def test_a_child_process_does_not_inherit_the_memfd() -> None:
    secret = SealedSecret("DB_PASSKEY", canary(), 1)
    # Control: the same listing does see a memfd the child is meant to inherit.
    inheritable = os.memfd_create("devdep-test-control", 0)
    try:
        assert not os.get_inheritable(secret.fileno())
        child = subprocess.run(
            [sys.executable, "-c", LIST_INHERITED_MEMFDS],
            close_fds=False,  # leave it to O_CLOEXEC alone
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        os.close(inheritable)
        secret.close()

    assert "devdep-test-control" in child.stdout
    assert MEMFD_NAME not in child.stdout


def test_the_memfd_name_and_the_process_maps_carry_no_part_of_the_value() -> None:
    value = b"name-check-" + os.urandom(8).hex().encode()
    secret = SealedSecret("DB_PASSKEY", value, 1)
    try:
        target = str(Path(f"/proc/self/fd/{secret.fileno()}").readlink())
        assert target == f"/memfd:{MEMFD_NAME} (deleted)"
        maps = Path("/proc/self/maps").read_bytes()
        assert value not in maps and b"DB_PASSKEY" not in maps
        for part in (value[:8], value[-8:]):
            assert part not in target.encode()
    finally:
        secret.close()


def test_the_value_is_locked_in_ram() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if os.geteuid() != 0 and soft != resource.RLIM_INFINITY and soft < 1 << 20:
        pytest.skip("RLIMIT_MEMLOCK is too small to lock pages for a non-root user")
    secret = SealedSecret("DB_PASSKEY", canary(), 1)
    try:
        smaps = Path("/proc/self/smaps").read_text().split("\n")
        mapping = next(
            index for index, line in enumerate(smaps) if f"/memfd:{MEMFD_NAME}" in line
        )
        locked = next(
            line for line in smaps[mapping + 1 :] if line.startswith("Locked:")
        )
        assert int(locked.split()[1]) > 0
    finally:
        secret.close()


def test_replace_swaps_the_memfd_and_closes_the_old_one() -> None:
    secret = SealedSecret("DB_PASSKEY", b"first value", 3)
    old_fd = secret.fileno()

    secret.replace(b"second value", 4)

    assert secret.read() == b"second value"
    assert secret.version == 4
    assert fcntl.fcntl(secret.fileno(), F_GET_SEALS) == ALL_SEALS
    if secret.fileno() != old_fd:
        with pytest.raises(OSError):
            os.fstat(old_fd)
    secret.close()
    assert secret.closed
    with pytest.raises(ValueError, match="DB_PASSKEY is closed"):
        secret.read()
    assert "second" not in repr(secret)


def test_a_replace_after_close_leaves_it_closed() -> None:
    secret = SealedSecret("DB_PASSKEY", b"first value", 1)
    secret.close()
    secret.replace(b"late value", 2)
    assert secret.closed


def test_opening_a_session_makes_the_process_non_dumpable() -> None:
    script = textwrap.dedent(
        """
        from datetime import timedelta
        from devdep.secrets import SecretSession
        from devdep.secrets.memfd import process_is_dumpable
        before = process_is_dumpable()
        ttl = timedelta(minutes=1)
        SecretSession.open(None, run_id="r-0000000000", run_ttl=ttl).close()
        print(before, process_is_dumpable())
        """
    )
    child = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert child.stdout.split() == ["True", "False"]
