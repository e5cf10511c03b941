"""The agent protocol's framing: round trips, and every way a stream can be bad."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devdep.guest import protocol
from devdep.guest.protocol import (
    HEADER,
    HEADER_SIZE,
    JSON_TYPES,
    MAGIC,
    MAX_PAYLOAD,
    MESSAGE_TYPES,
    PROTOCOL_MAJOR,
    PROTOCOL_MINOR,
    AgentDisconnected,
    AgentError,
    AgentHello,
    AgentProtocolError,
    BadMagic,
    Frame,
    FrameDecoder,
    FrameReader,
    FrameTooLarge,
    MalformedMessage,
    MessageType,
    ProtocolVersionMismatch,
    TruncatedFrame,
    UnknownMessageType,
    check_version,
    encode_frame,
    encode_json,
    is_env_name,
)


def header(
    message_type: int = MessageType.DATA,
    length: int = 0,
    *,
    magic: bytes = MAGIC,
    major: int = PROTOCOL_MAJOR,
    minor: int = PROTOCOL_MINOR,
    flags: int = 0,
) -> bytes:
    return HEADER.pack(magic, major, minor, message_type, flags, length)


def test_header_layout_is_twelve_bytes_big_endian() -> None:
    frame = encode_frame(MessageType.STDOUT, b"hi")

    assert HEADER_SIZE == 12
    assert frame == b"DDAP" + bytes([1, 1, 7, 0]) + struct.pack(">I", 2) + b"hi"


@pytest.mark.parametrize("message_type", list(MESSAGE_TYPES))
def test_every_message_type_round_trips(message_type: int) -> None:
    payload = b"" if message_type is MessageType.DATA_END else b"\x00payload\xff"

    frames = FrameDecoder().feed(encode_frame(message_type, payload))

    assert frames == [Frame(message_type, payload)]


def test_json_messages_round_trip() -> None:
    message = {"op": "run_step", "command": "echo é", "env": {"A": "1"}}

    [frame] = FrameDecoder().feed(encode_json(MessageType.REQUEST, message))

    assert frame.type == MessageType.REQUEST
    assert frame.json() == message


def test_frames_split_byte_by_byte_decode_the_same() -> None:
    stream = b"".join(
        [
            encode_json(MessageType.HELLO, {"protocol_version": "1.0"}),
            encode_frame(MessageType.DATA, b"x" * 1000),
            encode_frame(MessageType.DATA_END),
        ]
    )
    decoder = FrameDecoder()

    frames = [frame for byte in stream for frame in decoder.feed(bytes([byte]))]

    assert [frame.type for frame in frames] == [
        MessageType.HELLO,
        MessageType.DATA,
        MessageType.DATA_END,
    ]
    assert frames[1].payload == b"x" * 1000
    decoder.close()


def test_a_truncated_frame_is_reported_at_the_end_of_the_stream() -> None:
    decoder = FrameDecoder()
    data = encode_frame(MessageType.DATA, b"0123456789")

    assert decoder.feed(data[:-3]) == []
    with pytest.raises(TruncatedFrame, match="into a frame"):
        decoder.close()


def test_a_truncated_header_is_reported_too() -> None:
    decoder = FrameDecoder()
    decoder.feed(MAGIC + b"\x01")

    with pytest.raises(TruncatedFrame):
        decoder.close()


def test_a_reader_reports_truncation_and_clean_ends_apart() -> None:
    truncated = [encode_frame(MessageType.DATA, b"abcdef")[:-2], b""]
    clean = [encode_frame(MessageType.DATA, b"abcdef"), b""]

    with pytest.raises(TruncatedFrame):
        FrameReader(lambda _size: truncated.pop(0)).read_frame()

    reader = FrameReader(lambda _size: clean.pop(0))
    assert reader.read_frame().payload == b"abcdef"
    with pytest.raises(AgentDisconnected):
        reader.read_frame()


def test_an_oversize_frame_is_refused_from_its_header_alone() -> None:
    # Only the 12 header bytes exist: had the decoder tried to read or
    # allocate the declared 4 GiB, it could not have answered this way.
    decoder = FrameDecoder()

    with pytest.raises(FrameTooLarge, match="4294967295-byte payload"):
        decoder.feed(header(MessageType.DATA, 0xFFFFFFFF))


def test_a_reader_refuses_an_oversize_frame_before_reading_its_payload() -> None:
    reads = [header(MessageType.DATA, MAX_PAYLOAD + 1)]

    def recv(_size: int) -> bytes:
        if not reads:
            raise AssertionError("the reader asked for the payload")
        return reads.pop(0)

    with pytest.raises(FrameTooLarge):
        FrameReader(recv).read_frame()


def test_the_largest_allowed_frame_passes() -> None:
    payload = b"\x01" * MAX_PAYLOAD

    [frame] = FrameDecoder().feed(encode_frame(MessageType.DATA, payload))

    assert len(frame.payload) == MAX_PAYLOAD


def test_an_oversize_frame_is_refused_on_sending() -> None:
    with pytest.raises(FrameTooLarge):
        encode_frame(MessageType.DATA, b"\x00" * (MAX_PAYLOAD + 1))


def test_bad_magic_is_refused() -> None:
    with pytest.raises(BadMagic, match="HTTP"):
        FrameDecoder().feed(b"HTTP/1.1 200 OK\r\n")


def test_another_major_version_is_refused_from_the_header() -> None:
    with pytest.raises(ProtocolVersionMismatch) as caught:
        FrameDecoder().feed(header(MessageType.HELLO, 0, major=PROTOCOL_MAJOR + 1))

    assert caught.value.peer_version == f"{PROTOCOL_MAJOR + 1}.{PROTOCOL_MINOR}"


def test_another_minor_version_is_accepted() -> None:
    frames = FrameDecoder().feed(header(MessageType.DATA_END, 0, minor=9))

    assert frames == [Frame(MessageType.DATA_END)]


def test_unknown_flags_are_ignored() -> None:
    [frame] = FrameDecoder().feed(header(MessageType.DATA_END, 0, flags=0x80))

    assert frame.type == MessageType.DATA_END


def test_an_unknown_message_type_is_refused() -> None:
    with pytest.raises(UnknownMessageType, match="99"):
        FrameDecoder().feed(header(99, 0))


def test_a_failed_decoder_stays_failed() -> None:
    decoder = FrameDecoder()
    with pytest.raises(BadMagic):
        decoder.feed(b"XXXXXXXXXXXXXXXX")

    with pytest.raises(BadMagic):
        decoder.feed(encode_frame(MessageType.DATA_END))


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xfe", b"not json", b"[1, 2]", b"", b"[" * 100_000],
)
def test_malformed_json_is_a_protocol_error(payload: bytes) -> None:
    [frame] = FrameDecoder().feed(encode_frame(MessageType.REPLY, payload))

    with pytest.raises(MalformedMessage):
        frame.json()


def test_a_data_frame_has_no_json() -> None:
    with pytest.raises(MalformedMessage):
        Frame(MessageType.DATA, b"{}").json()


def test_hello_round_trips_and_checks_the_major_version() -> None:
    hello = AgentHello("1.3", "4.2.0", "6.1.0-28-amd64", "b0a1")

    assert AgentHello.from_json(json.loads(json.dumps(hello.to_json()))) == hello

    with pytest.raises(ProtocolVersionMismatch):
        AgentHello.from_json({**hello.to_json(), "protocol_version": "2.0"})
    with pytest.raises(MalformedMessage):
        AgentHello.from_json({**hello.to_json(), "boot_id": None})


@pytest.mark.parametrize("version", ["1", "one.two", "1.x", "", ".1"])
def test_versions_that_are_not_major_dot_minor_are_malformed(version: str) -> None:
    with pytest.raises(MalformedMessage):
        check_version(version)


def test_protocol_errors_share_one_root() -> None:
    for error in (
        BadMagic,
        ProtocolVersionMismatch,
        FrameTooLarge,
        TruncatedFrame,
        UnknownMessageType,
        MalformedMessage,
    ):
        assert issubclass(error, AgentProtocolError)
    assert issubclass(AgentProtocolError, AgentError)
    assert issubclass(AgentDisconnected, AgentError)


def test_a_frame_never_shows_its_payload() -> None:
    assert "hunter2" not in repr(Frame(MessageType.REQUEST, b'{"value":"hunter2"}'))


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("API_TOKEN", True),
        ("_x1", True),
        ("a", True),
        ("1ABC", False),
        ("", False),
        ("A-B", False),
        ("A=B", False),
        ("ÄPI", False),
        ("A" * 129, False),
    ],
)
def test_environment_variable_names(name: str, valid: bool) -> None:
    assert is_env_name(name) is valid


@given(st.binary(max_size=4096))
def test_any_bytes_give_frames_or_a_protocol_error(data: bytes) -> None:
    decoder = FrameDecoder()
    try:
        frames = decoder.feed(data)
        for frame in frames:
            if frame.type in JSON_TYPES:
                frame.json()
        decoder.close()
    except AgentProtocolError:
        pass


@given(
    st.lists(
        st.tuples(st.sampled_from(list(MESSAGE_TYPES)), st.binary(max_size=300)),
        max_size=8,
    ),
    st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=20),
)
def test_any_frames_survive_any_split(
    messages: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(encode_frame(kind, payload) for kind, payload in messages)
    decoder = FrameDecoder()
    frames: list[Frame] = []
    position = 0
    for index in range(len(stream)):
        size = cuts[index % len(cuts)]
        frames.extend(decoder.feed(stream[position : position + size]))
        position += size
        if position >= len(stream):
            break

    decoder.close()
    assert frames == [Frame(kind, payload) for kind, payload in messages]


@given(st.binary(min_size=1, max_size=64), st.binary(max_size=64))
def test_a_valid_frame_with_garbage_after_it_never_crashes(
    payload: bytes, garbage: bytes
) -> None:
    decoder = FrameDecoder()
    try:
        frames = decoder.feed(encode_frame(MessageType.DATA, payload) + garbage)
    except AgentProtocolError:
        return
    assert frames[0] == Frame(MessageType.DATA, payload)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


def test_the_guest_uses_jsons_c_code_on_this_python() -> None:
    assert protocol._json_dumps.__qualname__ == "_json_codec.<locals>.dumps"


CODECS = {
    "C": (protocol._json_dumps, protocol._json_loads),
    "stdlib": protocol._stdlib_json_codec(),
}


@pytest.mark.parametrize("codec", list(CODECS))
@given(value=json_values)
def test_the_json_codec_encodes_as_json_does(codec: str, value: object) -> None:
    dumps, loads = CODECS[codec]

    encoded = dumps(value)

    assert encoded == json.dumps(value, separators=(",", ":"))
    assert loads(encoded) == json.loads(encoded)


def refuse_constant(name: str) -> None:
    raise ValueError(name)


@pytest.mark.parametrize("codec", list(CODECS))
@given(text=st.text(max_size=200))
def test_the_json_codec_decodes_as_json_does(codec: str, text: str) -> None:
    _, loads = CODECS[codec]
    # As strict JSON: NaN and Infinity are not numbers there.
    try:
        expected = json.loads(text, parse_constant=refuse_constant)
    except ValueError:
        with pytest.raises(ValueError):
            loads(text)
        return
    assert loads(text) == expected


@pytest.mark.parametrize("codec", list(CODECS))
@pytest.mark.parametrize(
    "text", ['{"a": 1} x', "NaN", '{"a": Infinity}', "", "  ", '"\x01"', "[1,]"]
)
def test_the_json_codec_refuses_what_strict_json_refuses(codec: str, text: str) -> None:
    with pytest.raises(ValueError):
        CODECS[codec][1](text)


@pytest.mark.parametrize("codec", list(CODECS))
def test_the_json_codec_refuses_to_send_nan_or_unknown_types(codec: str) -> None:
    dumps = CODECS[codec][0]

    with pytest.raises(ValueError):
        dumps({"x": float("nan")})
    with pytest.raises(TypeError):
        dumps({"x": b"bytes"})
