"""A TLS listener on loopback with a self-signed certificate nobody trusts."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from tempfile import TemporaryDirectory

from tests.support.certificates import self_signed_certificate


@contextlib.contextmanager
def self_signed_tls_server() -> Iterator[int]:
    """Accept TLS handshakes on a loopback port until the block ends; yields the
    port."""
    with TemporaryDirectory() as directory:
        certificate, key = self_signed_certificate(Path(directory), "untrusted.invalid")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificate, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                continue
            with connection:
                connection.settimeout(5)
                try:
                    with context.wrap_socket(connection, server_side=True):
                        pass
                except (OSError, ssl.SSLError):
                    pass

    thread = threading.Thread(target=serve, name="untrusted-tls", daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        listener.close()
