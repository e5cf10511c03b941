"""The framed, versioned wire protocol between the host and the guest agent.

It needs nothing but an ordered byte stream (virtio-serial today, a vsock
connection tomorrow). Every frame is a 12-byte header and a payload::

    offset  size  field
         0     4  magic        b"DDAP"
         4     1  major        protocol major version
         5     1  minor        protocol minor version
         6     1  type         MessageType
         7     1  flags        reserved: senders write 0, receivers ignore
         8     4  length       payload length, big-endian, at most MAX_PAYLOAD

Control messages (HELLO, REQUEST, REPLY, ERROR, SIDE_REPLY) carry a UTF-8 JSON object;
DATA, STDOUT and STDERR carry raw bytes; DATA_END carries nothing. The
header's magic and version bytes keep their place in every version, so a peer
speaking another major version is recognised and refused rather than misread.
docs/protocol.md describes the conversation.

Errors, all raised from this module's classes::

    AgentError
     ├── AgentProtocolError         the stream broke the protocol; it is unusable
     │    ├── BadMagic
     │    ├── ProtocolVersionMismatch
     │    ├── FrameTooLarge
     │    ├── TruncatedFrame
     │    ├── UnknownMessageType
     │    └── MalformedMessage
     ├── AgentDisconnected          the peer closed the stream between two frames
     ├── AgentTimeout               the peer said nothing for too long
     ├── AgentRequestFailed         the agent refused or failed one request; the
     │                              connection is still good
     └── ArchiveError               a tar stream could not be read
          └── UnsafeArchive         a member would land outside its destination,
                                    or is a device file

The module is imported by the agent at every guest boot, where Python runs
under emulation, so it imports only `struct` and json's C accelerator at run
time (see `_json_codec`); message types are plain ints rather than an enum,
whose import (with functools and collections) costs the guest a tenth of a
second.
"""

from __future__ import annotations

import struct

# Assigned here rather than imported from `typing`: importing typing costs more
# than the rest of this module at guest start. mypy recognises the name.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

MAGIC = b"DDAP"
PROTOCOL_MAJOR = 1
# 1.1 added side requests (SIDE_REPLY): a put_secret while a step runs.
PROTOCOL_MINOR = 1
PROTOCOL_VERSION = f"{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}"

HEADER = struct.Struct(">4sBBBBI")
HEADER_SIZE = HEADER.size

# The largest payload a frame may carry. A receiver refuses a bigger length from
# the header alone, before it reads or allocates anything for the payload.
MAX_PAYLOAD = 1024 * 1024

# The size of the DATA, STDOUT and STDERR chunks both sides send.
CHUNK_SIZE = 64 * 1024

# The largest secret value put_secret accepts (it travels base64 in JSON).
MAX_SECRET_BYTES = 512 * 1024

# Side requests: a REQUEST carrying an integer "side" may be sent while a step
# runs (or at any time), and is answered by one SIDE_REPLY {"side": id, "ok":
# true} or {"side": id, "ok": false, "kind": ..., "message": ...}, never by
# REPLY or ERROR, so it cannot be mistaken for the answer to the request in
# flight. Only these operations may be side requests.
SIDE_OPERATIONS = frozenset({"put_secret"})
SIDE_REQUESTS_SINCE_MINOR = 1


class MessageType:
    """What a frame carries, and who sends it: the header's type byte."""

    HELLO = 1  # agent -> host, JSON: the handshake, sent once per connection
    REQUEST = 2  # host -> agent, JSON: {"op": ..., ...}
    REPLY = 3  # agent -> host, JSON: the request succeeded, with its results
    ERROR = 4  # agent -> host, JSON: {"kind": ..., "message": ...}
    DATA = 5  # either way, raw: one chunk of a tar stream
    DATA_END = 6  # either way, empty: the tar stream is complete
    STDOUT = 7  # agent -> host, raw: a chunk of a step's standard output
    STDERR = 8  # agent -> host, raw: a chunk of a step's standard error
    SIDE_REPLY = 9  # agent -> host, JSON: the answer to a side request (1.1)


JSON_TYPES = frozenset(
    {
        MessageType.HELLO,
        MessageType.REQUEST,
        MessageType.REPLY,
        MessageType.ERROR,
        MessageType.SIDE_REPLY,
    }
)
MESSAGE_NAMES = {
    code: name for name, code in vars(MessageType).items() if name.isupper()
}
MESSAGE_TYPES = tuple(MESSAGE_NAMES)


def message_name(message_type: int) -> str:
    """The name of a message type, for messages and logs."""
    return MESSAGE_NAMES.get(message_type, f"type {message_type}")


# The kinds of ERROR reply the agent sends (AgentRequestFailed.kind).
ERROR_INVALID_REQUEST = "invalid_request"  # malformed or unknown request
ERROR_UNSAFE_ARCHIVE = "unsafe_archive"  # a workspace member would escape
ERROR_BAD_ARCHIVE = "bad_archive"  # the workspace tar stream is not a tar
ERROR_STEP_NOT_STARTED = "step_not_started"  # /bin/sh could not be started
ERROR_AGENT_FAILURE = "agent_failure"  # an unexpected failure inside the agent


class AgentError(Exception):
    """The root of every error raised about the guest agent and its protocol."""


class AgentProtocolError(AgentError):
    """The byte stream broke the protocol; the connection can no longer be used."""


class BadMagic(AgentProtocolError):
    """A frame did not start with the protocol's magic bytes."""


class ProtocolVersionMismatch(AgentProtocolError):
    """The peer speaks another major version of the protocol."""

    def __init__(self, message: str, *, peer_version: str) -> None:
        super().__init__(message)
        self.peer_version = peer_version


class FrameTooLarge(AgentProtocolError):
    """A frame declared (or a sender tried) a payload larger than MAX_PAYLOAD."""


class TruncatedFrame(AgentProtocolError):
    """The stream ended in the middle of a frame."""


class UnknownMessageType(AgentProtocolError):
    """A frame's type is not one this version of the protocol defines."""


class MalformedMessage(AgentProtocolError):
    """A frame was well formed but its content was not what the protocol says."""


class AgentDisconnected(AgentError):
    """The peer closed the stream between two frames (the VM or agent went away)."""


class AgentTimeout(AgentError):
    """The peer did not answer within the time allowed."""


class AgentRequestFailed(AgentError):
    """The agent refused or failed a request; `kind` is one of the ERROR_* kinds."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{message} ({kind})")
        self.kind = kind
        self.message = message


class ArchiveError(AgentError):
    """A tar stream of a workspace or of artifacts could not be read."""


class UnsafeArchive(ArchiveError):
    """A tar member would land outside its destination, or is a device file."""


class Frame:
    """One decoded frame: its type, its payload and its header flags."""

    __slots__ = ("flags", "payload", "type")

    def __init__(self, type: int, payload: bytes = b"", flags: int = 0) -> None:
        self.type = type
        self.payload = payload
        self.flags = flags

    @property
    def name(self) -> str:
        return message_name(self.type)

    def json(self) -> dict[str, Any]:
        """The payload of a control message, as a JSON object."""
        if self.type not in JSON_TYPES:
            raise MalformedMessage(f"a {self.name} frame carries no JSON")
        try:
            message = _json_loads(self.payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise MalformedMessage(
                f"the {self.name} frame is not valid UTF-8 JSON: {exc}"
            ) from exc
        if not isinstance(message, dict):
            raise MalformedMessage(f"the {self.name} frame is not a JSON object")
        return message

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frame):
            return NotImplemented
        return (self.type, self.payload, self.flags) == (
            other.type,
            other.payload,
            other.flags,
        )

    def __hash__(self) -> int:
        return hash((self.type, self.payload, self.flags))

    def __repr__(self) -> str:
        # Never the payload: it may hold a secret or a step's output.
        return f"Frame({self.name}, {len(self.payload)} bytes)"


class AgentHello:
    """What the agent says about itself when a connection opens."""

    __slots__ = ("agent_version", "boot_id", "kernel_release", "protocol_version")

    def __init__(
        self,
        protocol_version: str,
        agent_version: str,
        kernel_release: str,
        boot_id: str,
    ) -> None:
        self.protocol_version = protocol_version
        self.agent_version = agent_version
        self.kernel_release = kernel_release
        self.boot_id = boot_id

    def to_json(self) -> dict[str, str]:
        return {
            "protocol_version": self.protocol_version,
            "agent_version": self.agent_version,
            "kernel_release": self.kernel_release,
            "boot_id": self.boot_id,
        }

    @classmethod
    def from_json(cls, message: dict[str, Any]) -> AgentHello:
        """Read a HELLO, refusing one from another major version of the protocol."""
        fields = {}
        for name in ("protocol_version", "agent_version", "kernel_release", "boot_id"):
            value = message.get(name)
            if not isinstance(value, str):
                raise MalformedMessage(f"the HELLO has no string field {name!r}")
            fields[name] = value
        check_version(fields["protocol_version"])
        return cls(**fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AgentHello):
            return NotImplemented
        return self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(tuple(self.to_json().values()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value!r}" for key, value in self.to_json().items())
        return f"AgentHello({fields})"


def check_version(peer_version: str) -> None:
    """Accept a "MAJOR.MINOR" version of the same major as ours, refuse any other."""
    major, dot, minor = peer_version.partition(".")
    if not (major.isdigit() and dot and minor.isdigit()):
        raise MalformedMessage(f"{peer_version!r} is not a protocol version")
    if int(major) != PROTOCOL_MAJOR:
        raise ProtocolVersionMismatch(
            f"the peer speaks protocol {peer_version}, this side speaks "
            f"{PROTOCOL_VERSION}; the major versions must match",
            peer_version=peer_version,
        )


def supports_side_requests(peer_version: str) -> bool:
    """Whether a peer of this (already checked) version answers side requests."""
    _, _, minor = peer_version.partition(".")
    return minor.isdigit() and int(minor) >= SIDE_REQUESTS_SINCE_MINOR


def encode_frame(type: int, payload: bytes = b"", flags: int = 0) -> bytes:
    """One frame, ready to write to the stream."""
    if len(payload) > MAX_PAYLOAD:
        raise FrameTooLarge(
            f"a {message_name(type)} payload of {len(payload)} bytes is over the "
            f"{MAX_PAYLOAD}-byte limit"
        )
    header = HEADER.pack(
        MAGIC, PROTOCOL_MAJOR, PROTOCOL_MINOR, type, flags, len(payload)
    )
    return header + payload


def encode_json(type: int, message: dict[str, Any]) -> bytes:
    """One control frame holding `message` as compact UTF-8 JSON."""
    payload = _json_dumps(message).encode("utf-8")
    return encode_frame(type, payload)


def _parse_header(header: bytes | bytearray) -> tuple[int, int, int]:
    """The type, flags and payload length of a frame, or the protocol error."""
    magic, major, minor, type_code, flags, length = HEADER.unpack_from(header)
    if magic != MAGIC:
        raise BadMagic(f"a frame starts with {bytes(magic)!r}, not {MAGIC!r}")
    if major != PROTOCOL_MAJOR:
        raise ProtocolVersionMismatch(
            f"a frame is of protocol {major}.{minor}, this side speaks "
            f"{PROTOCOL_VERSION}; the major versions must match",
            peer_version=f"{major}.{minor}",
        )
    if type_code not in MESSAGE_NAMES:
        raise UnknownMessageType(f"frame type {type_code} is not defined")
    if length > MAX_PAYLOAD:
        raise FrameTooLarge(
            f"a frame declares a {length}-byte payload, over the "
            f"{MAX_PAYLOAD}-byte limit"
        )
    return type_code, flags, length


class FrameDecoder:
    """Turns the bytes of a stream, fed in pieces of any size, into frames.

    A header is checked as soon as its 12 bytes have arrived, so a bad or
    oversize frame is refused before its payload is read. After an error the
    decoder stays failed: the stream has lost its framing for good.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._header: tuple[int, int, int] | None = None
        self._failure: AgentProtocolError | None = None

    @property
    def pending(self) -> int:
        """How many bytes of an incomplete frame are buffered."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes from the stream; return the frames they complete."""
        if self._failure is not None:
            raise self._failure
        self._buffer += data
        frames: list[Frame] = []
        try:
            while True:
                frame = self._next_frame()
                if frame is None:
                    return frames
                frames.append(frame)
        except AgentProtocolError as exc:
            self._failure = exc
            raise

    def close(self) -> None:
        """Declare the end of the stream; a frame left half-received is an error."""
        if self._buffer:
            raise TruncatedFrame(
                f"the stream ended {len(self._buffer)} bytes into a frame"
            )

    def _next_frame(self) -> Frame | None:
        if self._header is None:
            if len(self._buffer) < HEADER_SIZE:
                return None
            self._header = _parse_header(self._buffer)
        message_type, flags, length = self._header
        end = HEADER_SIZE + length
        if len(self._buffer) < end:
            return None
        payload = bytes(self._buffer[HEADER_SIZE:end])
        del self._buffer[:end]
        self._header = None
        return Frame(message_type, payload, flags)


class FrameReader:
    """Reads whole frames from a blocking `recv(size) -> bytes` (b"" at the end)."""

    def __init__(self, recv: Callable[[int], bytes]) -> None:
        self._recv = recv
        self._decoder = FrameDecoder()
        self._ready: list[Frame] = []

    def read_frame(self) -> Frame:
        """The next frame; AgentDisconnected or TruncatedFrame at the stream's end."""
        while not self._ready:
            data = self._recv(CHUNK_SIZE)
            if not data:
                self._decoder.close()
                raise AgentDisconnected("the peer closed the connection")
            self._ready.extend(self._decoder.feed(data))
        return self._ready.pop(0)

    @property
    def has_frame(self) -> bool:
        """Whether a whole frame is already buffered, so reading it will not block."""
        return bool(self._ready)


def is_env_name(name: str) -> bool:
    """Whether `name` can be an environment variable: [A-Za-z_][A-Za-z0-9_]*."""
    return (
        0 < len(name) <= 128
        and name.isascii()
        and not name[0].isdigit()
        and name.replace("_", "a").isalnum()
    )


class _ScannerSettings:
    """What json's C scanner reads from its context: strict JSON, plain types."""

    def __init__(self) -> None:
        self.strict = True
        self.object_hook = None
        self.object_pairs_hook = None
        self.parse_float = float
        self.parse_int = int
        self.parse_constant = _refuse_constant


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _refuse_type(value: object) -> None:
    raise TypeError(f"a {type(value).__name__} cannot be sent as JSON")


def _json_codec() -> tuple[Callable[[Any], str], Callable[[str], Any]]:
    """Functions that encode and decode JSON exactly as `json` does.

    `import json` compiles the regular expressions of its pure-Python fallback
    (and imports `re` to do it), which under emulation costs the guest a
    quarter of a second before it can say HELLO. CPython's `_json` is the C
    code `json` itself runs; used directly it needs none of that. Where it is
    missing or its interface has changed, this falls back to `json`. The unit
    tests check that both give the same results.
    """
    try:
        import _json

        scanner = _json.make_scanner(_ScannerSettings())  # type: ignore[arg-type]
        encoder = _json.make_encoder(
            None,  # markers: no check for cycles, as messages are trees
            _refuse_type,  # default: for values JSON has no type for
            _json.encode_basestring_ascii,  # how strings are written
            None,  # indent
            ":",  # key separator
            ",",  # item separator
            False,  # sort_keys
            False,  # skipkeys
            False,  # allow_nan: NaN and Infinity are not JSON
        )
        encoder({"probe": [1, "é", None]}, 0)
        scanner('{"probe": [1]}', 0)
    except (ImportError, AttributeError, TypeError, ValueError):
        return _stdlib_json_codec()

    def dumps(value: Any) -> str:
        return "".join(encoder(value, 0))

    def loads(text: str) -> Any:
        start = len(text) - len(text.lstrip(_JSON_WHITESPACE))
        try:
            value, end = scanner(text, start)
        except StopIteration as exc:
            raise ValueError("no JSON value where one was expected") from exc
        if text[end:].strip(_JSON_WHITESPACE):
            raise ValueError("extra data after the JSON value")
        return value

    return dumps, loads


def _stdlib_json_codec() -> tuple[Callable[[Any], str], Callable[[str], Any]]:
    import json

    def dumps(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)

    def loads(text: str) -> Any:
        return json.loads(text, parse_constant=_refuse_constant)

    return dumps, loads


_JSON_WHITESPACE = " \t\n\r"
_json_dumps, _json_loads = _json_codec()
