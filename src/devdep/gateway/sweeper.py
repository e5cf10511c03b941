"""The sweeper: a background task that ends sessions whose time is up, even
when no client ever comes back to find out."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from devdep.gateway.sessions import SessionService

logger = logging.getLogger(__name__)


class SessionSweeper:
    """Calls `SessionService.sweep` every `interval` seconds until shut down."""

    def __init__(self, service: SessionService, interval: float) -> None:
        self.service = service
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None

    def launch(self) -> None:
        """Start sweeping on the running event loop; the first sweep is now."""
        if self._task is not None:
            raise RuntimeError("the sweeper is running already")
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._run(self._stop), name="session-sweeper"
        )

    async def shutdown(self) -> None:
        """Stop sweeping, letting a sweep in progress finish first."""
        if self._task is None or self._stop is None:
            return
        self._stop.set()
        await self._task
        self._task = None
        self._stop = None

    async def _run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                # The store is synchronous; a sweep must not stall the requests
                # the event loop is serving.
                await asyncio.to_thread(self.service.sweep)
            except Exception:
                # A database hiccup must not end sweeping for good: log it and
                # try again at the next interval.
                logger.exception("session sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
