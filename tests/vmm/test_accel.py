from __future__ import annotations

from pathlib import Path

import pytest

from devdep.vmm.accel import Acceleration, detect_acceleration


def host(
    tmp_path: Path, *, modules: list[str], flags: str, kvm: bool = True
) -> dict[str, Path]:
    sys_module = tmp_path / "module"
    for name in modules:
        (sys_module / name).mkdir(parents=True)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: fpu {flags} sse2\n")
    dev_kvm = tmp_path / "kvm"
    if kvm:
        dev_kvm.write_text("")
    return {"sys_module": sys_module, "cpuinfo": cpuinfo, "dev_kvm": dev_kvm}


def test_kvm_pvm_alone_falls_back_to_tcg(tmp_path: Path) -> None:
    paths = host(tmp_path, modules=["kvm", "kvm_pvm"], flags="")
    report = detect_acceleration(qemu_binary="/usr/bin/qemu", **paths)
    assert report.acceleration is Acceleration.TCG
    assert "kvm_pvm" in report.reason


@pytest.mark.parametrize(("module", "flag"), [("kvm_intel", "vmx"), ("kvm_amd", "svm")])
def test_real_kvm_is_used(tmp_path: Path, module: str, flag: str) -> None:
    paths = host(tmp_path, modules=["kvm", module], flags=flag)
    report = detect_acceleration(qemu_binary="/usr/bin/qemu", **paths)
    assert report.acceleration is Acceleration.KVM


def test_kvm_module_without_cpu_flag_is_tcg(tmp_path: Path) -> None:
    paths = host(tmp_path, modules=["kvm", "kvm_intel"], flags="")
    assert (
        detect_acceleration(qemu_binary="q", **paths).acceleration is Acceleration.TCG
    )


def test_no_dev_kvm_is_tcg(tmp_path: Path) -> None:
    paths = host(tmp_path, modules=["kvm_intel"], flags="vmx", kvm=False)
    assert (
        detect_acceleration(qemu_binary="q", **paths).acceleration is Acceleration.TCG
    )


def test_no_qemu_is_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    paths = host(tmp_path, modules=["kvm_intel"], flags="vmx")
    assert detect_acceleration(**paths).acceleration is Acceleration.NONE
