"""Byte searches for a secret value, and the forms it takes, in files on disk.

Deliberately independent of devdep.secrets.redaction: a form the redactor
forgot must still be found here.

    leaks = find_leaks(canary, [state_dir, image_store, Path("/tmp"), workspace])
    assert leaks == []
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

CHUNK_BYTES = 8 << 20


@dataclass(frozen=True)
class Leak:
    path: Path
    offset: int
    form: str

    def __str__(self) -> str:
        return f"{self.path} at byte {self.offset}: {self.form}"


def leak_forms(value: bytes) -> dict[str, bytes]:
    """The forms of `value` to look for, by name."""
    forms = {
        "raw": value,
        "base64": base64.b64encode(value).rstrip(b"="),
        "base64url": base64.urlsafe_b64encode(value).rstrip(b"="),
        "hex": binascii.hexlify(value),
        "HEX": binascii.hexlify(value).upper(),
        "url-encoded": urllib.parse.quote(value, safe="").encode(),
        "url-encoded (plus)": urllib.parse.quote_plus(value).encode(),
    }
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        forms["json"] = json.dumps(text)[1:-1].encode()
        forms["utf-16"] = text.encode("utf-16-le")
    # The middle of the base64 of the value behind one or two other bytes.
    for offset in (1, 2):
        encoded = base64.b64encode(bytes(offset) + value)
        forms[f"base64 (offset {offset})"] = encoded[
            4 : -4 if len(encoded) > 8 else None
        ]
    return {name: form for name, form in forms.items() if form}


def find_leaks(
    value: bytes,
    roots: Iterable[Path],
    *,
    skip: Iterable[Path] = (),
) -> list[Leak]:
    """Every occurrence of any form of `value` in the regular files under
    `roots`, symlinks not followed; `skip` names files or trees to leave out."""
    forms = leak_forms(value)
    skipped = {Path(path).resolve() for path in skip}
    leaks: list[Leak] = []
    for root in roots:
        for path in _files(Path(root), skipped):
            leaks.extend(_scan(path, forms))
    return leaks


def _files(root: Path, skipped: set[Path]) -> Iterable[Path]:
    if not root.exists() or root.resolve() in skipped:
        return
    if root.is_file() and not root.is_symlink():
        yield root
        return
    for directory, subdirectories, names in os.walk(root, followlinks=False):
        here = Path(directory)
        subdirectories[:] = [d for d in subdirectories if here / d not in skipped]
        for name in names:
            path = here / name
            if path in skipped:
                continue
            try:
                status = path.lstat()
            except OSError:
                continue
            if stat.S_ISREG(status.st_mode):
                yield path


def _scan(path: Path, forms: dict[str, bytes]) -> list[Leak]:
    overlap = max(len(form) for form in forms.values()) - 1
    found: list[Leak] = []
    try:
        handle = path.open("rb")
    except OSError:
        return found
    with handle:
        base = 0
        tail = b""
        while True:
            chunk = handle.read(CHUNK_BYTES)
            if not chunk:
                break
            window = tail + chunk
            for name, form in forms.items():
                start = window.find(form)
                while start >= 0:
                    # An occurrence wholly inside the carried-over tail was
                    # reported with the previous chunk.
                    if start + len(form) > len(tail):
                        found.append(Leak(path, base - len(tail) + start, name))
                    start = window.find(form, start + 1)
            base += len(chunk)
            tail = window[-overlap:] if overlap else b""
    return found
