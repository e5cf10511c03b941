"""TLS listeners on 127.0.0.1 that are slow on purpose, for the route checks.

This kernel has no netem, so a slow node is a listener that waits before it
accepts a connection, or before it answers the TLS handshake.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
from pathlib import Path


class SlowTlsNode:
    """Serves TLS handshakes on 127.0.0.1, after `accept_delay` and `handshake_delay`.

    With `never_answer`, it accepts and then stays silent, so a probe times out.
    """

    def __init__(
        self,
        certificate: Path,
        key: Path,
        *,
        accept_delay: float = 0.0,
        handshake_delay: float = 0.0,
        never_answer: bool = False,
    ) -> None:
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(certificate, key)
        self._accept_delay = accept_delay
        self._handshake_delay = handshake_delay
        self._never_answer = never_answer
        self._socket = socket.create_server(("127.0.0.1", 0), backlog=32)
        self.port = self._socket.getsockname()[1]
        self.handshakes = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._held: list[socket.socket] = []
        thread = threading.Thread(target=self._serve, daemon=True)
        thread.start()
        self._threads.append(thread)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([self._socket], [], [], 0.05)
            if not readable:
                continue
            if self._stop.wait(self._accept_delay):
                return
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            if self._never_answer:
                self._held.append(connection)
                continue
            worker = threading.Thread(
                target=self._handshake, args=(connection,), daemon=True
            )
            worker.start()
            self._threads.append(worker)

    def _handshake(self, connection: socket.socket) -> None:
        with connection:
            if self._stop.wait(self._handshake_delay):
                return
            connection.settimeout(5)
            try:
                with self._context.wrap_socket(connection, server_side=True):
                    self.handshakes += 1
            except (OSError, ssl.SSLError):
                return

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        for connection in self._held:
            connection.close()
        self._socket.close()


def unused_port() -> int:
    """A loopback port with nothing listening on it: connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
