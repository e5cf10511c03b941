"""Safe reading and writing of the tar streams that carry workspaces and artifacts.

The guest agent extracts the workspace the host sends and archives the
artifacts it asks for. `extract_archive` refuses, rather than rewrites, any
member with an absolute path, a '..' component, a path through a link, a link
that resolves outside the destination, or a device file or FIFO. Extracted
files belong to the extracting user and lose their set-id, sticky and
group/other write bits.

The tar format is read and written here rather than through `tarfile`: under
emulation importing tarfile (and the shutil, re and compression modules it
pulls in) costs the guest close to half a second on every job's path to its
first step. Only what the two sides exchange is supported: uncompressed POSIX
ustar with pax extended headers (what `tarfile`'s PAX_FORMAT writes), plus GNU
long names on reading.
"""

from __future__ import annotations

import os

from devdep.guest.protocol import ArchiveError, UnsafeArchive

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    class ReadableStream(Protocol):
        def read(self, size: int, /) -> bytes: ...

    class WritableStream(Protocol):
        def write(self, data: bytes, /) -> object: ...


BLOCK = 512
_COPY_CHUNK = 64 * 1024
_MAX_EXTENDED_HEADER = 1024 * 1024

_REGULAR = (b"0", b"\0", b"7")  # 7: contiguous file, a regular file everywhere
_DIRECTORY = b"5"
_SYMLINK = b"2"
_HARDLINK = b"1"
_DEVICES = (b"3", b"4", b"6")  # character device, block device, FIFO
_PAX_HEADER = b"x"
_PAX_GLOBAL = b"g"
_GNU_LONG_NAME = b"L"
_GNU_LONG_LINK = b"K"


class Member:
    """One entry of a tar stream, with the pax and GNU extensions applied."""

    __slots__ = ("kind", "linkname", "mode", "mtime", "name", "size")

    def __init__(
        self, name: str, kind: bytes, size: int, mode: int, mtime: int, linkname: str
    ) -> None:
        self.name = name
        self.kind = kind
        self.size = size
        self.mode = mode
        self.mtime = mtime
        self.linkname = linkname

    def __repr__(self) -> str:
        return f"Member({self.name!r}, kind={self.kind!r}, size={self.size})"


def relative_member_path(path: str) -> str:
    """A workspace-relative path in normal form, or ValueError if it could escape."""
    if not path or path.startswith("/"):
        raise ValueError(f"{path!r} is not a relative path")
    if ".." in path.split("/") or "\0" in path:
        raise ValueError(f"{path!r} climbs out of its directory")
    normal = os.path.normpath(path)
    if normal == ".":
        raise ValueError(f"{path!r} names the whole directory")
    return normal


# --- reading --------------------------------------------------------------------


def extract_archive(stream: ReadableStream, destination: str) -> int:
    """Extract an uncompressed tar stream into `destination`, member by member.

    Members are checked as they arrive, so on UnsafeArchive the members before
    the refused one are already in place. Returns the number extracted.
    """
    os.makedirs(destination, exist_ok=True)
    root = os.path.realpath(destination)
    reader = _TarReader(stream)
    extracted = 0
    try:
        while (member := reader.next_member()) is not None:
            if member.kind == _DIRECTORY and os.path.normpath(member.name) == ".":
                continue
            target = _checked_target(member, root)
            _extract(reader, member, target, root)
            extracted += 1
    except OSError as exc:
        raise ArchiveError(f"the archive could not be extracted: {exc}") from exc
    return extracted


class _TarReader:
    """Reads tar headers and member data, in order, from a stream."""

    def __init__(self, stream: ReadableStream) -> None:
        self._stream = stream
        self._data_left = 0  # of the current member, padding included

    def next_member(self) -> Member | None:
        """The next member, or None at the end-of-archive marker."""
        self.skip_data()
        overrides: dict[str, str] = {}
        while True:
            header = self._read_exact(BLOCK, allow_end=True)
            if header is None or header == bytes(BLOCK):
                return None
            member = _parse_header(header)
            if member.kind in (
                _PAX_HEADER,
                _PAX_GLOBAL,
                _GNU_LONG_NAME,
                _GNU_LONG_LINK,
            ):
                data = self._read_extension(member.size)
                if member.kind == _PAX_HEADER:
                    overrides.update(_parse_pax_records(data))
                elif member.kind == _GNU_LONG_NAME:
                    overrides["path"] = _text(data.rstrip(b"\0"))
                elif member.kind == _GNU_LONG_LINK:
                    overrides["linkpath"] = _text(data.rstrip(b"\0"))
                # A global pax header's settings (a default charset, times)
                # change nothing this reader uses.
                continue
            _apply_overrides(member, overrides)
            self._data_left = _padded(member.size) if member.kind in _REGULAR else 0
            return member

    def copy_data(self, member: Member, fd: int) -> None:
        """Write the current member's data to `fd`."""
        left = member.size
        while left:
            chunk = self._read_exact(min(left, _COPY_CHUNK))
            assert chunk is not None
            _write_all(fd, chunk)
            left -= len(chunk)
        self._data_left -= member.size
        self.skip_data()

    def skip_data(self) -> None:
        while self._data_left:
            size = min(self._data_left, _COPY_CHUNK)
            self._read_exact(size)
            self._data_left -= size

    def _read_extension(self, size: int) -> bytes:
        if size > _MAX_EXTENDED_HEADER:
            raise ArchiveError(f"an extended tar header of {size} bytes is too large")
        data = self._read_exact(_padded(size))
        assert data is not None
        return data[:size]

    def _read_exact(self, size: int, *, allow_end: bool = False) -> bytes | None:
        chunks = []
        wanted = size
        while wanted:
            chunk = self._stream.read(wanted)
            if not chunk:
                if allow_end and wanted == size:
                    return None
                raise ArchiveError("the tar stream ends in the middle of a member")
            chunks.append(chunk)
            wanted -= len(chunk)
        return b"".join(chunks)


def _parse_header(header: bytes) -> Member:
    stored = _number(header[148:156], "checksum")
    unsigned = sum(header) - sum(header[148:156]) + 8 * 0x20
    signed = unsigned - 2 * sum(byte for byte in header if byte > 127)
    if stored not in (unsigned, signed):
        raise ArchiveError("a tar header's checksum is wrong: this is not a tar stream")

    name = header[0:100].split(b"\0", 1)[0]
    if header[257:263] == b"ustar\0":
        # POSIX ustar: a prefix directory for names over 100 bytes.
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return Member(
        name=_text(name),
        kind=header[156:157],
        size=_number(header[124:136], "size"),
        mode=_number(header[100:108], "mode"),
        mtime=_number(header[136:148], "mtime"),
        linkname=_text(header[157:257].split(b"\0", 1)[0]),
    )


def _number(field: bytes, what: str) -> int:
    """A header number: octal digits, or GNU's base-256 for large values."""
    if field[:1] == b"\x80":
        return int.from_bytes(field[1:], "big")
    digits = field.replace(b"\0", b" ").strip()
    if digits.strip(b"01234567"):
        raise ArchiveError(f"a tar header's {what} is not an octal number")
    return int(digits, 8) if digits else 0


def _parse_pax_records(data: bytes) -> dict[str, str]:
    """The records of a pax extended header: "<length> <keyword>=<value>\\n"."""
    records = {}
    position = 0
    while position < len(data):
        space = data.find(b" ", position)
        length_text = data[position:space] if space > position else b""
        if not length_text.isdigit():
            raise ArchiveError("a pax extended header is malformed")
        end = position + int(length_text)
        record = data[space + 1 : end]
        if end > len(data) or end <= space or not record.endswith(b"\n"):
            raise ArchiveError("a pax extended header is malformed")
        keyword, equals, value = record[:-1].partition(b"=")
        if not equals:
            raise ArchiveError("a pax extended header is malformed")
        records[_text(keyword)] = _text(value)
        position = end
    return records


def _apply_overrides(member: Member, overrides: dict[str, str]) -> None:
    if "path" in overrides:
        member.name = overrides["path"]
    if "linkpath" in overrides:
        member.linkname = overrides["linkpath"]
    if "size" in overrides:
        if not overrides["size"].isdigit():
            raise ArchiveError("a pax size is not a number")
        member.size = int(overrides["size"])
    if "mtime" in overrides:
        seconds = overrides["mtime"].partition(".")[0]
        if seconds.lstrip("-").isdigit():
            member.mtime = int(seconds)


def _checked_target(member: Member, root: str) -> str:
    """Where the member goes, if it stays inside `root`; UnsafeArchive otherwise."""
    try:
        name = relative_member_path(member.name)
    except ValueError as exc:
        raise UnsafeArchive(f"archive member {member.name!r}: {exc}") from exc

    if member.kind in _DEVICES:
        raise UnsafeArchive(f"archive member {member.name!r} is a device file or FIFO")
    if member.kind not in (*_REGULAR, _DIRECTORY, _SYMLINK, _HARDLINK):
        raise ArchiveError(
            f"archive member {member.name!r} has the unsupported type {member.kind!r}"
        )

    # A link already on disk (from this archive or left by a job's step) must
    # neither carry a member's path elsewhere nor be written through.
    target = os.path.join(root, name)
    parent = os.path.dirname(target)
    if _existing_part_is_link(parent, root):
        raise UnsafeArchive(f"archive member {member.name!r} goes through a link")
    if os.path.islink(target):
        raise UnsafeArchive(f"archive member {member.name!r} would replace a link")

    if member.kind == _SYMLINK:
        _check_symlink(member, name, root)
    elif member.kind == _HARDLINK:
        _check_hardlink(member, root)
    return target


def _existing_part_is_link(directory: str, root: str) -> bool:
    """Whether the part of `directory` below `root` that exists holds a link."""
    existing = directory
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    return os.path.realpath(existing) != existing or not _is_inside(existing, root)


def _check_symlink(member: Member, name: str, root: str) -> None:
    link = member.linkname
    if not link or link.startswith("/"):
        raise UnsafeArchive(
            f"archive link {member.name!r} points to the absolute path {link!r}"
        )

    # Checked twice: by its text, and by where it resolves among the links
    # already extracted (which may sit at another depth than their names).
    lexical = os.path.normpath(os.path.join(os.path.dirname(name), link))
    resolved = os.path.realpath(os.path.join(root, os.path.dirname(name), link))
    if lexical == ".." or lexical.startswith("../") or not _is_inside(resolved, root):
        raise UnsafeArchive(
            f"archive link {member.name!r} -> {link!r} points outside the destination"
        )


def _check_hardlink(member: Member, root: str) -> None:
    try:
        link = relative_member_path(member.linkname)
    except ValueError as exc:
        raise UnsafeArchive(f"archive hard link {member.name!r}: {exc}") from exc
    source = os.path.join(root, link)
    if not _is_inside(os.path.realpath(source), root) or not os.path.isfile(source):
        raise UnsafeArchive(
            f"archive hard link {member.name!r} -> {member.linkname!r} does not "
            "name a file extracted before it"
        )


def _extract(reader: _TarReader, member: Member, target: str, root: str) -> None:
    os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)

    if member.kind == _DIRECTORY:
        os.makedirs(target, exist_ok=True)
        os.chmod(target, (member.mode & 0o755) | 0o700)
        return

    if os.path.isdir(target):
        raise ArchiveError(f"archive member {member.name!r} would replace a directory")
    if os.path.lexists(target):
        os.unlink(target)

    if member.kind == _SYMLINK:
        os.symlink(member.linkname, target)
    elif member.kind == _HARDLINK:
        source = os.path.join(root, relative_member_path(member.linkname))
        os.link(source, target, follow_symlinks=False)
    else:
        mode = (member.mode & 0o755) | 0o600
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(target, flags, mode)
        try:
            reader.copy_data(member, fd)
            os.fchmod(fd, mode)
            os.utime(fd, (member.mtime, member.mtime))
        finally:
            os.close(fd)


# --- writing --------------------------------------------------------------------


def write_archive(root: str, paths: list[str], stream: WritableStream) -> list[str]:
    """Write the `root`-relative `paths` as an uncompressed pax tar stream.

    Directories are added with their contents; links are stored as links, never
    followed; FIFOs, sockets and devices are left out. Returns the paths that
    are not inside `root`: absent, or reached only through a link leading out
    of it. Raises ValueError for a path that is absolute or has a '..'.
    """
    real_root = os.path.realpath(root)
    members = [(path, relative_member_path(path)) for path in paths]
    missing = []
    for path, member in members:
        full_path = os.path.join(real_root, member)
        parent = os.path.realpath(os.path.dirname(full_path))
        if not _is_inside(parent, real_root) or not os.path.lexists(full_path):
            missing.append(path)
            continue
        _write_tree(stream, full_path, member)
    stream.write(bytes(2 * BLOCK))
    return missing


def _write_tree(stream: WritableStream, path: str, name: str) -> None:
    status = os.lstat(path)
    kind = status.st_mode & 0o170000
    if kind == 0o040000:  # a directory, then what it holds, in a stable order
        _write_header(stream, name, _DIRECTORY, status, size=0)
        for entry in sorted(os.listdir(path)):
            _write_tree(stream, os.path.join(path, entry), f"{name}/{entry}")
    elif kind == 0o120000:
        _write_header(stream, name, _SYMLINK, status, linkname=os.readlink(path))
    elif kind == 0o100000:
        _write_file(stream, path, name, status)


def _write_file(
    stream: WritableStream, path: str, name: str, status: os.stat_result
) -> None:
    size = status.st_size
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        _write_header(stream, name, _REGULAR[0], status, size=size)
        left = size
        while left:
            chunk = os.read(fd, min(left, _COPY_CHUNK))
            if not chunk:
                raise ArchiveError(f"{name} shrank while it was being archived")
            stream.write(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    stream.write(bytes(_padded(size) - size))


def _write_header(
    stream: WritableStream,
    name: str,
    kind: bytes,
    status: os.stat_result,
    *,
    size: int = 0,
    linkname: str = "",
) -> None:
    if kind == _DIRECTORY:
        name += "/"
    encoded_name = name.encode("utf-8", "surrogateescape")
    encoded_link = linkname.encode("utf-8", "surrogateescape")

    # What does not fit the ustar fields goes into a pax header before it.
    records = {}
    if len(encoded_name) > 100 or not encoded_name.isascii():
        records["path"] = encoded_name
        encoded_name = encoded_name[:100]
    if len(encoded_link) > 100 or not encoded_link.isascii():
        records["linkpath"] = encoded_link
        encoded_link = encoded_link[:100]
    if size > 0o77777777777:
        records["size"] = str(size).encode()
    if records:
        pax = b"".join(_pax_record(key, value) for key, value in records.items())
        stream.write(_header_block(b"././@PaxHeader", _PAX_HEADER, 0o644, len(pax), 0))
        stream.write(pax + bytes(_padded(len(pax)) - len(pax)))

    stream.write(
        _header_block(
            encoded_name,
            kind,
            status.st_mode & 0o7777,
            size if size <= 0o77777777777 else 0,
            int(status.st_mtime),
            encoded_link,
        )
    )


def _header_block(
    name: bytes, kind: bytes, mode: int, size: int, mtime: int, linkname: bytes = b""
) -> bytes:
    header = bytearray(BLOCK)
    header[0 : len(name)] = name
    header[100:108] = b"%07o\0" % mode
    header[108:116] = b"%07o\0" % 0
    header[116:124] = b"%07o\0" % 0
    header[124:136] = b"%011o\0" % size
    header[136:148] = b"%011o\0" % max(0, min(mtime, 0o77777777777))
    header[148:156] = b" " * 8
    header[156:157] = kind
    header[157 : 157 + len(linkname)] = linkname
    header[257:265] = b"ustar\x0000"
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def _pax_record(keyword: str, value: bytes) -> bytes:
    body = b" " + keyword.encode() + b"=" + value + b"\n"
    # The length counts its own digits, which may push it to one digit more.
    length = len(body) + len(str(len(body)))
    if len(str(length)) != len(str(len(body))):
        length += 1
    return str(length).encode() + body


# --- helpers --------------------------------------------------------------------


def _padded(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK * BLOCK


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _is_inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")
