from __future__ import annotations

from pathlib import Path

from devdep.runner.hostcheck import CheckStatus, _tun, run_host_checks


def test_a_missing_tun_device_is_reported_with_a_hint(tmp_path: Path) -> None:
    check = _tun(tmp_path / "tun")
    assert check.status is CheckStatus.MISSING
    assert check.hint == "load the tun module: modprobe tun"


def test_a_regular_file_is_not_a_tun_device(tmp_path: Path) -> None:
    fake = tmp_path / "tun"
    fake.write_text("")
    assert _tun(fake).status is CheckStatus.MISSING


def test_every_check_that_is_not_ok_has_a_hint() -> None:
    for check in run_host_checks():
        assert check.status is CheckStatus.OK or check.hint, check
