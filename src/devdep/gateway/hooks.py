"""The termination hook: how the components that own a session's resources
learn that the session has ended.

A component subscribes a callable taking the ticket; the gateway calls
`on_session_expired(ticket)` once per session, when the sweeper or a request
finds it expired, and also when it is revoked, since a revoked session's VMs
must die just the same.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

SessionHook = Callable[[str], None]


class TerminationHooks:
    """A registry of callables run when a session ends."""

    def __init__(self) -> None:
        self._hooks: list[SessionHook] = []
        self._lock = threading.Lock()

    def subscribe(self, hook: SessionHook) -> Callable[[], None]:
        """Call `hook(ticket)` for every session that ends from now on; returns
        a function that unsubscribes it."""
        with self._lock:
            self._hooks.append(hook)

        def unsubscribe() -> None:
            with self._lock:
                if hook in self._hooks:
                    self._hooks.remove(hook)

        return unsubscribe

    def on_session_expired(self, ticket: str) -> None:
        """Run every hook for `ticket`; one hook failing does not stop the others."""
        with self._lock:
            hooks = list(self._hooks)
        logger.info(
            "session %s ended; running %d termination hook(s)", ticket, len(hooks)
        )
        for hook in hooks:
            try:
                hook(ticket)
            except Exception:
                logger.exception("termination hook %r failed for %s", hook, ticket)
