"""The VM fixture: every VM a test starts is killed after it, and a failing
test keeps each guest's console log."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from devdep.images.boot import BootSpec
from devdep.vmm.accel import Acceleration, detect_acceleration
from devdep.vmm.qemu import QemuVm, VmResources
from tests.vmm.images import ensure_boot_spec


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: Any
) -> Generator[None, Any, Any]:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def boot_spec() -> BootSpec:
    return ensure_boot_spec(read_only_rootfs=True)


@pytest.fixture(scope="session")
def acceleration() -> Acceleration:
    detected = detect_acceleration().acceleration
    if detected is Acceleration.NONE:
        pytest.fail("qemu-system-x86_64 is not installed (make installs it)")
    return detected


@pytest.fixture
def vms(
    request: pytest.FixtureRequest, tmp_path: Path, acceleration: Acceleration
) -> Iterator[Callable[[BootSpec], QemuVm]]:
    started: list[QemuVm] = []

    def make(spec: BootSpec) -> QemuVm:
        run_dir = tmp_path / f"vm{len(started)}"
        run_dir.mkdir()
        vm = QemuVm(
            spec,
            run_dir=run_dir,
            resources=VmResources(vcpus=1, memory_mb=512),
            acceleration=acceleration,
        )
        started.append(vm)
        return vm

    yield make

    report = getattr(request.node, "report_call", None)
    for index, vm in enumerate(started):
        vm.kill()
        if report is not None and report.failed:
            log = tmp_path / f"console-{index}.log"
            log.write_bytes(vm.console.getvalue())
            print(f"guest console of VM {index} kept in {log}")
