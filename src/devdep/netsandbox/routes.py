"""Route checks of the gateway's ingress nodes: TCP connect and TLS handshake probes.

A probe opens a TCP connection to a node and completes a TLS handshake; its
latency is the time for both, which is what a client waits for before its
first request. A node's latency is the median of its successful probes. The
probes measure latency without trusting the node's certificate, so a node
with a private CA is still measured; whether the certificate verified is
reported on its own.
"""

from __future__ import annotations

import enum
import logging
import socket
import ssl
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from devdep.config.schema import GatewayNode, GatewayThresholds
from devdep.netsandbox.errors import NoHealthyNodeError

logger = logging.getLogger(__name__)

DEFAULT_PROBES = 5
HTTPS_PORT = 443


class NodeStatus(enum.StrEnum):
    NOMINAL = "NOMINAL"
    DEGRADED = "DEGRADED"
    DOWN = "DOWN"


@dataclass(frozen=True)
class Probe:
    """One TCP connect and TLS handshake; the times are None where it failed."""

    connect_ms: float | None
    handshake_ms: float | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def latency_ms(self) -> float | None:
        if self.connect_ms is None or self.handshake_ms is None:
            return None
        return self.connect_ms + self.handshake_ms


@dataclass(frozen=True)
class NodeReport:
    node: GatewayNode
    status: NodeStatus
    latency_ms: float | None  # the median successful probe
    probes: list[Probe] = field(default_factory=list)
    verified: bool | None = None  # whether the certificate chain and name verified
    verification: str = ""

    @property
    def failed_probes(self) -> int:
        return sum(1 for probe in self.probes if not probe.ok)

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.node.name,
            "url": self.node.url,
            "status": self.status.value,
            "latency_ms": None
            if self.latency_ms is None
            else round(self.latency_ms, 3),
            "probes": len(self.probes),
            "failed_probes": self.failed_probes,
            "certificate_verified": self.verified,
            "certificate": self.verification,
            "probe_details": [
                {
                    "connect_ms": probe.connect_ms,
                    "handshake_ms": probe.handshake_ms,
                    "error": probe.error,
                }
                for probe in self.probes
            ],
        }


def drop_rate(reports: list[NodeReport]) -> float:
    """Failed probes over all probes, across every node."""
    total = sum(len(report.probes) for report in reports)
    failed = sum(report.failed_probes for report in reports)
    return failed / total if total else 0.0


def classify(probes: list[Probe], thresholds: GatewayThresholds) -> NodeStatus:
    """DOWN without a successful probe or at `down`; DEGRADED at `degraded` or with
    any failed probe; NOMINAL otherwise."""
    latencies = [probe.latency_ms for probe in probes if probe.latency_ms is not None]
    if not latencies:
        return NodeStatus.DOWN
    median = statistics.median(latencies)
    if median >= thresholds.down.total_seconds() * 1000:
        return NodeStatus.DOWN
    if median >= thresholds.degraded.total_seconds() * 1000:
        return NodeStatus.DEGRADED
    if any(not probe.ok for probe in probes):
        return NodeStatus.DEGRADED
    return NodeStatus.NOMINAL


def node_address(node: GatewayNode) -> tuple[str, int]:
    parts = urlsplit(node.url)
    return parts.hostname or "", parts.port or HTTPS_PORT


def probe_once(host: str, port: int, timeout: float) -> Probe:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    started = time.perf_counter()
    try:
        connection = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return Probe(None, None, f"connect: {_reason(exc)}")
    connected = time.perf_counter()
    connect_ms = (connected - started) * 1000
    try:
        # The whole probe shares one timeout: a slow connect leaves less for TLS.
        connection.settimeout(max(0.001, timeout - (connected - started)))
        with context.wrap_socket(connection, server_hostname=host):
            handshake_ms = (time.perf_counter() - connected) * 1000
    except (OSError, ssl.SSLError) as exc:
        connection.close()
        return Probe(connect_ms, None, f"tls: {_reason(exc)}")
    return Probe(connect_ms, handshake_ms)


def verify_certificate(
    host: str, port: int, timeout: float, ca_file: Path | None
) -> tuple[bool | None, str]:
    """Whether the node's certificate verifies against the trusted CAs and its name."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as connection,
            context.wrap_socket(connection, server_hostname=host),
        ):
            return True, "verified"
    except ssl.SSLCertVerificationError as exc:
        return False, f"not verified: {exc.verify_message}"
    except (OSError, ssl.SSLError) as exc:
        return None, f"not checked: {_reason(exc)}"


def check_node(
    node: GatewayNode,
    *,
    probes: int,
    thresholds: GatewayThresholds,
    ca_file: Path | None = None,
) -> NodeReport:
    host, port = node_address(node)
    timeout = thresholds.probe_timeout.total_seconds()
    results = [probe_once(host, port, timeout) for _ in range(probes)]
    latencies = [probe.latency_ms for probe in results if probe.latency_ms is not None]
    median = statistics.median(latencies) if latencies else None
    verified, verification = (None, "not checked: no probe succeeded")
    if latencies:
        verified, verification = verify_certificate(host, port, timeout, ca_file)
    report = NodeReport(
        node=node,
        status=classify(results, thresholds),
        latency_ms=median,
        probes=results,
        verified=verified,
        verification=verification,
    )
    logger.debug(
        "node %s: %s, median %s ms, %d/%d probes failed",
        node.name,
        report.status.value,
        "n/a" if median is None else f"{median:.1f}",
        report.failed_probes,
        probes,
    )
    return report


def check_routes(
    nodes: list[GatewayNode],
    *,
    probes: int = DEFAULT_PROBES,
    thresholds: GatewayThresholds | None = None,
    ca_file: Path | None = None,
) -> list[NodeReport]:
    """Probe every node concurrently; reports in the order of `nodes`."""
    if probes < 1:
        raise ValueError("probes must be at least 1")
    limits = thresholds or GatewayThresholds()
    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        futures = [
            pool.submit(
                check_node, node, probes=probes, thresholds=limits, ca_file=ca_file
            )
            for node in nodes
        ]
        return [future.result() for future in futures]


def pick_nearest(reports: list[NodeReport]) -> NodeReport | None:
    """The NOMINAL node with the lowest latency, else the best DEGRADED one."""
    for status in (NodeStatus.NOMINAL, NodeStatus.DEGRADED):
        candidates = [
            report
            for report in reports
            if report.status is status and report.latency_ms is not None
        ]
        if candidates:
            return min(candidates, key=lambda report: report.latency_ms or 0.0)
    return None


def nearest_healthy_node(
    nodes: list[GatewayNode],
    *,
    probes: int = 3,
    thresholds: GatewayThresholds | None = None,
    ca_file: Path | None = None,
) -> GatewayNode:
    """The node a client should talk to; NoHealthyNodeError if every node is down."""
    reports = check_routes(nodes, probes=probes, thresholds=thresholds, ca_file=ca_file)
    nearest = pick_nearest(reports)
    if nearest is None:
        raise NoHealthyNodeError(
            f"every gateway node is down ({', '.join(node.name for node in nodes)})",
            hint="run 'devdep-cli network check-routes --verbose' to see each probe",
        )
    return nearest.node


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
