"""`network check-routes`: probe the gateway's ingress nodes and report their health."""

from __future__ import annotations

from pathlib import Path

import click

from devdep.cli.options import file_option
from devdep.cli.output import OutputFormat, output_option, print_json, stdout_console
from devdep.config.loader import load_config
from devdep.errors import UsageError
from devdep.netsandbox.errors import NoHealthyNodeError
from devdep.netsandbox.routes import (
    DEFAULT_PROBES,
    NodeReport,
    NodeStatus,
    check_routes,
    drop_rate,
)


@click.group(name="network")
def network() -> None:
    """Network diagnostics."""


@network.command(name="check-routes")
@file_option
@click.option("--verbose", "-v", is_flag=True, help="Show every probe.")
@click.option(
    "--probes",
    type=click.IntRange(1, 100),
    default=DEFAULT_PROBES,
    show_default=True,
    help="TCP and TLS handshake probes per node.",
)
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="CA bundle to verify the nodes' certificates against (default: the system's).",
)
@output_option
def check_routes_command(
    file: Path,
    verbose: bool,
    probes: int,
    ca_file: Path | None,
    output: OutputFormat,
) -> None:
    """Measure the latency of every gateway node listed under gateway.nodes.

    Exits 1 (ERR_JOB_FAILED) when every node is DOWN.
    """
    config = load_config(file).config
    if config.gateway is None:
        raise UsageError(
            f"{file} lists no gateway nodes",
            hint="add gateway.nodes, each with a name and an https url "
            "(see docs/config.md)",
        )
    reports = check_routes(
        config.gateway.nodes,
        probes=probes,
        thresholds=config.gateway.thresholds,
        ca_file=ca_file,
    )
    namespace = config.metadata.namespace
    rate = drop_rate(reports)
    all_down = all(report.status is NodeStatus.DOWN for report in reports)

    document: dict[str, object] = {
        "namespace": namespace,
        "nodes": [report.as_dict() for report in reports],
        "drop_rate": rate,
    }
    if output is OutputFormat.JSON and not all_down:
        print_json({"ok": True, **document})
    elif output is OutputFormat.TEXT:
        _print_text(namespace, reports, rate, verbose)

    if all_down:
        raise NoHealthyNodeError(
            "every gateway node is DOWN",
            hint="run with --verbose to see why each probe failed",
            run_document=document,
        )


def _print_text(
    namespace: str, reports: list[NodeReport], rate: float, verbose: bool
) -> None:
    console = stdout_console()
    console.print(f"Checking anycast nodes for: {namespace}", markup=False)
    for report in reports:
        latency = "n/a" if report.latency_ms is None else f"{report.latency_ms:.1f}ms"
        console.print(
            f"[Node: {report.node.name}] Ingress check... latency {latency} "
            f"\u2192 STATUS: {report.status.value}",
            markup=False,
        )
        if verbose:
            console.print(f"  url: {report.node.url}", markup=False)
            for number, probe in enumerate(report.probes, start=1):
                if probe.ok:
                    line = (
                        f"tcp {probe.connect_ms:.2f}ms + tls {probe.handshake_ms:.2f}ms"
                        f" = {probe.latency_ms:.2f}ms"
                    )
                else:
                    line = f"failed: {probe.error}"
                console.print(f"  probe {number}: {line}", markup=False)
            note = "" if report.verified else " (latency measured without trusting it)"
            console.print(f"  certificate: {report.verification}{note}", markup=False)
    console.print(
        f"Edge distribution routes synced. Packet drop rate: {rate * 100:.2f}%",
        markup=False,
    )
