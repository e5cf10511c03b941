"""Redaction: every secret value, and its common encodings, becomes `***`.

A `Redactor` knows the values of a run and the forms they take in output:
raw; base64 and base64url, with and without padding, and the stable middle of
the value's encoding at each of the three alignments it can have inside a
longer base64 stream; hex in both cases; URL-encoding (quote and quote_plus);
JSON string escaping; UTF-16 for printable text. Every occurrence of any form
is found, overlapping ones included, and each run of overlapping occurrences is
replaced by one `***`.

`RedactingStream` does the same for output that arrives in chunks, holding back
just enough of the tail that a value split across chunks is still caught.
`install_log_redaction` puts the redactor on the logging machinery itself: on
the record factory, through which every log record is made, and as a filter on
the root logger's handlers.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterable

MASK = b"***"
MASK_TEXT = MASK.decode()

# Below this many characters the stable middle of an unaligned base64 encoding
# is too short to be told apart from ordinary text, and is not looked for.
MIN_ALIGNED_BASE64 = 8

# A run of overlapping matches that grows past this many bytes in a stream is
# cut there and emitted as masked, so that an endless run of matches cannot hold
# output back without limit.
MAX_HELD_BYTES = 1 << 20

_PERCENT_ESCAPE = re.compile(r"%[0-9A-F]{2}")

_BASE64_ALPHABETS: tuple[Callable[[bytes], bytes], ...] = (
    base64.b64encode,
    base64.urlsafe_b64encode,
)


def encodings(value: bytes) -> set[bytes]:
    """Every form of `value` the redactor looks for, the value itself included."""
    if not value:
        return set()
    forms = {value, binascii.hexlify(value), binascii.hexlify(value).upper()}

    for encode in _BASE64_ALPHABETS:
        padded = encode(value)
        forms.add(padded)
        forms.add(padded.rstrip(b"="))
        for offset in (1, 2):
            middle = _aligned_base64(encode, value, offset)
            if len(middle) >= MIN_ALIGNED_BASE64:
                forms.add(middle)
        # At offset 0 the value's last characters may share bits with whatever
        # follows it in the stream; the stable part ends before them.
        stable = _aligned_base64(encode, value, 0)
        if len(stable) >= MIN_ALIGNED_BASE64:
            forms.add(stable)

    for safe in ("", "/"):
        quoted = urllib.parse.quote(value, safe=safe)
        forms.add(quoted.encode("ascii"))
        forms.add(_PERCENT_ESCAPE.sub(_lower, quoted).encode("ascii"))
        forms.add(urllib.parse.quote_plus(value, safe=safe).encode("ascii"))

    text = value.decode("utf-8", errors="surrogateescape")
    if text.isprintable():
        # What a Windows tool or a UTF-16 file would hold.
        forms.add(text.encode("utf-16-le"))
    for ensure_ascii in (True, False):
        try:
            escaped = json.dumps(text, ensure_ascii=ensure_ascii)[1:-1]
            forms.add(escaped.encode("utf-8", errors="surrogateescape"))
            forms.add(escaped.replace("/", "\\/").encode("utf-8", "surrogateescape"))
        except UnicodeEncodeError:
            continue

    forms.discard(b"")
    return forms


def _lower(match: re.Match[str]) -> str:
    return match.group().lower()


def _aligned_base64(
    encode: Callable[[bytes], bytes], value: bytes, offset: int
) -> bytes:
    """The characters of the base64 of `value`, preceded by `offset` other bytes,
    whose six bits all come from `value` itself.

    Character i of a base64 stream carries bits [6i, 6i+6); the value occupies
    bits [8*offset, 8*(offset+len)). Only the characters inside that range are
    the same whatever bytes surround the value.
    """
    stream = encode(bytes(offset) + value + bytes(3))
    first = -(-8 * offset // 6)
    last = (8 * (offset + len(value))) // 6
    return stream[first:last]


class Redactor:
    """Replaces every known secret value, in any of its encodings, with `***`.

    Values can be added while other threads redact: rotation adds the new value
    and keeps the old one, which may still show up in output.
    """

    def __init__(self, values: Iterable[bytes] = ()) -> None:
        self._lock = threading.Lock()
        self._patterns: tuple[bytes, ...] = ()
        for value in values:
            self.add(value)

    def add(self, value: bytes) -> None:
        with self._lock:
            known = set(self._patterns)
            known |= encodings(value)
            # Longest first: of two forms found at the same place, the longer
            # decides where the masked run ends.
            self._patterns = tuple(sorted(known, key=len, reverse=True))

    @property
    def longest(self) -> int:
        """The length of the longest form looked for; 0 with no values."""
        patterns = self._patterns
        return len(patterns[0]) if patterns else 0

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def spans(self, data: bytes) -> list[tuple[int, int]]:
        """The [start, end) ranges to mask: every occurrence of every form, with
        overlapping occurrences merged (touching ones are kept apart)."""
        found: list[tuple[int, int]] = []
        for pattern in self._patterns:
            start = data.find(pattern)
            while start >= 0:
                found.append((start, start + len(pattern)))
                start = data.find(pattern, start + 1)
        found.sort()

        merged: list[tuple[int, int]] = []
        for start, end in found:
            if merged and start < merged[-1][1]:
                if end > merged[-1][1]:
                    merged[-1] = (merged[-1][0], end)
            else:
                merged.append((start, end))
        return merged

    def redact(self, data: bytes) -> bytes:
        return _mask(data, self.spans(data))

    def redact_text(self, text: str) -> str:
        if not self._patterns:
            return text
        data = text.encode("utf-8", errors="surrogateescape")
        return self.redact(data).decode("utf-8", errors="surrogateescape")


def _mask(data: bytes, spans: list[tuple[int, int]]) -> bytes:
    if not spans:
        return data
    pieces: list[bytes] = []
    position = 0
    for start, end in spans:
        pieces.append(data[position:start])
        pieces.append(MASK)
        position = end
    pieces.append(data[position:])
    return b"".join(pieces)


class RedactingStream:
    """Redacts a stream that arrives in chunks, such as a step's stdout.

    Output is held back only as far as a value could still be completing: the
    last `longest - 1` bytes, or back to the start of a masked run that might
    still grow. The concatenation of everything `feed` and `flush` return is the
    same as redacting the whole stream at once.
    """

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._pending + chunk
        hold = max(self.redactor.longest - 1, 0)
        cut = len(data) - hold
        if cut <= 0:
            self._pending = data
            return b""

        # An occurrence that starts before `cut` is complete in `data`, because
        # no form is longer than `hold + 1`. A merged run that reaches past
        # `cut` could still be extended by an occurrence starting at or after
        # it, so the cut moves back to where that run starts.
        spans = self.redactor.spans(data)
        for start, end in spans:
            if start < cut < end:
                cut = start
                break
        if cut == 0 and len(data) > MAX_HELD_BYTES:
            cut = spans[0][1]

        ready = [(start, end) for start, end in spans if end <= cut]
        self._pending = data[cut:]
        return _mask(data[:cut], ready)

    def flush(self) -> bytes:
        data, self._pending = self._pending, b""
        return self.redactor.redact(data)


class _ActiveRedactors:
    """The redactors of every open secret session in this process, consulted by
    the one record factory and filter installed on logging."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._redactors: list[Redactor] = []
        self._previous_factory: Callable[..., logging.LogRecord] | None = None
        self._filter = RedactionFilter(self)
        self._filtered_handlers: list[logging.Handler] = []
        self._factory: Callable[..., logging.LogRecord] | None = None

    def add(self, redactor: Redactor) -> None:
        with self._lock:
            self._redactors.append(redactor)
            if self._factory is None:
                self._install()
            elif not self._filtered_handlers:
                self._filter_root_handlers()

    def remove(self, redactor: Redactor) -> None:
        with self._lock:
            for index, active in enumerate(self._redactors):
                if active is redactor:
                    del self._redactors[index]
                    break
            if not self._redactors:
                self._uninstall()

    def redact_text(self, text: str) -> str:
        for redactor in list(self._redactors):
            text = redactor.redact_text(text)
        return text

    def _install(self) -> None:
        previous = logging.getLogRecordFactory()
        self._previous_factory = previous

        def make_record(*args: object, **kwargs: object) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            if self._redactors:
                redact_record(record, self.redact_text)
            return record

        logging.setLogRecordFactory(make_record)
        self._factory = make_record
        self._filter_root_handlers()

    def _filter_root_handlers(self) -> None:
        for handler in logging.getLogger().handlers:
            handler.addFilter(self._filter)
            self._filtered_handlers.append(handler)

    def _uninstall(self) -> None:
        # Code that set its own factory on top of ours keeps it, and ours stays
        # beneath it, redacting nothing until a redactor is added again.
        if logging.getLogRecordFactory() is self._factory:
            assert self._previous_factory is not None
            logging.setLogRecordFactory(self._previous_factory)
            self._previous_factory = None
            self._factory = None
        for handler in self._filtered_handlers:
            handler.removeFilter(self._filter)
        self._filtered_handlers = []


def redact_record(record: logging.LogRecord, redact_text: Callable[[str], str]) -> None:
    """Replace a record's message, exception text and stack with redacted text."""
    try:
        message = record.getMessage()
    except Exception:
        # A record whose arguments do not fit its format; logging reports that
        # itself when the record is emitted. Its parts are redacted one by one.
        # logging's own error report prints the message and the arguments.
        message = str(record.msg)
        if isinstance(record.args, dict):
            record.args = {
                key: redact_text(str(arg)) for key, arg in record.args.items()
            }
        elif record.args:
            record.args = tuple(redact_text(str(arg)) for arg in record.args)
    else:
        record.args = None
    record.msg = redact_text(message)
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact_text(record.exc_text)
    if record.stack_info:
        record.stack_info = redact_text(record.stack_info)


class RedactionFilter(logging.Filter):
    """A handler filter that redacts each record it passes; it never drops one."""

    def __init__(self, active: _ActiveRedactors) -> None:
        super().__init__()
        self._active = active

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record, self._active.redact_text)
        return True


_active = _ActiveRedactors()


class LogRedaction:
    """A redactor's place on logging; `remove()` takes it off again."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self._removed = False
        _active.add(redactor)

    def remove(self) -> None:
        if not self._removed:
            self._removed = True
            _active.remove(self.redactor)


def install_log_redaction(redactor: Redactor) -> LogRedaction:
    """Redact every log record made in this process with `redactor` until the
    returned handle's `remove()`."""
    return LogRedaction(redactor)


def remove_log_redaction(handle: LogRedaction) -> None:
    handle.remove()
