"""Hostname pins: allowlisted names resolved on the host, and kept fresh.

A name is resolved when the run's sandbox is created, before the VM boots, and
its IPv4 addresses are pinned into the name's nft set with a timeout. A timer
re-resolves each name before its pin runs out. A name that stops resolving
keeps its old addresses until their timeout, then allows nothing: the policy
fails closed on its own, in the kernel.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

logger = logging.getLogger(__name__)

Resolver = Callable[[str], list[ipaddress.IPv4Address]]
DEFAULT_PIN_TIMEOUT = timedelta(minutes=5)
# Re-resolve when this share of the pin has passed, so a slow resolver still
# finishes before the kernel lets the old addresses expire.
REFRESH_AT = 0.8


def resolve_ipv4(hostname: str) -> list[ipaddress.IPv4Address]:
    """The host's own resolution (getaddrinfo, so /etc/hosts and nsswitch apply)."""
    try:
        entries = socket.getaddrinfo(hostname, None, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise LookupError(f"cannot resolve {hostname}: {exc.strerror}") from exc
    addresses = {ipaddress.IPv4Address(entry[4][0]) for entry in entries}
    if not addresses:
        raise LookupError(f"{hostname} has no IPv4 address")
    return sorted(addresses)


@dataclass
class Pin:
    hostname: str
    set_name: str
    addresses: list[ipaddress.IPv4Address]
    expires: float  # time.monotonic()


class HostnamePins:
    """The pinned addresses of a run's allowlisted names, and their refresher.

    `apply(pin)` writes one pin into the kernel; it is called with the pin's
    new addresses before they are served by DNS.
    """

    def __init__(
        self,
        resolver: Resolver,
        timeout: timedelta,
        apply: Callable[[Pin], None],
    ) -> None:
        self._resolver = resolver
        self._timeout = timeout
        self._apply = apply
        self._lock = threading.Lock()
        self._pins: dict[str, Pin] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def pin(self, hostname: str, set_name: str) -> Pin:
        """Resolve and pin a name now; LookupError if it does not resolve."""
        addresses = self._resolver(hostname)
        pin = Pin(
            hostname,
            set_name,
            addresses,
            time.monotonic() + self._timeout.total_seconds(),
        )
        self._apply(pin)
        with self._lock:
            self._pins[hostname] = pin
        logger.debug("pinned %s to %s", hostname, ", ".join(map(str, addresses)))
        return pin

    def addresses(self, hostname: str) -> list[ipaddress.IPv4Address] | None:
        """The live pinned addresses of an allowlisted name; None if not allowlisted."""
        with self._lock:
            pin = self._pins.get(hostname)
        if pin is None:
            return None
        if time.monotonic() >= pin.expires:
            return []
        return list(pin.addresses)

    def remaining(self, hostname: str) -> float:
        with self._lock:
            pin = self._pins.get(hostname)
        return 0.0 if pin is None else max(0.0, pin.expires - time.monotonic())

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._refresh_loop, name="pin-refresh", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _refresh_loop(self) -> None:
        period = self._timeout.total_seconds()
        while not self._stop.wait(timeout=max(0.2, period * (1 - REFRESH_AT) / 4)):
            with self._lock:
                due = [
                    pin
                    for pin in self._pins.values()
                    if pin.expires - time.monotonic() <= period * (1 - REFRESH_AT)
                ]
            for pin in due:
                try:
                    self.pin(pin.hostname, pin.set_name)
                except Exception as exc:  # a refresh failure must not end the loop
                    logger.warning(
                        "could not re-resolve %s; its pin runs out in %.0fs: %s",
                        pin.hostname,
                        self.remaining(pin.hostname),
                        exc,
                    )
