"""`secrets set|ls|rm`: the local secret store, for machines without Vault.

A value is read from stdin, or typed at a prompt that does not echo it, and
never taken from the command line, where `ps` and shell history would see it.
"""

from __future__ import annotations

import getpass
import sys
import warnings

import click

from devdep.cli.output import OutputFormat, output_option, print_json, stdout_console
from devdep.errors import UsageError
from devdep.secrets import LocalSecretStore, LocalStoreError
from devdep.secrets.local import check_name


@click.group(name="secrets")
def secrets_group() -> None:
    """Manage the local secret store (pipeline.secrets.provider: local).

    A name is the `source` of the mappings that use it, such as
    prod/database/api-user/password. Values are encrypted at rest; see
    docs/secrets.md.
    """


def _read_value(name: str, keep_newline: bool) -> bytes:
    if sys.stdin is None:
        raise UsageError(f"no value for {name}: stdin is closed")
    if sys.stdin.isatty():
        # A terminal would echo what is typed; getpass turns the echo off, and
        # where it cannot, it warns and echoes: that warning becomes a refusal.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", getpass.GetPassWarning)
                first = getpass.getpass(f"value for {name}: ", stream=sys.stderr)
                second = getpass.getpass(
                    f"value for {name} (again): ", stream=sys.stderr
                )
        except getpass.GetPassWarning:
            raise UsageError(
                "cannot turn off the terminal's echo to read the value",
                hint=f"pipe the value in: devdep-cli secrets set {name} < file",
            ) from None
        if first != second:
            raise UsageError(f"the two values typed for {name} differ; nothing stored")
        return first.encode("utf-8")
    value = sys.stdin.buffer.read()
    if not keep_newline:
        # `echo value | devdep-cli secrets set NAME` appends one line ending.
        if value.endswith(b"\r\n"):
            value = value[:-2]
        elif value.endswith(b"\n"):
            value = value[:-1]
    return value


@secrets_group.command(name="set")
@click.argument("name")
@click.option(
    "--keep-newline",
    is_flag=True,
    help="Keep a final line ending read from stdin as part of the value.",
)
@output_option
def set_secret(name: str, keep_newline: bool, output: OutputFormat) -> None:
    """Store the value read from stdin under NAME.

    At a terminal, the value is typed twice without echo. Setting an existing
    NAME stores a new version, which a run with key_rotation: automatic picks up.
    """
    check_name(name)
    store = LocalSecretStore.default()
    value = _read_value(name, keep_newline)
    version = store.set(name, value)
    if output is OutputFormat.JSON:
        print_json({"ok": True, "name": name, "version": version})
        return
    stdout_console().print(f"stored {name} (version {version})", markup=False)


@secrets_group.command(name="ls")
@output_option
def list_secrets(output: OutputFormat) -> None:
    """List the names in the local store; never their values."""
    names = LocalSecretStore.default().names()
    if output is OutputFormat.JSON:
        print_json({"ok": True, "names": names})
        return
    console = stdout_console()
    for name in names:
        console.print(name, markup=False)


@secrets_group.command(name="rm")
@click.argument("name")
@output_option
def remove_secret(name: str, output: OutputFormat) -> None:
    """Remove NAME from the local store."""
    if not LocalSecretStore.default().remove(name):
        raise LocalStoreError(
            f"the local store has no secret named {name}",
            hint="'devdep-cli secrets ls' lists the names it holds",
        )
    if output is OutputFormat.JSON:
        print_json({"ok": True, "name": name})
        return
    stdout_console().print(f"removed {name}", markup=False)
