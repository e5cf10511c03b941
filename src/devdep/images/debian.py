"""Fetching and unpacking packages from Debian's archive, never installing them.

`apt-get download` fetches a .deb into a directory of ours and `dpkg -x`
unpacks it there: nothing touches the host's dpkg database or its /.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devdep.images.errors import ImageBuildFailed

logger = logging.getLogger(__name__)

_OUTPUT_TAIL_LINES = 15


@dataclass(frozen=True)
class PackageVersion:
    name: str
    version: str

    @property
    def pinned(self) -> str:
        return f"{self.name}={self.version}"


def run_tool(
    command: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> str:
    """Run a build tool and return its output; a failure becomes ImageBuildFailed
    carrying the command, its exit status and the tail of what it printed."""
    logger.debug("running %s", " ".join(command))
    try:
        completed = subprocess.run(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            check=False,
        )
    except FileNotFoundError as exc:
        raise ImageBuildFailed(
            f"{command[0]} is not installed",
            hint="run 'make' once to install the host packages devdep needs",
        ) from exc
    if completed.returncode != 0:
        tail = completed.stdout.strip().splitlines()[-_OUTPUT_TAIL_LINES:]
        raise ImageBuildFailed(
            f"{' '.join(command[:3])} ... failed with exit status "
            f"{completed.returncode}",
            details=tail,
        )
    return completed.stdout


def candidates(packages: list[str]) -> dict[str, tuple[PackageVersion, list[str]]]:
    """The version apt would install of each package, and the package names of
    its Depends field.

    One apt-cache call for them all: where apt keeps no binary cache, each
    call parses every package index again, which takes seconds."""
    try:
        text = run_tool(["apt-cache", "show", "--no-all-versions", *packages])
    except ImageBuildFailed as exc:
        raise ImageBuildFailed(
            f"apt cannot show all of {', '.join(packages)}",
            hint="run 'apt-get update' so apt can see Debian's archive",
            details=exc.details,
        ) from exc
    found: dict[str, tuple[PackageVersion, list[str]]] = {}
    for stanza in text.split("\n\n"):
        fields = _fields(stanza)
        name = fields.get("Package")
        if name in packages and name not in found and "Version" in fields:
            depends = [
                re.split(r"[\s(]", alternative.strip(), maxsplit=1)[0]
                for clause in fields.get("Depends", "").split(",")
                if (alternative := clause.split("|")[0]).strip()
            ]
            found[name] = (PackageVersion(name, fields["Version"]), depends)
    missing = [package for package in packages if package not in found]
    if missing:
        raise ImageBuildFailed(
            f"apt-cache shows no version of {', '.join(missing)}",
            hint="run 'apt-get update' so apt can see Debian's archive",
        )
    return found


def candidate(package: str) -> tuple[PackageVersion, list[str]]:
    return candidates([package])[package]


def _fields(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in stanza.splitlines():
        key, separator, value = line.partition(":")
        if separator and not line.startswith(" ") and key not in fields:
            fields[key] = value.strip()
    return fields


def download(packages: list[PackageVersion], directory: Path) -> dict[str, Path]:
    """Fetch the exact versions named into `directory`; the .deb of each package
    by name."""
    command = ["apt-get", "download", "--quiet"]
    if os.geteuid() == 0:
        # As root apt drops to the _apt user, who cannot write into our private
        # temporary directory; it would fall back with a warning anyway.
        command += ["-o", "APT::Sandbox::User=root"]
    run_tool([*command, *(package.pinned for package in packages)], cwd=directory)
    found: dict[str, Path] = {}
    for package in packages:
        matches = sorted(directory.glob(f"{package.name}_*.deb"))
        if not matches:
            raise ImageBuildFailed(f"apt-get download left no .deb of {package.name}")
        found[package.name] = matches[-1]
    return found


def unpack(deb: Path, destination: Path) -> None:
    """Extract a .deb's files into `destination` (`dpkg -x`: no maintainer
    scripts run and the host's package database is not touched)."""
    destination.mkdir(parents=True, exist_ok=True)
    run_tool(["dpkg", "-x", str(deb), str(destination)])
