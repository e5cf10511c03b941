"""Options that several commands share."""

from __future__ import annotations

from pathlib import Path

import click

file_option = click.option(
    "--file",
    "-f",
    "file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("devdep.yaml"),
    show_default=True,
    help="The devdep.yaml to use.",
)
