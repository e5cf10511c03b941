from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devdep import buildinfo


def test_without_git_the_recorded_commit_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_git(*_args: object, **_kwargs: object) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError("git")

    monkeypatch.setattr(buildinfo.subprocess, "run", no_git)
    buildinfo.build_commit.cache_clear()
    recorded = Path(buildinfo.__file__).parent / "_build_commit.txt"
    try:
        assert buildinfo.build_commit() == "unknown"
        recorded.write_text("0123456789abcdef0123456789abcdef01234567\n")
        buildinfo.build_commit.cache_clear()
        assert buildinfo.build_commit() == "01234567"
    finally:
        recorded.unlink(missing_ok=True)
        buildinfo.build_commit.cache_clear()
