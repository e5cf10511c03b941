"""`version` and `doctor`: what this build is, and what this host can do."""

from __future__ import annotations

import dataclasses

import click
from rich.table import Table
from rich.text import Text

from devdep import PROTOCOL_VERSION, __version__
from devdep.buildinfo import build_commit, version_line
from devdep.cli.output import OutputFormat, output_option, print_json, stdout_console
from devdep.runner.hostcheck import CheckStatus, run_host_checks


@click.command()
@output_option
def version(output: OutputFormat) -> None:
    """Print the CLI version, the protocol version and the build's commit."""
    if output is OutputFormat.JSON:
        print_json(
            {
                "ok": True,
                "version": __version__,
                "protocol": PROTOCOL_VERSION,
                "commit": build_commit(),
            }
        )
        return
    stdout_console().print(version_line(), markup=False)


@click.command()
@output_option
def doctor(output: OutputFormat) -> None:
    """Report what this host can do: QEMU, acceleration, tun, nftables, OpenBao.

    Always exits 0: it is a report. Items that are missing carry a hint.
    """
    checks = run_host_checks()
    if output is OutputFormat.JSON:
        print_json({"ok": True, "checks": [dataclasses.asdict(c) for c in checks]})
        return

    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("check")
    table.add_column("status")
    table.add_column("found")
    styles = {
        CheckStatus.OK: "green",
        CheckStatus.DEGRADED: "yellow",
        CheckStatus.MISSING: "red",
    }
    for check in checks:
        table.add_row(
            check.name,
            Text(check.status, style=styles[check.status]),
            Text(check.detail),
        )
    console = stdout_console()
    console.print(table)
    for check in checks:
        if check.hint:
            console.print(f"hint ({check.name}): {check.hint}", markup=False)
