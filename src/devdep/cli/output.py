"""How commands speak: rich text for people, one JSON document for machines.

Colour is off when stdout is not a terminal or when NO_COLOR is set. In JSON
mode a command prints exactly one JSON document on stdout, errors included, so
a script can always parse what it gets.
"""

from __future__ import annotations

import enum
import json
import os
import sys
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar

import click
from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])


class OutputFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"


_current_format: ContextVar[OutputFormat] = ContextVar(
    "output_format", default=OutputFormat.TEXT
)


def _remember_format(
    _context: click.Context, _parameter: click.Parameter, value: str
) -> OutputFormat:
    chosen = OutputFormat(value.lower())
    _current_format.set(chosen)
    return chosen


def output_option(command: F) -> F:
    """Give a command the `--output text|json` option every command accepts."""
    return click.option(
        "--output",
        "-o",
        type=click.Choice([f.value for f in OutputFormat], case_sensitive=False),
        default=OutputFormat.TEXT.value,
        show_default=True,
        callback=_remember_format,
        is_eager=True,
        help="How to print the result: text for people, json for machines.",
    )(command)


def reset_format() -> None:
    """Forget the format of a previous command run in this process."""
    _current_format.set(OutputFormat.TEXT)


def current_format() -> OutputFormat:
    """The format of the command being run, also once it has failed."""
    return _current_format.get()


def argv_asks_for_json(argv: list[str]) -> bool:
    """Whether the raw arguments ask for JSON; for errors raised while parsing them,
    before the --output callback has run."""
    for index, argument in enumerate(argv):
        if argument in ("--output=json", "-ojson"):
            return True
        if argument in ("--output", "-o") and argv[index + 1 : index + 2] == ["json"]:
            return True
    return False


def _colour_allowed(stream: Any) -> bool:
    return "NO_COLOR" not in os.environ and bool(getattr(stream, "isatty", bool)())


def stdout_console() -> Console:
    colour = _colour_allowed(sys.stdout)
    return Console(
        color_system="auto" if colour else None,
        highlight=False,
        soft_wrap=True,
        no_color=not colour,
    )


def stderr_console() -> Console:
    colour = _colour_allowed(sys.stderr)
    return Console(
        stderr=True,
        color_system="auto" if colour else None,
        highlight=False,
        soft_wrap=True,
        no_color=not colour,
    )


def print_json(document: dict[str, Any]) -> None:
    """Write one JSON document to stdout."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    sys.stdout.flush()
