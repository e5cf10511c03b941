from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from devdep.images.cpio import CpioWriter
from devdep.images.initramfs import ModuleLoad, compose


def parse_newc(archive: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """name -> (mode, data, (rdevmajor, rdevminor)), read back independently."""
    entries: dict[str, tuple[int, bytes, tuple[int, int]]] = {}
    offset = 0
    while True:
        assert archive[offset : offset + 6] == b"070701"
        fields = [
            int(archive[offset + 6 + 8 * i : offset + 14 + 8 * i], 16)
            for i in range(13)
        ]
        mode, size, name_size = fields[1], fields[6], fields[11]
        name_start = offset + 110
        name = archive[name_start : name_start + name_size - 1].decode()
        data_start = name_start + name_size
        data_start += -data_start % 4
        data = archive[data_start : data_start + size]
        offset = data_start + size
        offset += -offset % 4
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, data, (fields[9], fields[10]))


def test_entries_read_back_with_their_types_and_data() -> None:
    writer = CpioWriter()
    writer.add_directory(".")
    writer.add_directory("/bin")
    writer.add_file("bin/busybox", b"\x7fELF...", 0o755)
    writer.add_symlink("bin/sh", "busybox")
    writer.add_character_device("dev/console", 5, 1)
    entries = parse_newc(writer.finish())

    assert stat.S_ISDIR(entries["bin"][0])
    assert entries["bin/busybox"][1] == b"\x7fELF..."
    assert stat.S_IMODE(entries["bin/busybox"][0]) == 0o755
    assert stat.S_ISLNK(entries["bin/sh"][0]) and entries["bin/sh"][1] == b"busybox"
    assert stat.S_ISCHR(entries["dev/console"][0])
    assert entries["dev/console"][2] == (5, 1)


def test_the_same_entries_give_the_same_bytes() -> None:
    def build() -> bytes:
        writer = CpioWriter()
        writer.add_file("init", b"#!/bin/sh\n", 0o755)
        return writer.finish()

    assert build() == build()


def test_a_path_cannot_be_added_twice() -> None:
    writer = CpioWriter()
    writer.add_file("init", b"")
    with pytest.raises(ValueError, match="already"):
        writer.add_file("/init", b"")


@pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox cpio")
def test_another_cpio_reader_lists_the_archive(tmp_path: Path) -> None:
    writer = CpioWriter()
    writer.add_directory("bin")
    writer.add_file("bin/tool", b"x" * 5, 0o755)
    writer.add_symlink("bin/alias", "tool")
    archive = tmp_path / "archive.cpio"
    archive.write_bytes(writer.finish())

    listed = subprocess.run(
        ["busybox", "cpio", "-t", "-F", str(archive)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert listed == ["bin", "bin/tool", "bin/alias"]


def test_the_initramfs_holds_init_busybox_modules_and_runtime_links() -> None:
    modules = [
        (ModuleLoad("virtio_ring.ko", False), b"ring"),
        (ModuleLoad("crc32c-intel.ko", True), b"crc"),
        (ModuleLoad("virtio_net.ko", False, network=True), b"net"),
    ]
    archive = compose(b"BUSYBOX", ["busybox", "sh", "mount"], modules, b"#!/bin/sh\n")
    entries = parse_newc(archive)

    assert stat.S_IMODE(entries["init"][0]) == 0o755
    assert entries["bin/busybox"][1] == b"BUSYBOX"
    assert entries["bin/sh"][1] == b"busybox"
    assert "bin/busybox" in entries and entries["dev/console"][2] == (5, 1)
    assert entries["lib/modules/load-order"][1] == (
        b"virtio_ring.ko\ncrc32c-intel.ko optional\nvirtio_net.ko network\n"
    )
    assert entries["usr"][1] == b"/agent/usr"
    assert entries["lib64"][1] == b"/agent/lib64"
    names = list(entries)
    # The kernel creates entries in order, so parents come first.
    assert (
        names.index("lib")
        < names.index("lib/modules")
        < names.index("lib/modules/virtio_ring.ko")
    )
