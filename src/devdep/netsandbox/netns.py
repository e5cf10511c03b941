"""Kernel plumbing: run `ip`, `nft` and `sysctl`, and open sockets inside a namespace.

Named network namespaces are the bind mounts `ip netns add` leaves under
/run/netns. A socket belongs for life to the namespace its creator was in when
it was created, so `socket_in_netns` creates it on a short-lived thread that
has joined the namespace with setns(2); the rest of the process never moves.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from devdep.netsandbox.errors import NetworkSetupError

logger = logging.getLogger(__name__)

NETNS_DIRECTORY = Path("/run/netns")
CLONE_NEWNET = 0x40000000
COMMAND_TIMEOUT = 30.0

T = TypeVar("T")


class CommandFailed(Exception):
    """A plumbing command exited non-zero; carries its arguments and stderr."""

    def __init__(self, arguments: Sequence[str], returncode: int, stderr: str) -> None:
        super().__init__(
            f"{' '.join(arguments)} exited {returncode}: {stderr.strip()[-500:]}"
        )
        self.arguments = list(arguments)
        self.returncode = returncode
        self.stderr = stderr


def run(arguments: Sequence[str], *, stdin: str | None = None) -> str:
    """Run one plumbing command and return its stdout; CommandFailed if it fails."""
    logger.debug("running %s", " ".join(arguments))
    try:
        completed = subprocess.run(
            list(arguments),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CommandFailed(arguments, -1, str(exc)) from exc
    if completed.returncode != 0:
        raise CommandFailed(arguments, completed.returncode, completed.stderr)
    return completed.stdout


def in_netns(netns: str | None, arguments: Sequence[str]) -> list[str]:
    """`arguments` prefixed to run in `netns`, or unchanged for the root namespace."""
    if netns is None:
        return list(arguments)
    return ["ip", "netns", "exec", netns, *arguments]


def nft(netns: str | None, ruleset: str) -> None:
    """Apply an nft script atomically: `nft -f` commits it in one transaction."""
    run(in_netns(netns, ["nft", "-f", "-"]), stdin=ruleset)


def netns_exists(netns: str) -> bool:
    return (NETNS_DIRECTORY / netns).exists()


def list_netns() -> list[str]:
    if not NETNS_DIRECTORY.is_dir():
        return []
    return sorted(entry.name for entry in NETNS_DIRECTORY.iterdir())


def ip_prefix(netns: str | None) -> list[str]:
    return ["ip"] if netns is None else ["ip", "-n", netns]


def require_netns(netns: str | None) -> None:
    if netns is not None and not netns_exists(netns):
        raise NetworkSetupError(
            f"the uplink network namespace {netns!r} does not exist"
        )


_libc: ctypes.CDLL | None = None


def _setns(fd: int) -> None:
    global _libc  # noqa: PLW0603 - loaded once, on first use
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def call_in_netns(netns: str, function: Callable[[], T]) -> T:
    """Call `function` on a thread that has joined `netns`, and return its result.

    setns(2) with CLONE_NEWNET moves only the calling thread, and the thread
    ends right after, so nothing else in the process changes namespace.
    """
    results: list[T] = []
    errors: list[BaseException] = []

    def enter_and_call() -> None:
        try:
            fd = os.open(NETNS_DIRECTORY / netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            results.append(function())
        except BaseException as exc:  # re-raised on the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=enter_and_call, name=f"setns-{netns}")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def socket_in_netns(
    netns: str, family: int, kind: int, protocol: int = 0
) -> socket.socket:
    """A socket that lives in `netns`, whatever namespace its user runs in."""
    return call_in_netns(netns, lambda: socket.socket(family, kind, protocol))
