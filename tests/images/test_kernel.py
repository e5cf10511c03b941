from __future__ import annotations

import lzma
import struct
from pathlib import Path

import pytest

from devdep.images import kernel as kernel_module
from devdep.images.boot import ImageStore
from devdep.images.debian import PackageVersion
from devdep.images.errors import ImageBuildFailed
from devdep.images.kernel import (
    LoadStep,
    ModuleTree,
    NotAKernel,
    build_kernel,
    extract_vmlinux,
    read_modinfo,
)

FAKE_ELF = b"\x7fELF\x02\x01\x01" + b"\0" * 57 + b"kernel text" * 1000


def xz(data: bytes) -> bytes:
    # The kernel's own XZ streams use the x86 BCJ filter before LZMA2.
    return lzma.compress(
        data,
        format=lzma.FORMAT_XZ,
        check=lzma.CHECK_CRC32,
        filters=[{"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2}],
    )


def bzimage(payload: bytes, *, setup_sectors: int = 3, header: bool = True) -> bytes:
    setup = bytearray((setup_sectors + 1) * 512)
    setup[0x1F1] = setup_sectors
    if header:
        setup[0x202:0x206] = b"HdrS"
    decompressor_stub = b"\x90" * 300
    struct.pack_into("<II", setup, 0x248, len(decompressor_stub), len(payload))
    # After the payload comes padding and its size, as in a real bzImage.
    return bytes(setup) + decompressor_stub + payload + b"\0" * 13 + b"\x12\x34\x56\x78"


def test_extracts_the_elf_payload_the_setup_header_points_at() -> None:
    assert extract_vmlinux(bzimage(xz(FAKE_ELF))) == FAKE_ELF


def test_finds_the_xz_magic_without_a_setup_header() -> None:
    assert extract_vmlinux(bzimage(xz(FAKE_ELF), header=False)) == FAKE_ELF


def test_a_blob_without_xz_payload_is_not_a_kernel() -> None:
    with pytest.raises(NotAKernel, match="no XZ"):
        extract_vmlinux(b"\0" * 4096)


def test_a_payload_that_is_not_elf_is_refused() -> None:
    with pytest.raises(NotAKernel, match="not a 64-bit ELF"):
        extract_vmlinux(bzimage(xz(b"MZ not an elf" * 10)))


def test_a_truncated_payload_is_refused() -> None:
    payload = xz(FAKE_ELF)
    with pytest.raises(NotAKernel):
        extract_vmlinux(bzimage(payload[: len(payload) // 2]))


# --- modules ------------------------------------------------------------------


def module_elf(modinfo: list[str]) -> bytes:
    """A minimal ELF64 file whose only sections are .modinfo and .shstrtab."""
    info = b"".join(entry.encode() + b"\0" for entry in modinfo)
    names = b"\0.modinfo\0.shstrtab\0"
    header_size, section_size = 64, 64
    info_offset = header_size
    names_offset = info_offset + len(info)
    sections_offset = names_offset + len(names)
    header = bytearray(header_size)
    header[0:7] = b"\x7fELF\x02\x01\x01"
    struct.pack_into("<Q", header, 0x28, sections_offset)
    struct.pack_into("<HHH", header, 0x3A, section_size, 3, 2)

    def section(name: int, offset: int, size: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name, 1, 0, 0, offset, size, 0, 0, 1, 0)

    sections = (
        bytes(section_size)
        + section(1, info_offset, len(info))
        + section(10, names_offset, len(names))
    )
    return bytes(header) + info + names + sections


def write_module(root: Path, relative: str, modinfo: list[str]) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    data = module_elf(modinfo)
    if relative.endswith(".xz"):
        data = lzma.compress(data, format=lzma.FORMAT_XZ)
    path.write_bytes(data)
    return path


def test_reads_depends_softdeps_and_aliases(tmp_path: Path) -> None:
    path = write_module(
        tmp_path,
        "fs/ext4.ko",
        ["license=GPL", "depends=jbd2,mbcache", "softdep=pre: crypto-crc32c"],
    )
    info = read_modinfo(path)
    assert info.name == "ext4"
    assert info.depends == ["jbd2", "mbcache"]
    assert info.softdeps_before == ["crypto-crc32c"]


@pytest.fixture
def module_tree(tmp_path: Path) -> ModuleTree:
    write_module(tmp_path, "drivers/virtio_ring.ko", ["depends="])
    write_module(tmp_path, "drivers/virtio.ko", ["depends=virtio_ring"])
    write_module(tmp_path, "drivers/virtio_blk.ko.xz", ["depends=virtio,virtio_ring"])
    write_module(
        tmp_path,
        "fs/ext4.ko",
        ["depends=jbd2,mbcache,crc16", "softdep=pre: crypto-crc32c"],
    )
    write_module(tmp_path, "fs/jbd2.ko", ["depends=", "softdep=pre: crypto-crc32c"])
    write_module(tmp_path, "fs/mbcache.ko", ["depends="])
    write_module(tmp_path, "lib/crc16.ko", ["depends="])
    write_module(tmp_path, "crypto/crc32c_generic.ko", ["alias=crypto-crc32c"])
    write_module(tmp_path, "arch/crc32c-intel.ko", ["alias=crypto-crc32c"])
    write_module(tmp_path, "net/unrelated.ko", ["depends="])
    write_module(tmp_path, "net/core/failover.ko", ["depends="])
    write_module(tmp_path, "drivers/net/net_failover.ko", ["depends=failover"])
    write_module(
        tmp_path,
        "drivers/net/virtio_net.ko",
        ["depends=net_failover,virtio_ring,virtio"],
    )
    return ModuleTree(tmp_path)


def test_each_module_comes_after_what_it_needs(module_tree: ModuleTree) -> None:
    order = module_tree.load_order(("virtio_ring", "virtio", "virtio_blk", "ext4"))
    assert order == [
        LoadStep("virtio_ring.ko", False),
        LoadStep("virtio.ko", False),
        LoadStep("virtio_blk.ko.xz", False),
        # Two modules provide the crc32c alias: either may load, so neither
        # is required on its own.
        LoadStep("crc32c_generic.ko", True),
        LoadStep("crc32c-intel.ko", True),
        LoadStep("jbd2.ko", False),
        LoadStep("mbcache.ko", False),
        LoadStep("crc16.ko", False),
        LoadStep("ext4.ko", False),
    ]


def test_network_modules_come_last_and_only_with_what_the_rest_lacks(
    module_tree: ModuleTree,
) -> None:
    order = module_tree.load_order(("virtio_ring", "virtio"), ("virtio_net",))
    assert order == [
        LoadStep("virtio_ring.ko", False),
        LoadStep("virtio.ko", False),
        LoadStep("failover.ko", False, network=True),
        LoadStep("net_failover.ko", False, network=True),
        LoadStep("virtio_net.ko", False, network=True),
    ]


def test_a_missing_module_is_a_build_error(module_tree: ModuleTree) -> None:
    with pytest.raises(ImageBuildFailed, match="no module 'overlay'"):
        module_tree.load_order(("overlay",))


# --- idempotence --------------------------------------------------------------


def test_a_second_run_with_the_same_package_does_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = PackageVersion("linux-image-6.1.0-99-amd64", "6.1.999-1")

    def candidate(name: str) -> tuple[PackageVersion, list[str]]:
        if name == "linux-image-amd64":
            return PackageVersion(name, "6.1.999-1"), [package.name]
        return package, []

    built: list[str] = []

    def build_into(store: ImageStore, version: PackageVersion, inputs: str, *_: object):
        built.append(version.version)
        return kernel_module.Manifest(
            kind="kernel",
            name="6.1.0-99-amd64",
            file="vmlinux",
            sha384="0" * 96,
            size=1,
            created="now",
            inputs=inputs,
            details={"release": "6.1.0-99-amd64"},
        )

    store = ImageStore(tmp_path)
    monkeypatch.setattr(kernel_module, "candidate", candidate)
    monkeypatch.setattr(kernel_module, "_build_into", build_into)
    monkeypatch.setattr(
        store, "kernel_manifest", lambda: first.manifest if built else None
    )

    first = build_kernel(store)
    second = build_kernel(store)

    assert first.built and not second.built
    assert built == ["6.1.999-1"]
