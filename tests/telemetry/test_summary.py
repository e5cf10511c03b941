"""The run summary document and the SHA-384 digests in it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from devdep.telemetry.digests import DigestCache, sha384_file
from devdep.telemetry.summary import RunSummary, RuntimeRecord, StepRecord


def test_sha384_of_a_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc" * 1000)
    assert sha384_file(path) == hashlib.sha384(b"abc" * 1000).hexdigest()


def test_the_digest_cache_hashes_again_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "image"
    path.write_bytes(b"one")
    cache = DigestCache(tmp_path / "digests.json")
    first = cache.sha384(path)
    cache.save()

    reloaded = DigestCache(tmp_path / "digests.json")
    assert reloaded.sha384(path) == first

    status = path.stat()
    path.write_bytes(b"two")
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert reloaded.sha384(path) == hashlib.sha384(b"two").hexdigest()


def test_the_summary_is_written_atomically_as_json(tmp_path: Path) -> None:
    summary = RunSummary(
        run_id="r-0123456789",
        environment="dev",
        config_path="devdep.yaml",
        acceleration="tcg",
        started_at="2026-01-01T00:00:00+00:00",
        secret_names=["DB_PASSWORD"],
    )
    summary.runtimes.append(RuntimeRecord("build", "debian", 1, 512, boot_seconds=1.5))
    summary.steps.append(StepRecord("build", 1, "make", exit_status=0))
    path = summary.write(tmp_path / "reports")
    document = json.loads(path.read_text())
    assert path.name == "r-0123456789.json"
    assert document["runtimes"][0]["boot_seconds"] == 1.5
    assert document["steps"][0]["exit_status"] == 0
    assert document["secret_names"] == ["DB_PASSWORD"]
    assert list((tmp_path / "reports").iterdir()) == [path]
