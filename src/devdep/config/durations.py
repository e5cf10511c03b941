"""Durations as people write them in devdep.yaml and on the command line: 90s,
10m, 1h30m."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
MAX_DURATION = timedelta(hours=24)


def parse_duration(value: object) -> timedelta:
    """Parse `1h30m`, `10m`, `45s` or `500ms`; a timedelta passes through.

    A bare number is refused: `timeout: 10` could mean seconds or minutes, and
    guessing wrong kills a build or keeps a VM alive for hours.
    """
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a duration with a unit, such as 90s, 10m or 1h30m")

    text = value.strip().lower()
    position, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        total += int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if not text or position != len(text):
        raise ValueError(
            f"{value!r} is not a duration; write a number with a unit (ms, s, m, h), "
            "such as 90s, 10m or 1h30m"
        )

    duration = timedelta(seconds=total)
    if duration <= timedelta(0):
        raise ValueError("must be longer than zero")
    if duration > MAX_DURATION:
        raise ValueError("must be at most 24h")
    return duration


def format_duration(duration: timedelta) -> str:
    """The shortest exact spelling of `duration`, the inverse of parse_duration."""
    milliseconds = round(duration.total_seconds() * 1000)
    if milliseconds % 1000:
        return f"{milliseconds}ms"
    seconds = milliseconds // 1000
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = [(hours, "h"), (minutes, "m"), (seconds, "s")]
    return "".join(f"{amount}{unit}" for amount, unit in parts if amount) or "0s"
