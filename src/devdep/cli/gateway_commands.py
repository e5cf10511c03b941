"""`gateway serve`: run the gateway service."""

from __future__ import annotations

from pathlib import Path

import click

from devdep.cli.output import OutputFormat, output_option, print_json, stdout_console
from devdep.gateway.config import load_gateway_config


@click.group(name="gateway")
def gateway_group() -> None:
    """Run the gateway that issues session tickets."""


@gateway_group.command(name="serve")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("gateway.yaml"),
    show_default=True,
    help="The gateway's configuration file (see docs/gateway.md).",
)
@output_option
def serve_command(config_file: Path, output: OutputFormat) -> None:
    """Serve the gateway until interrupted (SIGINT or SIGTERM).

    The store is migrated to the latest schema before the gateway listens.
    """
    # FastAPI, uvicorn and SQLAlchemy take seconds to import on a small host;
    # only this command needs them, so the rest of the CLI starts without.
    from devdep.gateway.server import (  # noqa: PLC0415
        build_gateway,
        configure_service_logging,
        serve,
    )

    settings = load_gateway_config(config_file)
    configure_service_logging()
    gateway = build_gateway(settings)

    def announce(url: str) -> None:
        if output is OutputFormat.JSON:
            print_json(
                {
                    "ok": True,
                    "listening": url,
                    "tls": settings.tls is not None,
                    "store": gateway.store.describe(),
                    "session_minutes": settings.session_minutes,
                }
            )
            return
        stdout_console().print(
            f"devdep gateway listening on {url} (store {gateway.store.describe()}, "
            f"sessions last {settings.session_minutes:g} minutes)",
            markup=False,
        )

    try:
        serve(gateway, on_listening=announce)
    finally:
        gateway.close()
