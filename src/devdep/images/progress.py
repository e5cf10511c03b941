"""How builders report their long steps, without knowing who displays them.

The CLI passes a rich progress display; tests and library callers pass nothing
and get `SilentProgress`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol


class BuildProgress(Protocol):
    def step(self, description: str) -> contextlib.AbstractContextManager[None]:
        """A context for one long step, shown while it runs."""
        ...

    def note(self, message: str) -> None:
        """One line of news, such as 'kernel 6.1.0-57-amd64 already built'."""
        ...


class SilentProgress:
    @contextlib.contextmanager
    def step(self, description: str) -> Iterator[None]:
        yield

    def note(self, message: str) -> None:
        pass
