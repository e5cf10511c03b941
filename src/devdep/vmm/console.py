"""Capture what a VM writes to a pipe (its serial console, the VMM's stderr) into
a bounded buffer.

The guest controls its console and may write without end, so only the last
`capacity` bytes are kept: enough for the tail shown when a boot fails.
"""

from __future__ import annotations

import logging
import os
import threading

logger = logging.getLogger(__name__)

DEFAULT_CAPACITY = 256 * 1024
_READ_SIZE = 16 * 1024


class RingBuffer:
    """The last `capacity` bytes written to it; thread-safe."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._data = bytearray()
        self._dropped = 0
        self._lock = threading.Lock()

    def write(self, chunk: bytes) -> None:
        with self._lock:
            self._data += chunk
            excess = len(self._data) - self.capacity
            if excess > 0:
                del self._data[:excess]
                self._dropped += excess

    @property
    def dropped(self) -> int:
        """How many of the oldest bytes were discarded to stay within capacity."""
        with self._lock:
            return self._dropped

    def getvalue(self) -> bytes:
        with self._lock:
            return bytes(self._data)

    def tail(self, lines: int) -> list[str]:
        """The last `lines` lines as text, with control characters made visible.

        The first line may be cut short where the buffer wrapped.
        """
        text = self.getvalue().decode("utf-8", "replace").replace("\r", "")
        selected = text.splitlines()[-lines:] if lines > 0 else []
        return [_printable(line) for line in selected]


def _printable(line: str) -> str:
    # A guest may print escape sequences; never let them reach the terminal.
    return "".join(
        character if character.isprintable() or character == "\t" else "?"
        for character in line
    )


class PipeReader:
    """A daemon thread that copies a file descriptor into a RingBuffer until EOF."""

    def __init__(self, descriptor: int, buffer: RingBuffer, name: str) -> None:
        self._descriptor = descriptor
        self.buffer = buffer
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                chunk = os.read(self._descriptor, _READ_SIZE)
                if not chunk:
                    return
                self.buffer.write(chunk)
        except OSError as exc:
            logger.debug("%s: read ended: %s", self._thread.name, exc)
        finally:
            os.close(self._descriptor)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
