"""`init` and `validate`: write a devdep.yaml, and check one."""

from __future__ import annotations

import os
from pathlib import Path

import click

from devdep.cli.options import file_option
from devdep.cli.output import OutputFormat, output_option, print_json, stdout_console
from devdep.config.loader import load_config
from devdep.config.template import render_template
from devdep.errors import UsageError
from devdep.images.validation import check_base_images
from devdep.secrets import check_mappings


@click.command()
@click.option("--entity", required=True, help='The organisation, e.g. "Acme Corp".')
@click.option("--domain", required=True, help="Its domain, e.g. k8s.prod.acme.com.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("devdep.yaml"),
    show_default=True,
    help="Where to write the file.",
)
@click.option(
    "--environment",
    default="production",
    show_default=True,
    help="The environment that 'deploy --env' will name.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@output_option
def init(
    entity: str,
    domain: str,
    out: Path,
    environment: str,
    force: bool,
    output: OutputFormat,
) -> None:
    """Write a commented devdep.yaml for an entity and its domain.

    An existing file is never overwritten without --force.
    """
    text = render_template(entity, domain, environment)

    # O_EXCL makes the existence check and the creation one step, so a file
    # that appears in between is not overwritten either.
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        descriptor = os.open(out, flags, 0o644)
    except FileExistsError:
        raise UsageError(
            f"{out} already exists; it was left untouched",
            hint="pass --force to overwrite it, or choose another --out",
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from None
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)

    # The template must satisfy the schema it documents; checking here turns a
    # bad --environment into an error now, not at the first deploy.
    try:
        load_config(out)
    except UsageError:
        out.unlink(missing_ok=True)
        raise

    if output is OutputFormat.JSON:
        print_json({"ok": True, "path": str(out)})
        return
    stdout_console().print(
        f"[SUCCESS] Integration schema generated successfully: {out}", markup=False
    )


@click.command()
@file_option
@click.option(
    "--offline",
    is_flag=True,
    help="Do not resolve the secret mappings against their provider.",
)
@output_option
def validate(file: Path, offline: bool, output: OutputFormat) -> None:
    """Check a devdep.yaml and report every error with its line and column.

    Unless --offline, every secret mapping is also resolved as a run would
    resolve it. Exits 0 when the file is valid, 2 when it is not, and 201 when
    a secret mapping cannot be resolved.
    """
    loaded = load_config(file)
    check_base_images(loaded)
    secret_names = [] if offline else check_mappings(loaded.config.pipeline.secrets)
    runtimes = [runtime.name for runtime in loaded.config.pipeline.runtimes]
    if output is OutputFormat.JSON:
        print_json(
            {
                "ok": True,
                "path": str(file),
                "runtimes": runtimes,
                "secrets_resolved": secret_names,
            }
        )
        return
    stdout_console().print(
        f"[SUCCESS] {file} is valid: {len(runtimes)} runtime(s): {', '.join(runtimes)}",
        markup=False,
    )
    if secret_names:
        stdout_console().print(
            f"secrets resolved: {', '.join(secret_names)}", markup=False
        )
