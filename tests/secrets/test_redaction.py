"""Redaction of secret values and their encodings, in whole texts, in streams
split anywhere, and in logs."""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import os
import urllib.parse
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devdep.secrets.redaction import (
    MASK,
    RedactingStream,
    Redactor,
    encodings,
    install_log_redaction,
)
from tests.secrets.conftest import canary
from tests.secrets.leaks import leak_forms

# Values never contain the mask's '*', so that a masked output cannot spell a
# value again by accident.
values = st.binary(min_size=4, max_size=48).filter(lambda v: b"*" not in v)
text = st.binary(max_size=64).map(lambda b: b.replace(b"*", b""))


def stream_in_chunks(redactor: Redactor, data: bytes, cuts: list[int]) -> bytes:
    stream = RedactingStream(redactor)
    pieces: list[bytes] = []
    previous = 0
    for cut in sorted(set(cuts)):
        pieces.append(stream.feed(data[previous:cut]))
        previous = cut
    pieces.append(stream.feed(data[previous:]))
    pieces.append(stream.flush())
    return b"".join(pieces)


def whole_forms(value: bytes) -> dict[str, bytes]:
    """The leak scanner's forms that stand alone; its base64 fragments are cut
    from a longer stream, which the in-stream test below builds for real."""
    return {
        name: form
        for name, form in leak_forms(value).items()
        if not name.startswith("base64 (offset")
    }


@pytest.mark.parametrize("form", sorted(whole_forms(b"x" * 32)))
def test_every_encoding_of_the_canary_is_masked(form: str) -> None:
    value = canary()
    encoded = whole_forms(value)[form]
    redactor = Redactor([value])

    redacted = redactor.redact(b"before " + encoded + b" after")

    assert encoded not in redacted
    assert MASK in redacted
    assert redacted.startswith(b"before ")
    assert redacted.endswith(b" after")


def test_the_named_encodings_are_all_masked() -> None:
    value = b'p@ss/w\xc3\xb6rd "quoted" & more+stuff'
    redactor = Redactor([value])
    forms = [
        value,
        base64.b64encode(value),
        base64.b64encode(value).rstrip(b"="),
        base64.urlsafe_b64encode(value),
        base64.urlsafe_b64encode(value).rstrip(b"="),
        binascii.hexlify(value),
        binascii.hexlify(value).upper(),
        urllib.parse.quote(value).encode(),
        urllib.parse.quote(value, safe="").encode(),
        urllib.parse.quote_plus(value).encode(),
        json.dumps(value.decode()).encode()[1:-1],
        json.dumps(value.decode(), ensure_ascii=False).encode()[1:-1],
    ]
    for form in forms:
        assert redactor.redact(b"<" + form + b">") == b"<***>", form


# The machine is shared and slow at times: no per-example deadline.
@settings(deadline=None)
@given(value=values, prefix=st.binary(max_size=5), suffix=st.binary(max_size=5))
def test_the_value_inside_a_longer_base64_stream_is_masked(
    value: bytes, prefix: bytes, suffix: bytes
) -> None:
    redactor = Redactor([value])
    stream = base64.b64encode(prefix + value + suffix)

    redacted = redactor.redact(stream)

    # The characters carrying only the value's bits: all of them must be gone,
    # whatever the value's alignment in the stream.
    first = -(-8 * len(prefix) // 6)
    last = 8 * (len(prefix) + len(value)) // 6
    core = stream[first:last]
    if len(core) >= 8:
        assert MASK in redacted
        assert len(redacted) <= len(stream) - len(core) + len(MASK)
        for start in range(len(core) - 5):
            assert core[start : start + 6] not in redacted.replace(MASK, b"\0")


@settings(deadline=None)
@given(value=values, before=text, after=text, data=st.data())
def test_no_encoding_survives_in_any_context(
    value: bytes, before: bytes, after: bytes, data: st.DataObject
) -> None:
    form = data.draw(st.sampled_from(sorted(encodings(value))))
    redacted = Redactor([value]).redact(before + form + after)
    for other in encodings(value):
        assert other not in redacted


@settings(max_examples=300, deadline=None)
@given(
    value=values,
    before=text,
    after=text,
    data=st.data(),
)
def test_a_stream_split_anywhere_redacts_like_the_whole(
    value: bytes, before: bytes, after: bytes, data: st.DataObject
) -> None:
    form = data.draw(st.sampled_from(sorted(encodings(value))))
    whole = before + form + after + form
    cuts = data.draw(st.lists(st.integers(0, len(whole)), max_size=8))
    redactor = Redactor([value])

    streamed = stream_in_chunks(redactor, whole, cuts)

    assert streamed == redactor.redact(whole)
    assert form not in streamed


def test_the_canary_split_at_every_position_is_caught() -> None:
    value = canary()
    redactor = Redactor([value])
    for name, form in whole_forms(value).items():
        whole = b"line one\n" + form + b"\nline two\n"
        for cut in range(len(whole) + 1):
            streamed = stream_in_chunks(redactor, whole, [cut])
            assert form not in streamed, (name, cut)
            assert streamed == redactor.redact(whole)


def test_a_stream_fed_one_byte_at_a_time() -> None:
    value = canary()
    redactor = Redactor([value])
    whole = b"x" * 10 + base64.b64encode(value) + b"y" * 10 + value.hex().encode()
    streamed = stream_in_chunks(redactor, whole, list(range(len(whole))))
    assert streamed == b"x" * 10 + MASK + b"y" * 10 + MASK


def test_a_stream_holds_back_only_what_could_still_be_a_value() -> None:
    redactor = Redactor([b"a-secret-value"])
    stream = RedactingStream(redactor)
    output = stream.feed(b"plain output that is long enough to pass\n")
    assert output.startswith(b"plain output")
    assert len(output) >= len(b"plain output that is long enough to pass\n") - (
        redactor.longest - 1
    )
    assert output + stream.flush() == b"plain output that is long enough to pass\n"


def test_overlapping_values_are_masked_as_one_run() -> None:
    redactor = Redactor([b"abcdef", b"defghi"])
    assert redactor.redact(b"[abcdefghi]") == b"[***]"
    # Touching occurrences stay two masks, the same in a stream as in a whole.
    assert redactor.redact(b"[abcdefdefghi]") == b"[******]"


def test_add_redacts_a_rotated_value_and_keeps_the_old_one() -> None:
    redactor = Redactor([b"old-value-1"])
    stream = RedactingStream(redactor)
    head = stream.feed(b"old-value-1 and new-val")
    redactor.add(b"new-value-2")
    tail = stream.feed(b"ue-2 done") + stream.flush()
    assert head + tail == b"*** and *** done"


def test_an_empty_redactor_changes_nothing() -> None:
    redactor = Redactor()
    assert not redactor
    assert redactor.redact(b"anything") == b"anything"
    stream = RedactingStream(redactor)
    assert stream.feed(b"abc") == b"abc"
    assert stream.flush() == b""


# --- logging ---------------------------------------------------------------


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("devdep.tests.redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield buffer
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def test_log_records_are_redacted_whatever_handler_they_reach(
    log_stream: io.StringIO,
) -> None:
    value = os.urandom(12).hex()
    logger = logging.getLogger("devdep.tests.redaction")
    handle = install_log_redaction(Redactor([value.encode()]))
    try:
        logger.info("plain %s", value)
        logger.info("as base64: %s", base64.b64encode(value.encode()).decode())
        logger.info("mapping %(v)s", {"v": value})
        try:
            raise RuntimeError(f"failed with {value}")
        except RuntimeError:
            logger.exception("boom")
    finally:
        handle.remove()
    logger.info("after removal %s", value)

    lines = log_stream.getvalue()
    redacted, after = lines.split("after removal")
    assert value not in redacted
    assert base64.b64encode(value.encode()).decode() not in redacted
    assert redacted.count("***") == 4
    assert value in after  # the control: removal really removes it


def test_a_record_made_without_the_factory_is_redacted_by_the_root_filter() -> None:
    value = os.urandom(12).hex()
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    root = logging.getLogger()
    root.addHandler(handler)
    handle = install_log_redaction(Redactor([value.encode()]))
    try:
        record = logging.makeLogRecord({"msg": "made by hand: %s", "args": (value,)})
        handler.handle(record)
    finally:
        handle.remove()
        root.removeHandler(handler)
    assert buffer.getvalue() == "made by hand: ***\n"
    assert not handler.filters


def test_two_sessions_redact_together_and_leave_one_by_one(
    log_stream: io.StringIO,
) -> None:
    logger = logging.getLogger("devdep.tests.redaction")
    first = install_log_redaction(Redactor([b"first-secret"]))
    second = install_log_redaction(Redactor([b"second-secret"]))
    logger.info("first-secret second-secret")
    first.remove()
    logger.info("first-secret second-secret")
    second.remove()
    assert log_stream.getvalue().splitlines() == [
        "INFO *** ***",
        "INFO first-secret ***",
    ]
