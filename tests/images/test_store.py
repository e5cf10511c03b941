from __future__ import annotations

from pathlib import Path

import pytest

from devdep.errors import UsageError
from devdep.images.boot import (
    AGENT_PORT_NAME,
    ImageStore,
    command_line,
    default_store_root,
    host_tsc_khz,
    tsc_hint_khz,
)
from devdep.images.errors import (
    AgentRuntimeMissing,
    ImageCorrupt,
    ImageNotFound,
    KernelMissing,
)
from devdep.images.manifest import Manifest, read_manifest, write_manifest
from tests.images.fakestore import populate


def test_the_environment_overrides_the_store_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DEVDEP_IMAGE_STORE", str(tmp_path))
    assert default_store_root() == tmp_path
    assert ImageStore().root == tmp_path


def test_a_manifest_reads_back_and_a_foreign_one_is_ignored(tmp_path: Path) -> None:
    manifest = Manifest("image", "x", "rootfs.ext4", "ab" * 48, 3, "now", "in", {})
    write_manifest(tmp_path, manifest)
    assert read_manifest(tmp_path) == manifest

    (tmp_path / "manifest.json").write_text('{"format": 99}')
    assert read_manifest(tmp_path) is None


def test_names_lists_only_complete_images(tmp_path: Path) -> None:
    store = populate(tmp_path, images=("zeta", "alpha"))
    (tmp_path / "images" / "half-built").mkdir()
    (tmp_path / "images" / "alpha" / "rootfs.ext4").unlink()
    assert store.names() == ["zeta"]


def test_boot_spec_names_every_part_with_its_digest(tmp_path: Path) -> None:
    store = populate(tmp_path)
    spec = store.boot_spec("debian-bookworm-minimal", read_only_rootfs=True)

    assert spec.kernel == tmp_path / "kernel" / "vmlinux"
    assert spec.initramfs == tmp_path / "initramfs" / "initramfs.cpio"
    rootfs, agent = spec.disks
    assert rootfs.path == tmp_path / "images/debian-bookworm-minimal/rootfs.ext4"
    assert rootfs.read_only
    assert agent.path == tmp_path / "agent" / "agent.ext4"
    assert agent.read_only
    assert spec.agent_port_name == AGENT_PORT_NAME == "org.devdep.agent.0"
    assert set(spec.digests) == {"kernel", "initramfs", "rootfs", "agent"}
    assert all(len(digest) == 96 for digest in spec.digests.values())
    assert spec.command_line.startswith("console=ttyS0 ")
    assert "devdep.rootfs=ro" in spec.command_line
    assert f"devdep.agent_port={AGENT_PORT_NAME}" in spec.command_line


def test_a_writable_rootfs_is_a_snapshot_disk_and_says_rw(tmp_path: Path) -> None:
    spec = populate(tmp_path).boot_spec(
        "debian-bookworm-minimal", read_only_rootfs=False
    )
    assert not spec.disks[0].read_only
    assert spec.disks[1].read_only
    assert "devdep.rootfs=rw" in spec.command_line


def test_an_unknown_image_lists_what_the_store_has(tmp_path: Path) -> None:
    store = populate(tmp_path, images=("debian-bookworm-minimal", "ubuntu-24.04"))
    with pytest.raises(ImageNotFound) as caught:
        store.boot_spec("minimal-alpine-3.18", read_only_rootfs=True)
    assert isinstance(caught.value, UsageError)
    assert caught.value.message == (
        "image 'minimal-alpine-3.18' is not in the image store (it holds: "
        "debian-bookworm-minimal, ubuntu-24.04)"
    )
    assert caught.value.hint is not None
    assert "devdep-cli image build-base" in caught.value.hint


def test_an_empty_store_says_it_holds_none(tmp_path: Path) -> None:
    with pytest.raises(ImageNotFound, match=r"it holds: none"):
        ImageStore(tmp_path).boot_spec("debian-bookworm-minimal", read_only_rootfs=True)


def test_a_store_without_kernel_says_how_to_get_one(tmp_path: Path) -> None:
    store = populate(tmp_path, kernel=False)
    with pytest.raises(KernelMissing) as caught:
        store.boot_spec("debian-bookworm-minimal", read_only_rootfs=True)
    assert caught.value.hint == "run devdep-cli image kernel"


def test_an_initramfs_for_another_kernel_is_not_used(tmp_path: Path) -> None:
    store = populate(tmp_path)
    manifest = read_manifest(tmp_path / "initramfs")
    assert manifest is not None
    write_manifest(
        tmp_path / "initramfs",
        Manifest(**{**manifest.__dict__, "details": {"kernel_sha384": "other"}}),
    )
    with pytest.raises(KernelMissing, match="no boot initramfs"):
        store.boot_spec("debian-bookworm-minimal", read_only_rootfs=True)


def test_an_agent_disk_of_other_agent_code_is_stale(tmp_path: Path) -> None:
    store = populate(tmp_path)
    manifest = read_manifest(tmp_path / "agent")
    assert manifest is not None
    write_manifest(
        tmp_path / "agent",
        Manifest(**{**manifest.__dict__, "details": {"agent_sources": "old"}}),
    )
    with pytest.raises(AgentRuntimeMissing) as caught:
        store.boot_spec("debian-bookworm-minimal", read_only_rootfs=True)
    assert caught.value.hint == "run devdep-cli image agent"


def test_install_replaces_a_slot_whole(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    for content in (b"first", b"second"):
        built = tmp_path / ".scratch" / "build"
        built.mkdir(parents=True)
        (built / "rootfs.ext4").write_bytes(content)
        store.install(
            "images/x",
            built,
            Manifest("image", "x", "rootfs.ext4", "0" * 96, len(content), "now", "i"),
        )
    assert (tmp_path / "images" / "x" / "rootfs.ext4").read_bytes() == b"second"
    assert [entry.name for entry in (tmp_path / ".scratch").iterdir()] == []


def test_the_host_clock_rate_comes_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\ncpu MHz\t\t: 2445.404\n")
    assert host_tsc_khz(cpuinfo) == 2445404
    assert host_tsc_khz(tmp_path / "absent") is None
    assert "tsc_early_khz=2445404" in command_line(
        read_only_rootfs=True, tsc_khz=2445404
    )


def test_verify_catches_a_file_changed_after_it_was_built(tmp_path: Path) -> None:
    store = populate(tmp_path)
    spec = store.boot_spec("debian-bookworm-minimal", read_only_rootfs=True)
    store.verify(spec)

    spec.kernel.write_bytes(b"tampered")
    with pytest.raises(ImageCorrupt, match=r"the kernel .* has SHA-384"):
        store.verify(spec)


def test_the_clock_hint_is_left_out_where_real_kvm_runs(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("cpu MHz\t\t: 3000.000\n")
    modules = tmp_path / "module"
    (modules / "kvm_pvm").mkdir(parents=True)
    assert tsc_hint_khz(modules, cpuinfo) == 3000000

    (modules / "kvm_intel").mkdir()
    assert tsc_hint_khz(modules, cpuinfo) is None
