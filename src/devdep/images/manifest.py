"""The small JSON manifest stored beside every artefact of the image store.

A manifest is written last, after its artefact is complete, so an artefact
without one is an interrupted build and is never used.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    kind: str  # "kernel", "initramfs", "agent" or "image"
    name: str
    file: str  # the artefact's file name, in the manifest's directory
    sha384: str
    size: int
    created: str  # ISO 8601, UTC
    inputs: str  # digest of what it was built from; equal inputs, no rebuild
    details: dict[str, Any] = field(default_factory=dict)

    def artefact(self, directory: Path) -> Path:
        return directory / self.file


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def write_manifest(directory: Path, manifest: Manifest) -> None:
    document = {"format": FORMAT_VERSION, **asdict(manifest)}
    temporary = directory / f".{MANIFEST_NAME}.tmp"
    temporary.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    temporary.replace(directory / MANIFEST_NAME)


def read_manifest(directory: Path) -> Manifest | None:
    """The manifest in `directory`, or None when there is none or it is not one
    this version of devdep can read."""
    try:
        document = json.loads((directory / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("format") != FORMAT_VERSION:
        return None
    try:
        return Manifest(
            kind=str(document["kind"]),
            name=str(document["name"]),
            file=str(document["file"]),
            sha384=str(document["sha384"]),
            size=int(document["size"]),
            created=str(document["created"]),
            inputs=str(document["inputs"]),
            details=dict(document.get("details") or {}),
        )
    except (KeyError, TypeError, ValueError):
        return None
