"""`devdep-cli image ...`: build the guest kernel, the agent runtime disk and
the default image, import images, and list the image store."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from devdep.cli.output import (
    OutputFormat,
    output_option,
    print_json,
    stderr_console,
    stdout_console,
)
from devdep.images.agentdisk import build_agent_disk
from devdep.images.boot import ImageStore
from devdep.images.initramfs import build_initramfs
from devdep.images.kernel import build_kernel
from devdep.images.manifest import Manifest
from devdep.images.progress import BuildProgress, SilentProgress
from devdep.images.rootfs import build_base_image, import_image

force_option = click.option(
    "--force", is_flag=True, help="Build again even when the store is up to date."
)
store_option = click.option(
    "--store",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The image store (default: /var/lib/devdep/images as root, else "
    "$XDG_DATA_HOME/devdep/images; DEVDEP_IMAGE_STORE overrides).",
)


class _RichProgress:
    """Shows each long step on stderr with a spinner and its elapsed time."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            SpinnerColumn(finished_text="[green]done[/green]"),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )

    @contextlib.contextmanager
    def step(self, description: str) -> Iterator[None]:
        task = self.progress.add_task(description, total=1)
        try:
            yield
        finally:
            self.progress.update(task, completed=1)

    def note(self, message: str) -> None:
        self.progress.console.print(message, markup=False)


@contextlib.contextmanager
def _progress(output: OutputFormat) -> Iterator[BuildProgress]:
    if output is OutputFormat.JSON:
        yield SilentProgress()
        return
    display = _RichProgress(stderr_console())
    with display.progress:
        yield display


def _describe(manifest: Manifest) -> dict[str, Any]:
    return {
        "kind": manifest.kind,
        "name": manifest.name,
        "file": manifest.file,
        "size": manifest.size,
        "sha384": manifest.sha384,
        "created": manifest.created,
        "details": manifest.details,
    }


def _report(
    output: OutputFormat, results: list[tuple[Manifest, bool]], store: ImageStore
) -> None:
    if output is OutputFormat.JSON:
        print_json(
            {
                "ok": True,
                "store": str(store.root),
                "results": [
                    {**_describe(manifest), "built": built}
                    for manifest, built in results
                ],
            }
        )
        return
    console = stdout_console()
    for manifest, built in results:
        state = "built" if built else "up to date"
        console.print(
            f"{manifest.kind} {manifest.name}: {state}, "
            f"sha384 {manifest.sha384[:16]}..., {_human_size(manifest.size)}",
            markup=False,
        )


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@click.group()
def image() -> None:
    """Build and list what guests boot from: kernel, initramfs, agent, images."""


@image.command()
@force_option
@store_option
@output_option
def kernel(force: bool, store: Path | None, output: OutputFormat) -> None:
    """Fetch Debian's linux-image-amd64 and prepare the guest kernel and its
    boot initramfs (busybox, modules, /init). Does nothing when up to date."""
    image_store = ImageStore(store)
    with _progress(output) as progress:
        kernel_build = build_kernel(image_store, progress, force=force)
        initramfs_build = build_initramfs(image_store, progress, force=force)
    _report(
        output,
        [
            (kernel_build.manifest, kernel_build.built),
            (initramfs_build.manifest, initramfs_build.built),
        ],
        image_store,
    )


@image.command()
@force_option
@store_option
@output_option
def agent(force: bool, store: Path | None, output: OutputFormat) -> None:
    """Build the guest agent's runtime disk: Debian's Python 3 and devdep.guest.

    Rebuilt when the installed agent code changes."""
    image_store = ImageStore(store)
    with _progress(output) as progress:
        build = build_agent_disk(image_store, progress, force=force)
    _report(output, [(build.manifest, build.built)], image_store)


@image.command(name="build-base")
@force_option
@store_option
@output_option
def build_base(force: bool, store: Path | None, output: OutputFormat) -> None:
    """Build the default image, debian-bookworm-minimal, with debootstrap from
    Debian's archive (needs root). Does nothing when it is already stored."""
    image_store = ImageStore(store)
    with _progress(output) as progress:
        build = build_base_image(image_store, progress, force=force)
    _report(output, [(build.manifest, build.built)], image_store)


@image.command(name="import")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@force_option
@store_option
@output_option
def import_(
    name: str, file: Path, force: bool, store: Path | None, output: OutputFormat
) -> None:
    """Add an ext4 file to the store as image NAME, for `base_os: NAME`."""
    image_store = ImageStore(store)
    with _progress(output) as progress:
        build = import_image(image_store, name, file, progress, force=force)
    _report(output, [(build.manifest, build.built)], image_store)


@image.command(name="ls")
@store_option
@output_option
def list_(store: Path | None, output: OutputFormat) -> None:
    """List the image store: images, and the kernel, initramfs and agent disk."""
    image_store = ImageStore(store)
    entries = image_store.entries()
    if output is OutputFormat.JSON:
        print_json(
            {
                "ok": True,
                "store": str(image_store.root),
                "images": [_describe(m) for m in entries if m.kind == "image"],
                "kernel": next(
                    (_describe(m) for m in entries if m.kind == "kernel"), None
                ),
                "initramfs": next(
                    (_describe(m) for m in entries if m.kind == "initramfs"), None
                ),
                "agent": next(
                    (_describe(m) for m in entries if m.kind == "agent"), None
                ),
            }
        )
        return
    console = stdout_console()
    if not entries:
        console.print(
            f"the image store {image_store.root} is empty; run "
            "'devdep-cli image kernel', 'devdep-cli image agent' and "
            "'devdep-cli image build-base'",
            markup=False,
        )
        return
    rows = [("NAME", "KIND", "SIZE", "SHA-384", "CREATED")]
    rows += [
        (
            manifest.name,
            manifest.kind,
            _human_size(manifest.size),
            manifest.sha384[:16],
            manifest.created,
        )
        for manifest in entries
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(5)]
    console.print(f"image store {image_store.root}", markup=False)
    for row in rows:
        line = "  ".join(
            cell.ljust(width) for cell, width in zip(row, widths, strict=True)
        )
        console.print(line.rstrip(), markup=False)
