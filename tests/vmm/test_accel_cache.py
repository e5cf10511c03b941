"""The acceleration decision, made once per host boot and QEMU build."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from devdep.vmm import accel
from devdep.vmm.accel import Acceleration, AccelerationReport, cached_acceleration


def test_the_decision_is_cached_and_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str | None] = []

    def detect(*, qemu_binary: str | None = None) -> AccelerationReport:
        calls.append(qemu_binary)
        return AccelerationReport(Acceleration.TCG, "no /dev/kvm on this host")

    monkeypatch.setattr(accel, "detect_acceleration", detect)
    boot_id = tmp_path / "boot_id"
    boot_id.write_text("boot-1\n")
    cache = tmp_path / "host" / "acceleration.json"
    binary = tmp_path / "qemu"
    binary.write_text("")

    with caplog.at_level(logging.INFO, logger="devdep.vmm.accel"):
        first = cached_acceleration(cache, qemu_binary=str(binary), boot_id=boot_id)
        second = cached_acceleration(cache, qemu_binary=str(binary), boot_id=boot_id)
    assert (
        first
        == second
        == AccelerationReport(Acceleration.TCG, "no /dev/kvm on this host")
    )
    assert len(calls) == 1
    assert [r.message for r in caplog.records] == [
        "acceleration: tcg (no /dev/kvm on this host)"
    ]
    assert json.loads(cache.read_text())["acceleration"] == "tcg"

    boot_id.write_text("boot-2\n")
    cached_acceleration(cache, qemu_binary=str(binary), boot_id=boot_id)
    assert len(calls) == 2


def test_a_corrupt_cache_is_decided_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        accel,
        "detect_acceleration",
        lambda *, qemu_binary=None: AccelerationReport(Acceleration.KVM, "kvm_intel"),
    )
    cache = tmp_path / "acceleration.json"
    cache.write_text("{not json")
    report = cached_acceleration(cache, qemu_binary=None, boot_id=tmp_path / "none")
    assert report.acceleration is Acceleration.KVM
