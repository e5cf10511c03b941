"""The `devdep-cli` entry point: the command tree, and the one place where errors
become exit codes and one-line messages.

Tracebacks are shown only with DEVDEP_DEBUG=1; without it every failure, even an
unexpected one, ends in a message and a documented exit code.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback

import click

from devdep.cli.output import (
    OutputFormat,
    argv_asks_for_json,
    current_format,
    print_json,
    reset_format,
    stderr_console,
)
from devdep.errors import DevdepError, ExitCode, exit_code_for

# Each command, as "module:attribute". A command's module is imported only when
# that command runs (or when --help lists them all): importing every command's
# dependencies (FastAPI, SQLAlchemy, hvac, ...) cost about a second per call.
COMMANDS = {
    "auth": "devdep.cli.auth_commands:auth",
    "deploy": "devdep.cli.deploy_command:deploy",
    "doctor": "devdep.cli.info_commands:doctor",
    "gateway": "devdep.cli.gateway_commands:gateway_group",
    "image": "devdep.cli.image_commands:image",
    "init": "devdep.cli.config_commands:init",
    "network": "devdep.cli.network_commands:network",
    "secrets": "devdep.cli.secrets_commands:secrets_group",
    "status": "devdep.cli.auth_commands:status",
    "validate": "devdep.cli.config_commands:validate",
    "version": "devdep.cli.info_commands:version",
}


class LazyGroup(click.Group):
    """A group that imports a command's module when the command is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


@click.group(
    name="devdep-cli",
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
)
def app() -> None:
    """DEVELOPMENT DEPLOYER: run build pipelines in fresh, isolated micro-VMs.

    Exit codes are listed in docs/exit-codes.md.
    """


INTERRUPTED = 130  # the shell's convention for a process ended by SIGINT


def _debug_enabled() -> bool:
    return os.environ.get("DEVDEP_DEBUG", "") not in ("", "0")


def _report_error(
    exit_code: int,
    name: str,
    message: str,
    hint: str | None,
    json_mode: bool,
    details: list[str] | None = None,
    run_document: dict[str, object] | None = None,
) -> None:
    if json_mode:
        document: dict[str, object] = {
            "ok": False,
            "error": {
                "exit_code": exit_code,
                "name": name,
                "message": message,
                "hint": hint,
                "details": details or [],
            },
        }
        # A command that ran something (deploy) attaches what it did.
        if run_document:
            document.update(run_document)
        print_json(document)
        return
    console = stderr_console()
    for line in details or []:
        console.print(line, markup=False)
    console.print(f"error: {message}", markup=False)
    if hint:
        console.print(f"hint: {hint}", markup=False)


def run(argv: list[str]) -> int:
    """Run one command line and return its exit code instead of exiting."""
    json_mode = argv_asks_for_json(argv)
    reset_format()
    logging.basicConfig(
        level=logging.DEBUG if _debug_enabled() else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        result = app.main(args=argv, prog_name="devdep-cli", standalone_mode=False)
    except DevdepError as error:
        if _debug_enabled():
            traceback.print_exc()
        code = exit_code_for(error)
        _report_error(
            code,
            code.name,
            error.message,
            error.hint,
            json_mode or current_format() is OutputFormat.JSON,
            error.details,
            getattr(error, "run_document", None),
        )
        return int(code)
    except click.exceptions.NoArgsIsHelpError as error:
        # A bare group shows its help, as `--help` would: nothing went wrong.
        click.echo(error.format_message())
        return int(ExitCode.SUCCESS)
    except click.exceptions.UsageError as error:
        hint = None
        if error.ctx is not None:
            hint = f"run '{error.ctx.command_path} --help' to see the usage"
        _report_error(
            ExitCode.ERR_USAGE,
            ExitCode.ERR_USAGE.name,
            error.format_message(),
            hint,
            json_mode,
        )
        return int(ExitCode.ERR_USAGE)
    except (KeyboardInterrupt, click.exceptions.Abort):
        stderr_console().print("interrupted", markup=False)
        return INTERRUPTED
    except Exception as error:
        if _debug_enabled():
            traceback.print_exc()
        _report_error(
            ExitCode.INTERNAL_ERROR,
            ExitCode.INTERNAL_ERROR.name,
            f"internal error: {type(error).__name__}: {error}",
            "this is a bug in devdep; run again with DEVDEP_DEBUG=1 and report the "
            "traceback",
            json_mode or current_format() is OutputFormat.JSON,
        )
        return int(ExitCode.INTERNAL_ERROR)
    return result if isinstance(result, int) else 0


def main() -> None:
    sys.exit(run(sys.argv[1:]))
