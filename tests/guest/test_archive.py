"""The guest's own tar reader and writer: interoperability with tarfile, and safety."""

from __future__ import annotations

import contextlib
import io
import stat
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devdep.guest.archive import extract_archive, relative_member_path, write_archive
from devdep.guest.protocol import ArchiveError, UnsafeArchive
from tests.guest.test_agent import tar_of


def tar_with_format(
    tar_format: int, members: list[tuple[str, bytes]], *, mtime: float = 1_700_000_000
) -> io.BytesIO:
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w|", format=tar_format) as archive:
        for name, content in members:
            member = tarfile.TarInfo(name)
            member.size = len(content)
            member.mode = 0o640
            member.mtime = mtime
            archive.addfile(member, io.BytesIO(content))
    stream.seek(0)
    return stream


def test_a_plain_tree_is_extracted(tmp_path: Path) -> None:
    count = extract_archive(
        tar_of(
            (".", None, "dir"),
            ("a", None, "dir"),
            ("a/b.txt", b"bee", "file"),
            ("a/c", "b.txt", "symlink"),
            ("d.txt", "a/b.txt", "hardlink"),
            ("implicit/parent/e.txt", b"e", "file"),
        ),
        str(tmp_path / "out"),
    )

    assert count == 5
    assert (tmp_path / "out/a/c").read_text() == "bee"
    assert (tmp_path / "out/a/c").readlink() == Path("b.txt")
    assert (tmp_path / "out/d.txt").stat().st_ino == (
        tmp_path / "out/a/b.txt"
    ).stat().st_ino
    assert (tmp_path / "out/implicit/parent/e.txt").read_text() == "e"


@pytest.mark.parametrize(
    "tar_format", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT]
)
def test_every_tarfile_format_is_read(tmp_path: Path, tar_format: int) -> None:
    # ustar fits a long name through its prefix field, GNU through a ././@LongLink
    # member, pax through an extended header.
    long_name = "deep/" * 18 + "file.txt"
    members = [("short.txt", b"short"), (long_name, b"long" * 3000)]
    if tar_format != tarfile.USTAR_FORMAT:
        members.append(("ünïcode-" + "x" * 120, b"u"))

    extract_archive(tar_with_format(tar_format, members), str(tmp_path))

    for name, content in members:
        assert (tmp_path / name).read_bytes() == content
    assert (tmp_path / "short.txt").stat().st_mtime == 1_700_000_000


def test_fractional_pax_times_are_read(tmp_path: Path) -> None:
    extract_archive(
        tar_with_format(tarfile.PAX_FORMAT, [("t", b"")], mtime=1_600_000_000.75),
        str(tmp_path),
    )

    assert int((tmp_path / "t").stat().st_mtime) == 1_600_000_000


def test_set_id_and_world_write_bits_are_dropped(tmp_path: Path) -> None:
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as archive:
        member = tarfile.TarInfo("tool")
        member.mode = 0o6777
        archive.addfile(member, io.BytesIO(b""))
    stream.seek(0)

    extract_archive(stream, str(tmp_path))

    assert stat.S_IMODE((tmp_path / "tool").stat().st_mode) == 0o755


@pytest.mark.parametrize(
    "member",
    [
        ("../x", b"", "file"),
        ("/abs", b"", "file"),
        ("a/../../x", b"", "file"),
        ("l", "..", "symlink"),
        ("l", "/", "symlink"),
        ("h", "/etc/passwd", "hardlink"),
        ("h", "not-extracted-before", "hardlink"),
        ("c", None, "chardev"),
    ],
)
def test_unsafe_members_are_refused(
    tmp_path: Path, member: tuple[str, bytes | str | None, str]
) -> None:
    destination = tmp_path / "dest"

    with pytest.raises(UnsafeArchive):
        extract_archive(tar_of(member), str(destination))

    assert [path.name for path in tmp_path.iterdir()] == ["dest"]


def test_a_fifo_is_refused(tmp_path: Path) -> None:
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as archive:
        member = tarfile.TarInfo("pipe")
        member.type = tarfile.FIFOTYPE
        archive.addfile(member)
    stream.seek(0)

    with pytest.raises(UnsafeArchive, match="device file or FIFO"):
        extract_archive(stream, str(tmp_path))


def test_a_link_left_in_the_destination_is_not_written_through(
    tmp_path: Path,
) -> None:
    # A job's step may leave links behind in the workspace before a later
    # extraction into it.
    destination = tmp_path / "dest"
    destination.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (destination / "dir-link").symlink_to(outside)
    (destination / "file-link").symlink_to(outside / "file")
    (destination / "dangling").symlink_to(outside / "not-yet")

    for member in (
        ("dir-link/x", b"x", "file"),
        ("dir-link/new/x", b"x", "file"),
        ("file-link", b"x", "file"),
        ("dangling/x", b"x", "file"),
    ):
        with pytest.raises(UnsafeArchive):
            extract_archive(tar_of(member), str(destination))

    assert list(outside.iterdir()) == []


def test_a_stream_that_is_not_a_tar_is_an_archive_error(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError) as caught:
        extract_archive(io.BytesIO(b"\x01" * 2000), str(tmp_path))

    assert not isinstance(caught.value, UnsafeArchive)


def test_a_compressed_tar_is_refused(tmp_path: Path) -> None:
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w:gz") as archive:
        archive.addfile(tarfile.TarInfo("z.txt"), io.BytesIO(b""))
    stream.seek(0)

    with pytest.raises(ArchiveError):
        extract_archive(stream, str(tmp_path))


def test_a_truncated_tar_is_an_archive_error(tmp_path: Path) -> None:
    whole = tar_of(("f", b"x" * 5000, "file")).getvalue()

    with pytest.raises(ArchiveError, match="middle of a member"):
        extract_archive(io.BytesIO(whole[:2048]), str(tmp_path))


def test_an_empty_stream_is_an_empty_archive(tmp_path: Path) -> None:
    assert extract_archive(io.BytesIO(b""), str(tmp_path)) == 0


@settings(max_examples=200)
@given(st.binary(max_size=3 * 512))
def test_any_bytes_extract_or_raise_an_archive_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    destination = tmp_path_factory.mktemp("fuzz")
    with contextlib.suppress(ArchiveError):
        extract_archive(io.BytesIO(data), str(destination))


def with_checksum(header: bytearray) -> bytearray:
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return header


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=511), st.integers(0, 255)),
        min_size=1,
        max_size=12,
    ),
    st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]),
)
def test_headers_with_garbage_fields_extract_or_raise_an_archive_error(
    tmp_path_factory: pytest.TempPathFactory,
    changes: list[tuple[int, int]],
    tar_format: int,
) -> None:
    # Random bytes rarely pass a header's checksum; these always do, so the
    # fields behind it get parsed.
    data = bytearray(
        tar_with_format(tar_format, [("n" * 120, b"x" * 700), ("b", b"y")]).getvalue()
    )
    header = bytearray(data[:512])
    for position, value in changes:
        header[position] = value
    data[:512] = with_checksum(header)
    destination = tmp_path_factory.mktemp("fields")

    with contextlib.suppress(ArchiveError):
        extract_archive(io.BytesIO(bytes(data)), str(destination))

    for path in destination.rglob("*"):
        assert path.resolve().is_relative_to(destination.resolve())


def test_write_archive_is_read_by_tarfile(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "dir/sub").mkdir(parents=True)
    (root / "dir/file").write_text("content")
    (root / "dir/sub/empty").write_bytes(b"")
    (root / "dir/to-etc").symlink_to("/etc")
    long_name = "n" * 150
    (root / "dir" / long_name).write_bytes(b"long")
    (root / "dir/ünï").write_bytes(b"unicode")
    (root / "big.bin").write_bytes(bytes(range(256)) * 4000)
    stream = io.BytesIO()

    missing = write_archive(str(root), ["dir", "big.bin", "absent"], stream)

    stream.seek(0)
    with tarfile.open(fileobj=stream) as written:
        members = {member.name: member for member in written.getmembers()}
        assert set(members) == {
            "dir",
            "dir/sub",
            "dir/sub/empty",
            "dir/file",
            "dir/to-etc",
            f"dir/{long_name}",
            "dir/ünï",
            "big.bin",
        }
        assert members["dir/to-etc"].issym()
        assert members["dir/to-etc"].linkname == "/etc"
        big = written.extractfile("big.bin")
        assert big is not None
        assert big.read() == (root / "big.bin").read_bytes()
    assert missing == ["absent"]


def test_write_archive_round_trips_through_extract_archive(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a/b").mkdir(parents=True)
    (root / "a/b/c.txt").write_text("see")
    (root / "a/link").symlink_to("b/c.txt")
    stream = io.BytesIO()
    write_archive(str(root), ["a"], stream)
    stream.seek(0)

    extract_archive(stream, str(tmp_path / "copy"))

    assert (tmp_path / "copy/a/link").read_text() == "see"


@pytest.mark.parametrize("path", ["", "/x", "../x", "a/../../x", ".", "a\0b"])
def test_relative_member_path_refuses_escapes(path: str) -> None:
    with pytest.raises(ValueError):
        relative_member_path(path)


def test_relative_member_path_normalises() -> None:
    assert relative_member_path("dist/") == "dist"
    assert relative_member_path("./a//b") == "a/b"
