"""Test networks built from namespaces the tests create, and nothing else.

    test host ──veth── uplink ──veth (the sandbox's)── run ns ── tap ══ tap ── guest
    198.18.n.2         198.18.n.1                       10.213.x.x   wire

The uplink namespace stands in for the host's root namespace: it forwards,
and its addresses are "the host's own". Test hosts answer on 198.18.0.0/15,
the benchmarking range, inside their own namespaces.

The guest stand-in: in production QEMU opens the run's tap and moves frames
between it and the VM's virtio-net device. Here a thread of the test process
opens the same tap (in the run's namespace) and a second tap inside a guest
namespace, and copies frames between the two, as QEMU would. The run's tap,
its rules and its addresses are exactly what a VM would get.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import select
import socket
import struct
import subprocess
import threading
from dataclasses import dataclass, field

from devdep.netsandbox.addressing import GuestNetwork
from devdep.netsandbox.netns import call_in_netns, socket_in_netns

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def sh(*arguments: str, check: bool = True, stdin: str | None = None) -> str:
    completed = subprocess.run(
        list(arguments), input=stdin, capture_output=True, text=True, check=False
    )
    if check and completed.returncode != 0:
        raise AssertionError(f"{' '.join(arguments)}: {completed.stderr}")
    return completed.stdout


def unique(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(3)}"


def open_tap(netns: str, name: str) -> int:
    """Attach to an existing tap device in `netns`, as QEMU does; returns the fd."""

    def attach() -> int:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        fcntl.ioctl(
            fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI)
        )
        return fd

    return call_in_netns(netns, attach)


class Wire:
    """Copies Ethernet frames between two tap fds until stopped."""

    def __init__(self, left: int, right: int) -> None:
        self.left, self.right = left, right
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        peers = {self.left: self.right, self.right: self.left}
        while not self._stop.is_set():
            readable, _, _ = select.select(list(peers), [], [], 0.1)
            for fd in readable:
                try:
                    frame = os.read(fd, 65536)
                    os.write(peers[fd], frame)
                except OSError:
                    continue

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self.left)
        os.close(self.right)


@dataclass
class Listener:
    """A TCP server in a test host's namespace that counts its connections."""

    netns: str
    address: str
    port: int
    accepted: int = 0
    _socket: socket.socket | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        server = socket_in_netns(self.netns, socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((self.address, self.port))
        server.listen(8)
        self._socket = server
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        assert self._socket is not None
        while not self._stop.is_set():
            readable, _, _ = select.select([self._socket], [], [], 0.1)
            if not readable:
                continue
            connection, _ = self._socket.accept()
            self.accepted += 1
            with connection:
                connection.settimeout(2)
                try:
                    connection.recv(4096)
                    body = b"hello from the test host\n"
                    connection.sendall(
                        b"HTTP/1.0 200 OK\r\nContent-Length: "
                        + str(len(body)).encode()
                        + b"\r\n\r\n"
                        + body
                    )
                except OSError:
                    pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._socket is not None:
            self._socket.close()


class Topology:
    """An uplink namespace with test hosts; the sandbox joins the uplink."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(3)
        self.uplink = f"ddtest-{self.tag}-up"
        self.namespaces: list[str] = []
        self.listeners: list[Listener] = []
        self.wires: list[Wire] = []
        self.host_count = 0
        self._add_namespace(self.uplink)
        sh(
            "ip",
            "netns",
            "exec",
            self.uplink,
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ip_forward=1",
        )

    def _add_namespace(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def add_host(self) -> tuple[str, str]:
        """A test host namespace on its own link to the uplink: (netns, address)."""
        self.host_count += 1
        n = self.host_count
        name = f"ddtest-{self.tag}-h{n}"
        self._add_namespace(name)
        uplink_end, host_end = f"ddtu{self.tag}{n}", "eth0"
        sh(
            "ip", "-n", self.uplink, "link", "add", uplink_end, "type", "veth",
            "peer", "name", host_end, "netns", name,
        )  # fmt: skip
        sh(
            "ip",
            "-n",
            self.uplink,
            "addr",
            "add",
            f"198.18.{n}.1/24",
            "dev",
            uplink_end,
        )
        sh("ip", "-n", self.uplink, "link", "set", uplink_end, "up")
        sh("ip", "-n", name, "addr", "add", f"198.18.{n}.2/24", "dev", host_end)
        sh("ip", "-n", name, "link", "set", host_end, "up")
        sh("ip", "-n", name, "route", "add", "default", "via", f"198.18.{n}.1")
        return name, f"198.18.{n}.2"

    def listen(self, netns: str, address: str, port: int) -> Listener:
        listener = Listener(netns, address, port)
        listener.start()
        self.listeners.append(listener)
        return listener

    def count_syns(self, netns: str, ports: list[int]) -> None:
        """Count every TCP SYN that reaches a test host, per port, in nft counters."""
        rules = "\n".join(
            f"    tcp dport {port} tcp flags syn counter" for port in ports
        )
        sh(
            "ip", "netns", "exec", netns, "nft", "-f", "-",
            stdin="table inet syncount {\n  chain in {\n"
            "    type filter hook input priority -10; policy accept;\n"
            f"{rules}\n  }}\n}}\n",
        )  # fmt: skip

    def syn_counts(self, netns: str) -> dict[int, int]:
        document = json.loads(
            sh(
                "ip",
                "netns",
                "exec",
                netns,
                "nft",
                "-j",
                "list",
                "table",
                "inet",
                "syncount",
            )
        )
        counts: dict[int, int] = {}
        for item in document["nftables"]:
            rule = item.get("rule")
            if not rule:
                continue
            port = packets = None
            for expression in rule["expr"]:
                if (
                    "match" in expression
                    and expression["match"]["left"].get("payload", {}).get("field")
                    == "dport"
                ):
                    port = expression["match"]["right"]
                if "counter" in expression:
                    packets = expression["counter"]["packets"]
            if port is not None and packets is not None:
                counts[port] = packets
        return counts

    def attach_guest(self, run_netns: str, tap: str, guest: GuestNetwork) -> str:
        """A guest namespace wired to the run's tap, configured as a guest would be."""
        name = f"ddtest-{self.tag}-g{len(self.wires)}"
        self._add_namespace(name)
        sh("ip", "netns", "exec", name, "sysctl", "-q", "-w",
           "net.ipv6.conf.all.disable_ipv6=0")  # fmt: skip
        sh("ip", "-n", name, "tuntap", "add", "dev", "eth0", "mode", "tap")
        sh("ip", "-n", name, "link", "set", "eth0", "address", guest.mac)
        self.wires.append(Wire(open_tap(run_netns, tap), open_tap(name, "eth0")))
        sh("ip", "-n", name, "addr", "add", str(guest.address), "dev", "eth0")
        sh("ip", "-n", name, "link", "set", "eth0", "up")
        sh("ip", "-n", name, "route", "add", "default", "via", str(guest.gateway))
        return name

    def close(self) -> None:
        for wire in self.wires:
            wire.stop()
        for listener in self.listeners:
            listener.stop()
        for name in reversed(self.namespaces):
            sh("ip", "netns", "del", name, check=False)


def in_guest(
    guest_netns: str, *command: str, timeout: float = 10
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", guest_netns, *command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def connect_from(netns: str, address: str, port: int, timeout: float = 1.0) -> bool:
    """Try one TCP connection from inside `netns`; whether it was accepted."""
    connection = socket_in_netns(netns, socket.AF_INET, socket.SOCK_STREAM)
    connection.settimeout(timeout)
    try:
        connection.connect((address, port))
        return True
    except OSError:
        return False
    finally:
        connection.close()


def leftovers(run_id: str, uplink: str) -> list[str]:
    """What of a run is still on the machine: namespaces, links and tables."""
    found = []
    if f"devdep-{run_id}" in sh("ip", "netns", "list").split():
        found.append(f"netns devdep-{run_id}")
    for line in sh("ip", "-n", uplink, "-o", "link", "show").splitlines():
        if f"ddh-{run_id}" in line:
            found.append(line)
    for line in sh("ip", "-o", "link", "show").splitlines():
        if f"dd{'h'}-{run_id}" in line or f"ddn-{run_id}" in line:
            found.append(line)
    return found
