"""The CLI's session cache: where it lives, its mode, and clearing it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from devdep.gateway.session_cache import (
    CachedSession,
    cache_path,
    clear_session,
    load_session,
    save_session,
)

SESSION = CachedSession(
    gateway="http://127.0.0.1:8443",
    ticket="DEP-7",
    credential="c" * 43,
    subject="alice",
    issuer_name="corp",
    expires_at="2026-12-03T13:15:00+00:00",
)


def test_the_cache_follows_xdg_cache_home(tmp_path: Path) -> None:
    assert cache_path({"XDG_CACHE_HOME": str(tmp_path)}) == (
        tmp_path / "devdep" / "session.json"
    )
    assert cache_path({"XDG_CACHE_HOME": "relative/dir"}) == (
        Path.home() / ".cache" / "devdep" / "session.json"
    )
    assert cache_path({}) == Path.home() / ".cache" / "devdep" / "session.json"


def test_the_cache_is_created_with_mode_0600(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cache" / "devdep" / "session.json"

    def no_chmod(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the mode must be set at creation, not changed after")

    monkeypatch.setattr(os, "chmod", no_chmod)
    monkeypatch.setattr(os, "fchmod", no_chmod)
    previous = os.umask(0)
    try:
        save_session(SESSION, path)
    finally:
        os.umask(previous)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_session(path) == SESSION
    assert list(path.parent.iterdir()) == [path]


def test_saving_again_replaces_the_session(tmp_path: Path) -> None:
    path = tmp_path / "session.json"
    save_session(SESSION, path)
    newer = CachedSession(**{**SESSION.__dict__, "ticket": "DEP-8"})

    save_session(newer, path)

    assert load_session(path) == newer
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_unreadable_cache_counts_as_none(tmp_path: Path) -> None:
    path = tmp_path / "session.json"
    assert load_session(path) is None
    path.write_text("{not json")
    assert load_session(path) is None
    path.write_text('{"ticket": "DEP-1"}')
    assert load_session(path) is None


def test_clearing(tmp_path: Path) -> None:
    path = tmp_path / "session.json"
    save_session(SESSION, path)

    assert clear_session(path) is True
    assert not path.exists()
    assert clear_session(path) is False
