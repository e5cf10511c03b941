"""The session's lifecycle and its rotation watch, with the local provider and
with a provider double at the provider seam (the Vault side is in test_vault)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from devdep.config.schema import SecretMapping, Secrets
from devdep.secrets import LocalSecretStore, SecretPathMissing, SecretSession
from devdep.secrets.memfd import SealedSecret
from devdep.secrets.provider import FetchedSecret
from devdep.secrets.redaction import Redactor
from devdep.secrets.session import SessionState


def watcher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("devdep-secrets-")]


def test_local_rotation_is_seen_and_the_watcher_ends_with_the_session(
    tmp_path: Path,
) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "c"), "XDG_DATA_HOME": str(tmp_path / "d")}
    store = LocalSecretStore.default(env)
    store.set("prod/db/password", b"first value")
    secrets = Secrets.model_validate(
        {
            "provider": "local",
            "key_rotation": "automatic",
            "mappings": [{"env": "DB_PASSKEY", "source": "prod/db/password"}],
        }
    )
    seen: list[tuple[int, int, bytes]] = []
    rotated = threading.Event()

    def on_rotated(secret: SealedSecret, old: int, new: int) -> None:
        seen.append((old, new, secret.read()))
        rotated.set()

    session = SecretSession.open(
        secrets, run_id="r-00000000c1", run_ttl=timedelta(minutes=1), env=env
    )
    session.watch(on_rotated, poll_interval=timedelta(seconds=0.05))
    assert session.state is SessionState.WATCHING
    store.set("prod/db/password", b"second value")
    assert rotated.wait(10)
    session.close()

    assert seen == [(1, 2, b"second value")]
    assert session.state is SessionState.CLOSED
    assert session.secrets[0].closed
    assert watcher_threads() == []
    session.close()  # a second close is harmless


class FailingProvider:
    """Answers the first fetch, then fails every version check."""

    def __init__(self) -> None:
        self.checks = 0
        self.closed = False

    def fetch(
        self, mapping: SecretMapping, version: int | None = None
    ) -> FetchedSecret:
        return FetchedSecret(b"a value", 1)

    def current_version(self, mapping: SecretMapping) -> int | None:
        self.checks += 1
        raise SecretPathMissing([mapping], "gone for the test")

    def close(self) -> None:
        self.closed = True


def test_failed_checks_back_off(caplog: pytest.LogCaptureFixture) -> None:
    provider = FailingProvider()
    mapping = SecretMapping(env="DB_PASSKEY", source="prod/db/password")
    session = SecretSession("r-00000000c2", provider, "automatic", Redactor())
    session.secrets.append(SealedSecret("DB_PASSKEY", b"a value", 1))
    session._mappings["DB_PASSKEY"] = mapping

    session.watch(lambda *args: None, poll_interval=timedelta(seconds=0.05))
    time.sleep(1.2)
    session.close()

    # Without backoff about 24 checks fit in 1.2 s; doubling from 0.05 s, 4 or 5.
    assert 2 <= provider.checks <= 6
    assert provider.closed
    delays = [
        r.getMessage()
        for r in caplog.records
        if "cannot check secret versions" in r.message
    ]
    assert "next check in 0s" in delays[0] and len(delays) == provider.checks
    assert watcher_threads() == []


def test_an_empty_session_holds_nothing_and_leaves_logging_alone() -> None:
    factory = logging.getLogRecordFactory()
    with SecretSession.open(
        None, run_id="r-00000000c3", run_ttl=timedelta(minutes=1)
    ) as session:
        assert session.secrets == [] and session.names == []
        assert logging.getLogRecordFactory() is factory
        session.watch(lambda *args: None)
    assert watcher_threads() == []
