"""Credentials, the termination hook registry, and the sweeper task."""

from __future__ import annotations

import asyncio
import hashlib
import threading

from devdep.gateway.credentials import (
    hash_credential,
    looks_like_credential,
    new_credential,
)
from devdep.gateway.hooks import TerminationHooks
from devdep.gateway.sweeper import SessionSweeper


def test_credentials_are_random_and_hashed_with_sha256() -> None:
    credentials = {new_credential() for _ in range(100)}

    assert len(credentials) == 100
    for credential in credentials:
        assert len(credential) == 43
        assert looks_like_credential(credential)
        assert hash_credential(credential) == (
            hashlib.sha256(credential.encode()).hexdigest()
        )
        assert credential not in hash_credential(credential)


def test_only_credential_shaped_strings_are_looked_up() -> None:
    for value in ("", "short", "A" * 42, "A" * 44, "A" * 42 + "=", "é" * 43):
        assert not looks_like_credential(value)


def test_hooks_are_called_until_unsubscribed() -> None:
    hooks = TerminationHooks()
    seen: list[str] = []
    unsubscribe = hooks.subscribe(seen.append)

    hooks.on_session_expired("DEP-1")
    unsubscribe()
    unsubscribe()
    hooks.on_session_expired("DEP-2")

    assert seen == ["DEP-1"]


class CountingService:
    """Stands in for SessionService: counts sweeps, failing the first."""

    def __init__(self) -> None:
        self.sweeps = 0
        self.swept = threading.Event()

    def sweep(self) -> list[str]:
        self.sweeps += 1
        if self.sweeps == 1:
            raise RuntimeError("the database is away")
        self.swept.set()
        return []


def test_the_sweeper_sweeps_again_after_a_failure_and_stops_cleanly() -> None:
    service = CountingService()

    async def scenario() -> None:
        sweeper = SessionSweeper(service, interval=0.01)  # type: ignore[arg-type]
        sweeper.launch()
        await asyncio.wait_for(asyncio.to_thread(service.swept.wait), 10)
        await sweeper.shutdown()
        count = service.sweeps
        await asyncio.sleep(0.05)
        assert service.sweeps == count

    asyncio.run(scenario())
    assert service.sweeps >= 2
