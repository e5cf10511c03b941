"""Violation events: every packet the egress policy drops, read from nfnetlink_log.

The run's nft rules end each drop with `log group N prefix "<reason>"`. The
kernel copies the dropped packet's headers to every netlink socket bound to
that group *in the run's namespace*, so the reader's socket is opened inside
it (see `netns.socket_in_netns`). nft `queue` would let us decide per packet,
but this kernel lacks it, and a log is all a violation needs.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

logger = logging.getLogger(__name__)

# How often a reader thread looks up from its socket to see whether it must
# stop: short, because close() waits for it, and the run's teardown with it.
STOP_POLL = 0.05

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_TIMEOUT = 4
NFULA_CFG_QTHRESH = 5
NFULNL_CFG_CMD_BIND = 1
NFULNL_COPY_PACKET = 2
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLA_TYPE_MASK = 0x3FFF

# Enough for an IPv6 header plus TCP/UDP ports; the rest of a packet is never
# needed, and never copied out of the kernel.
COPY_RANGE = 96
# Past this many, violations are only counted: a guest that floods must not
# grow the host agent's memory without bound.
MAX_RECORDED = 10_000
# Each of the first violations gets a log line; a flood must not flood the log.
MAX_LOGGED = 100

_PROTOCOLS = {0: "ipv6-hopopt", 1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp"}


class ViolationKind(enum.StrEnum):
    PACKET = "packet"  # a packet dropped by the nft rules
    DNS = "dns"  # a query the run's DNS responder refused


@dataclass(frozen=True)
class Violation:
    """One thing the guest tried that its allowlist does not allow."""

    kind: ViolationKind
    destination: str  # an address, or the queried name for a DNS violation
    port: int | None
    protocol: str  # tcp, udp, icmp, ipv6-icmp, dns, or the IP protocol number
    time: datetime
    reason: str  # the nft rule's log prefix, or "refused" for DNS

    def target(self) -> str:
        if self.kind is ViolationKind.DNS:
            return f"{self.destination} (DNS)"
        host = self.destination
        if ":" in host:
            host = f"[{host}]"
        if self.port is None:
            return f"{host}/{self.protocol}"
        return f"{host}:{self.port}/{self.protocol}"

    def describe(self) -> str:
        stamp = self.time.isoformat(timespec="milliseconds")
        return f"{stamp} {self.target()} ({self.reason})"

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind.value,
            "destination": self.destination,
            "port": self.port,
            "protocol": self.protocol,
            "time": self.time.isoformat(),
            "reason": self.reason,
        }


class ViolationLog:
    """The violations of one run, appended to from reader threads.

    Listeners are called on the reader's thread for each violation, so a
    runner can stop a VM at its first violation instead of at its end.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._recorded: list[Violation] = []
        self._count = 0
        self._listeners: list[Callable[[Violation], None]] = []

    def add_listener(self, listener: Callable[[Violation], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def record(self, violation: Violation) -> None:
        with self._lock:
            self._count += 1
            count = self._count
            if len(self._recorded) < MAX_RECORDED:
                self._recorded.append(violation)
            listeners = list(self._listeners)
        if count <= MAX_LOGGED:
            logger.info("egress violation: %s", violation.describe())
        elif count == MAX_LOGGED + 1:
            logger.info("more than %d egress violations: counting the rest", MAX_LOGGED)
        for listener in listeners:
            try:
                listener(violation)
            except Exception:
                logger.exception("a violation listener failed")

    def snapshot(self) -> list[Violation]:
        with self._lock:
            return list(self._recorded)

    @property
    def count(self) -> int:
        with self._lock:
            return self._count


def violation_from_packet(
    payload: bytes, reason: str, when: datetime | None = None
) -> Violation:
    """Read destination, port and protocol from a dropped packet's IP header."""
    when = when or datetime.now(UTC)
    version = payload[0] >> 4 if payload else 0
    if version == 4 and len(payload) >= 20:
        header_length = (payload[0] & 0x0F) * 4
        protocol_number = payload[9]
        destination = str(ipaddress.IPv4Address(payload[16:20]))
        transport = payload[header_length:]
    elif version == 6 and len(payload) >= 40:
        # Extension headers are not followed: a port behind one reads as None.
        protocol_number = payload[6]
        destination = str(ipaddress.IPv6Address(payload[24:40]))
        transport = payload[40:]
    else:
        return Violation(ViolationKind.PACKET, "unknown", None, "unknown", when, reason)
    protocol = _PROTOCOLS.get(protocol_number, str(protocol_number))
    port = None
    if protocol in ("tcp", "udp") and len(transport) >= 4:
        port = struct.unpack("!H", transport[2:4])[0]
    return Violation(ViolationKind.PACKET, destination, port, protocol, when, reason)


def _attribute(attribute_type: int, value: bytes) -> bytes:
    length = 4 + len(value)
    padding = b"\0" * ((4 - length % 4) % 4)
    return struct.pack("=HH", length, attribute_type) + value + padding


def _config_message(group: int, attributes: bytes, sequence: int) -> bytes:
    message_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
    # nfgenmsg: family, version, resource id (the group, big-endian)
    body = struct.pack("!BBH", socket.AF_UNSPEC, 0, group) + attributes
    header = struct.pack(
        "=IHHII", 16 + len(body), message_type, NLM_F_REQUEST | NLM_F_ACK, sequence, 0
    )
    return header + body


def _parse_attributes(data: bytes) -> dict[int, bytes]:
    attributes: dict[int, bytes] = {}
    offset = 0
    while offset + 4 <= len(data):
        length, attribute_type = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        attributes[attribute_type & NLA_TYPE_MASK] = data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return attributes


class NflogReader:
    """Reads one nfnetlink_log group on a netlink socket, in a daemon thread.

    `bind()` subscribes the group and waits for the kernel's acknowledgement, so
    an error (such as a group already bound by another socket in the namespace)
    surfaces before the VM boots.
    """

    def __init__(
        self,
        netlink_socket: socket.socket,
        group: int,
        on_violation: Callable[[Violation], None],
    ) -> None:
        self._socket = netlink_socket
        self._group = group
        self._on_violation = on_violation
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def bind(self) -> None:
        self._socket.bind((0, 0))
        self._request(
            1, _attribute(NFULA_CFG_CMD, struct.pack("B", NFULNL_CFG_CMD_BIND) + b"\0")
        )
        mode = struct.pack("!IBB", COPY_RANGE, NFULNL_COPY_PACKET, 0)
        # A threshold of one packet and no flush timeout: each drop is delivered
        # at once, so a violation is known while the run still goes on.
        self._request(
            2,
            _attribute(NFULA_CFG_MODE, mode)
            + _attribute(NFULA_CFG_QTHRESH, struct.pack("!I", 1))
            + _attribute(NFULA_CFG_TIMEOUT, struct.pack("!I", 0)),
        )

    def _request(self, sequence: int, attributes: bytes) -> None:
        self._socket.send(_config_message(self._group, attributes, sequence))
        reply = self._socket.recv(65536)
        _, message_type, _, _, _ = struct.unpack_from("=IHHII", reply, 0)
        if message_type == NLMSG_ERROR:
            (error,) = struct.unpack_from("=i", reply, 16)
            if error != 0:
                raise OSError(-error, f"nfnetlink_log group {self._group}")

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._read_loop, name=f"nflog-{self._group}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._socket.close()

    def _read_loop(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([self._socket], [], [], STOP_POLL)
            if not readable:
                continue
            try:
                data = self._socket.recv(65536)
            except OSError as exc:
                # ENOBUFS: the kernel dropped log messages because we were slow;
                # those packets were still dropped, only their record is lost.
                logger.warning("violation log overran: %s", exc)
                continue
            self._dispatch(data)

    def _dispatch(self, data: bytes) -> None:
        offset = 0
        packet_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET
        while offset + 16 <= len(data):
            length, message_type, _, _, _ = struct.unpack_from("=IHHII", data, offset)
            if length < 16:
                break
            if message_type == packet_type:
                attributes = _parse_attributes(data[offset + 20 : offset + length])
                payload = attributes.get(NFULA_PAYLOAD, b"")
                reason = (
                    attributes.get(NFULA_PREFIX, b"")
                    .rstrip(b"\0")
                    .decode("ascii", "replace")
                )
                self._on_violation(violation_from_packet(payload, reason))
            offset += (length + 3) & ~3


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()
