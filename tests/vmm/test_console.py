"""The bounded console buffer a guest writes into."""

from __future__ import annotations

import os

import pytest

from devdep.vmm.console import PipeReader, RingBuffer


def test_the_buffer_keeps_only_the_last_bytes() -> None:
    buffer = RingBuffer(capacity=10)
    buffer.write(b"0123456789")
    buffer.write(b"abcd")
    assert buffer.getvalue() == b"456789abcd"
    assert buffer.dropped == 4


def test_a_chunk_larger_than_the_buffer_keeps_its_end() -> None:
    buffer = RingBuffer(capacity=4)
    buffer.write(b"x" * 100 + b"tail")
    assert buffer.getvalue() == b"tail"


def test_the_tail_is_the_last_lines_made_printable() -> None:
    buffer = RingBuffer()
    buffer.write(b"one\r\ntwo\n\x1b[31mred\x1b[0m\nlast")
    assert buffer.tail(2) == ["?[31mred?[0m", "last"]
    assert buffer.tail(0) == []


def test_invalid_utf8_does_not_break_the_tail() -> None:
    buffer = RingBuffer()
    buffer.write(b"ok\n\xff\xfe\n")
    assert buffer.tail(5)[0] == "ok"


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RingBuffer(capacity=0)


def test_the_reader_copies_a_pipe_until_eof() -> None:
    read_end, write_end = os.pipe()
    buffer = RingBuffer(capacity=1024)
    reader = PipeReader(read_end, buffer, "test-reader")
    reader.start()
    os.write(write_end, b"x" * 5000)
    os.close(write_end)
    reader.join(timeout=5)
    assert buffer.getvalue() == b"x" * 1024
    assert buffer.dropped == 5000 - 1024
