"""The run's DNS responder: answers A queries for allowlisted names, refuses the rest.

It listens on the gateway address inside the run's namespace, over UDP and
TCP, and answers from the hostname pins, the same addresses the nft sets
allow. It never forwards a query anywhere: a name that is not allowlisted gets
REFUSED, and the query is recorded as a violation. It runs as two threads of
the host agent, so it cannot outlive the process that created the run.
"""

from __future__ import annotations

import ipaddress
import logging
import select
import socket
import struct
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from devdep.netsandbox.violations import Violation, ViolationKind

logger = logging.getLogger(__name__)

# How often a reader thread looks up from its socket to see whether it must
# stop: short, because close() waits for it, and the run's teardown with it.
STOP_POLL = 0.05

Lookup = Callable[[str], list[ipaddress.IPv4Address] | None]
MAX_TTL = 60
TCP_TIMEOUT = 5.0


class DnsResponder:
    """Answers queries on a bound UDP socket and a listening TCP socket."""

    def __init__(
        self,
        udp_socket: socket.socket,
        tcp_socket: socket.socket,
        lookup: Lookup,
        ttl: Callable[[str], float],
        on_violation: Callable[[Violation], None],
    ) -> None:
        self._udp = udp_socket
        self._tcp = tcp_socket
        self._lookup = lookup
        self._ttl = ttl
        self._on_violation = on_violation
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.queries_answered = 0
        self.queries_refused = 0

    def start(self) -> None:
        for target, name in (
            (self._serve_udp, "dns-udp"),
            (self._serve_tcp, "dns-tcp"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._udp.close()
        self._tcp.close()

    def answer(self, wire: bytes) -> bytes | None:
        """The reply to one query in wire format; None for what is not a query."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        if query.flags & dns.flags.QR:
            return None
        response = dns.message.make_response(query, recursion_available=False)
        response.flags |= dns.flags.AA
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()

        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        addresses = self._lookup(name)
        if addresses is None or question.rdclass != dns.rdataclass.IN:
            self.queries_refused += 1
            response.set_rcode(dns.rcode.REFUSED)
            self._on_violation(
                Violation(
                    ViolationKind.DNS,
                    name,
                    53,
                    "dns",
                    datetime.now(UTC),
                    f"refused {dns.rdatatype.to_text(question.rdtype)}",
                )
            )
            return response.to_wire()

        # An allowlisted name answers A with its pinned addresses; every other
        # type (AAAA included: the sandbox has no IPv6) gets an empty answer.
        self.queries_answered += 1
        if question.rdtype == dns.rdatatype.A and addresses:
            ttl = max(1, min(MAX_TTL, int(self._ttl(name))))
            response.answer.append(
                dns.rrset.from_text_list(
                    question.name, ttl, "IN", "A", [str(a) for a in addresses]
                )
            )
        return response.to_wire()

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([self._udp], [], [], STOP_POLL)
            if not readable:
                continue
            try:
                wire, peer = self._udp.recvfrom(4096)
            except OSError:
                continue
            reply = self.answer(wire)
            if reply is not None:
                self._udp.sendto(reply, peer)

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([self._tcp], [], [], STOP_POLL)
            if not readable:
                continue
            try:
                connection, _ = self._tcp.accept()
            except OSError:
                continue
            with connection:
                self._serve_tcp_connection(connection)

    def _serve_tcp_connection(self, connection: socket.socket) -> None:
        connection.settimeout(TCP_TIMEOUT)
        try:
            while True:
                header = _receive_exactly(connection, 2)
                if header is None:
                    return
                (length,) = struct.unpack("!H", header)
                wire = _receive_exactly(connection, length)
                if wire is None:
                    return
                reply = self.answer(wire)
                if reply is None:
                    return
                connection.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError as exc:
            logger.debug("DNS over TCP connection ended: %s", exc)


def _receive_exactly(connection: socket.socket, count: int) -> bytes | None:
    data = b""
    while len(data) < count:
        chunk = connection.recv(count - len(data))
        if not chunk:
            return None
        data += chunk
    return data
