"""`network check-routes` and `nearest_healthy_node` against slow local TLS listeners.

Assertions are on classification only, with thresholds far apart, so a busy
machine does not turn a fast node into a slow one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from devdep.cli.main import run
from devdep.config.schema import GatewayNode, GatewayThresholds
from devdep.errors import ExitCode
from devdep.netsandbox.errors import NoHealthyNodeError
from devdep.netsandbox.routes import (
    NodeStatus,
    check_routes,
    drop_rate,
    nearest_healthy_node,
)
from tests.netsandbox.tls_servers import SlowTlsNode, unused_port
from tests.support.certificates import self_signed_certificate

pytestmark = pytest.mark.integration

THRESHOLDS = GatewayThresholds(
    degraded=timedelta(milliseconds=250),
    down=timedelta(milliseconds=1500),
    probe_timeout=timedelta(seconds=3),
)


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path, "devdep test node", stem="node")


@pytest.fixture
def nodes(certificate: tuple[Path, Path]) -> Iterator[dict[str, SlowTlsNode]]:
    started = {
        "fast": SlowTlsNode(*certificate),
        "slow-accept": SlowTlsNode(*certificate, accept_delay=0.6),
        "slow-tls": SlowTlsNode(*certificate, handshake_delay=0.6),
        "very-slow": SlowTlsNode(*certificate, handshake_delay=2.0),
        "silent": SlowTlsNode(*certificate, never_answer=True),
    }
    try:
        yield started
    finally:
        for node in started.values():
            node.close()


def gateway_node(name: str, url: str) -> GatewayNode:
    return GatewayNode(name=name, url=url)


def test_nodes_are_classified_by_median_latency_and_failures(
    nodes: dict[str, SlowTlsNode],
) -> None:
    refused = f"https://127.0.0.1:{unused_port()}"
    listed = [gateway_node(name, node.url) for name, node in nodes.items()]
    listed.append(gateway_node("refused", refused))
    thresholds = THRESHOLDS.model_copy(
        update={"probe_timeout": timedelta(milliseconds=1400)}
    )

    reports = check_routes(listed, probes=2, thresholds=thresholds)

    status = {report.node.name: report.status for report in reports}
    assert status == {
        "fast": NodeStatus.NOMINAL,
        "slow-accept": NodeStatus.DEGRADED,
        "slow-tls": NodeStatus.DEGRADED,
        "very-slow": NodeStatus.DOWN,  # its handshakes time out at 1.4s
        "silent": NodeStatus.DOWN,
        "refused": NodeStatus.DOWN,
    }
    by_name = {report.node.name: report for report in reports}
    assert by_name["fast"].latency_ms is not None
    assert by_name["refused"].latency_ms is None
    assert by_name["refused"].probes[0].error is not None
    assert by_name["refused"].probes[0].error.startswith("connect:")
    assert by_name["silent"].probes[0].error == "tls: timed out"
    # 3 of the 6 nodes failed both their probes.
    assert drop_rate(reports) == pytest.approx(0.5)
    assert by_name["fast"].verified is False
    assert "self-signed" in by_name["fast"].verification


def test_a_median_past_down_is_down_even_when_probes_succeed(
    nodes: dict[str, SlowTlsNode],
) -> None:
    thresholds = GatewayThresholds(
        degraded=timedelta(milliseconds=250),
        down=timedelta(milliseconds=1000),
        probe_timeout=timedelta(seconds=5),
    )
    (report,) = check_routes(
        [gateway_node("very-slow", nodes["very-slow"].url)],
        probes=1,
        thresholds=thresholds,
    )
    assert report.failed_probes == 0
    assert report.status is NodeStatus.DOWN


def test_nearest_healthy_node_prefers_nominal(nodes: dict[str, SlowTlsNode]) -> None:
    listed = [
        gateway_node("slow", nodes["slow-tls"].url),
        gateway_node("fast", nodes["fast"].url),
    ]
    assert nearest_healthy_node(listed, probes=2, thresholds=THRESHOLDS).name == "fast"


def test_nearest_healthy_node_raises_when_every_node_is_down() -> None:
    listed = [gateway_node("gone", f"https://127.0.0.1:{unused_port()}")]
    with pytest.raises(NoHealthyNodeError):
        nearest_healthy_node(listed, probes=1, thresholds=THRESHOLDS)


def write_config(directory: Path, nodes: list[tuple[str, str]]) -> Path:
    lines = [
        'version: "4.2"',
        "metadata:",
        "  namespace: acme-prod-gateway",
        "  owner: platform@acme.com",
        "  environment: production",
        "pipeline:",
        "  runtimes:",
        "    - name: build",
        "      run_command: make",
        "gateway:",
        "  thresholds:",
        "    degraded: 250ms",
        "    down: 1500ms",
        "    probe_timeout: 1s",
        "  nodes:",
    ]
    for name, url in nodes:
        lines += [f"    - name: {name}", f"      url: {url}"]
    path = directory / "devdep.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_check_routes_prints_the_manuals_format(
    nodes: dict[str, SlowTlsNode],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(
        tmp_path,
        [("US-East-1", nodes["fast"].url), ("EU-West-1", nodes["slow-tls"].url)],
    )
    code = run(["network", "check-routes", "--file", str(config), "--probes", "2"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Checking anycast nodes for: acme-prod-gateway"
    assert lines[1].startswith("[Node: US-East-1] Ingress check... latency ")
    assert lines[1].endswith("ms \u2192 STATUS: NOMINAL")
    assert lines[2].endswith("ms \u2192 STATUS: DEGRADED")
    assert lines[3] == "Edge distribution routes synced. Packet drop rate: 0.00%"
    assert len(lines) == 4


def test_check_routes_verbose_says_whether_the_certificate_verified(
    nodes: dict[str, SlowTlsNode],
    certificate: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path, [("US-East-1", nodes["fast"].url)])
    arguments = ["network", "check-routes", "-f", str(config), "--probes", "2", "-v"]

    assert run(arguments) == 0
    output = capsys.readouterr().out
    assert "  probe 2: tcp " in output
    assert "certificate: not verified: self-signed certificate" in output

    assert run([*arguments, "--ca-file", str(certificate[0])]) == 0
    assert "  certificate: verified\n" in capsys.readouterr().out


def test_check_routes_exits_1_when_every_node_is_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path,
        [
            ("US-East-1", f"https://127.0.0.1:{unused_port()}"),
            ("EU-West-1", f"https://127.0.0.1:{unused_port()}"),
        ],
    )
    code = run(["network", "check-routes", "-f", str(config), "--probes", "1"])
    assert code == ExitCode.ERR_JOB_FAILED
    captured = capsys.readouterr()
    assert "latency n/a \u2192 STATUS: DOWN" in captured.out
    assert "Packet drop rate: 100.00%" in captured.out
    assert "every gateway node is DOWN" in captured.err

    code = run(
        ["network", "check-routes", "-f", str(config), "--probes", "1", "-o", "json"]
    )
    assert code == ExitCode.ERR_JOB_FAILED
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False
    assert document["drop_rate"] == 1.0
    assert [node["status"] for node in document["nodes"]] == ["DOWN", "DOWN"]


def test_check_routes_json(
    nodes: dict[str, SlowTlsNode], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, [("US-East-1", nodes["fast"].url)])
    assert run(["network", "check-routes", "-f", str(config), "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is True
    assert document["namespace"] == "acme-prod-gateway"
    (node,) = document["nodes"]
    assert node["status"] == "NOMINAL"
    assert node["probes"] == 5
    assert node["certificate_verified"] is False


def test_check_routes_without_gateway_nodes_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "devdep.yaml"
    config.write_text(
        'version: "4.2"\nmetadata:\n  namespace: acme\n  owner: o\n'
        "  environment: production\npipeline:\n  runtimes:\n"
        "    - name: build\n      run_command: make\n"
    )
    assert run(["network", "check-routes", "-f", str(config)]) == ExitCode.ERR_USAGE
    assert "lists no gateway nodes" in capsys.readouterr().err
