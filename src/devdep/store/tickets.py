"""Session tickets, `DEP-<n>`: the name a session is known by to people.

Kept apart from the models so that the CLI can read a ticket without loading
SQLAlchemy.
"""

from __future__ import annotations

import re

TICKET_PREFIX = "DEP-"
_TICKET_PATTERN = re.compile(r"DEP-([1-9][0-9]{0,17})")


def ticket_for(number: int) -> str:
    """The ticket of session `number`, e.g. DEP-42."""
    return f"{TICKET_PREFIX}{number}"


def parse_ticket(ticket: str) -> int | None:
    """The session number in a ticket, or None when `ticket` is not exactly one."""
    match = _TICKET_PATTERN.fullmatch(ticket)
    return int(match.group(1)) if match else None
