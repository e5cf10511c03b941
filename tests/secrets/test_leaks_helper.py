"""The byte-search helper finds what it is meant to find."""

from __future__ import annotations

import base64
from pathlib import Path

from tests.secrets.conftest import canary
from tests.secrets.leaks import CHUNK_BYTES, find_leaks


def test_it_finds_each_form_and_skips_what_it_is_told(tmp_path: Path) -> None:
    value = canary()
    (tmp_path / "clean.log").write_bytes(b"nothing here\n")
    (tmp_path / "raw.bin").write_bytes(b"\0" * 100 + value)
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    (nested / "stream.b64").write_bytes(base64.b64encode(b"xy" + value + b"z"))
    (nested / "hex.txt").write_bytes(value.hex().upper().encode())
    (tmp_path / "link").symlink_to(tmp_path / "raw.bin")
    skipped = tmp_path / "skipped"
    skipped.mkdir()
    (skipped / "raw.bin").write_bytes(value)

    leaks = find_leaks(value, [tmp_path], skip=[skipped])

    found = {(leak.path.name, leak.form) for leak in leaks}
    assert ("raw.bin", "raw") in found
    assert ("stream.b64", "base64 (offset 2)") in found
    assert ("hex.txt", "HEX") in found
    assert not [leak for leak in leaks if leak.path.name in ("clean.log", "link")]
    assert not [leak for leak in leaks if skipped in leak.path.parents]
    assert next(leak for leak in leaks if leak.form == "raw").offset == 100


def test_a_value_across_a_chunk_boundary_is_found_once(tmp_path: Path) -> None:
    value = canary()
    data = b"\0" * (CHUNK_BYTES - 10) + value + b"\0" * 10
    (tmp_path / "big.bin").write_bytes(data)
    leaks = [leak for leak in find_leaks(value, [tmp_path]) if leak.form == "raw"]
    assert [leak.offset for leak in leaks] == [CHUNK_BYTES - 10]
