"""The secrets of one run, as the host agent sees them: resolved before a VM
boots, handed to its guest over the agent channel, rotated into the running
guest, and kept out of everything the host shows or stores.

    run_secrets = RunSecrets(config.pipeline.secrets, run_id)
    run_secrets.preflight(runtime_count)       # log redaction on; 201 early
    run_secrets.open(runtime.name, run_ttl)    # pre_bootstrap, before boot
    run_secrets.deliver(agent)                 # run_command, before anything else
    streams = run_secrets.output_streams()     # per step
    run_secrets.close_session()                # post_teardown, after the VM died
    run_secrets.redact_error(error); run_secrets.scrub(summary)
    run_secrets.close()                        # after the summary is written

Each runtime gets its own `SecretSession` (its own child token, revoked when its
VM is gone). The run keeps one `Redactor` of every value any runtime received,
rotated ones included, which is on logging from preflight until the summary is
written: a value delivered to the first VM must stay masked in the lines the
run writes after that VM has gone.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from devdep.config.schema import Secrets
from devdep.errors import DevdepError
from devdep.guest.client import AgentClient
from devdep.secrets import (
    LogRedaction,
    RedactingStream,
    Redactor,
    SealedSecret,
    SecretSession,
    check_mappings,
    install_log_redaction,
)
from devdep.secrets.session import DEFAULT_POLL_INTERVAL

logger = logging.getLogger(__name__)

# The rotation poll interval, in seconds; for tuning, and for tests that cannot
# wait the default 15 s.
POLL_INTERVAL_VARIABLE = "DEVDEP_SECRETS_POLL_INTERVAL"
# The shortest TTL the run's token may be given: a token of 0 s would be
# Vault's default TTL, not none.
MIN_TOKEN_TTL = timedelta(seconds=5)


class OutputStreams:
    """One `RedactingStream` per output stream of a step, so that a value split
    across two chunks of the same stream is still caught."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._streams: dict[str, RedactingStream] = {}

    def feed(self, stream: str, chunk: bytes) -> bytes:
        redacting = self._streams.get(stream)
        if redacting is None:
            redacting = self._streams[stream] = RedactingStream(self._redactor)
        return redacting.feed(chunk)

    def flush(self) -> Iterator[tuple[str, bytes]]:
        """What each stream still holds back, once the step has ended."""
        for stream, redacting in self._streams.items():
            rest = redacting.flush()
            if rest:
                yield stream, rest


class RunSecrets:
    """Everything of one run that touches its secrets."""

    def __init__(
        self,
        secrets: Secrets | None,
        run_id: str,
        *,
        note: Callable[[str], None] = lambda _line: None,
    ) -> None:
        """`note(line)` adds a line to the run's own log (rotations)."""
        self.config = secrets
        self.run_id = run_id
        self._note = note
        self.redactor = Redactor()
        self.names: list[str] = []
        self.session: SecretSession | None = None
        self._log_redaction: LogRedaction | None = None
        self._agent: AgentClient | None = None
        self._agent_lock = threading.Lock()

    @property
    def mapped(self) -> bool:
        return self.config is not None and bool(self.config.mappings)

    def preflight(self, runtime_count: int) -> None:
        """Put the run's redactor on logging; with more than one runtime, also
        resolve every mapping once now, so that a mapping that cannot be
        resolved stops the run before any VM boots (exit 201)."""
        if not self.mapped:
            return
        if self._log_redaction is None:
            self._log_redaction = install_log_redaction(self.redactor)
        if runtime_count > 1:
            check_mappings(self.config)

    def open(self, runtime: str, run_ttl: timedelta) -> None:
        """pre_bootstrap: resolve every mapping for one runtime's VM."""
        self.close_session()
        if not self.mapped:
            return
        if self._log_redaction is None:
            self._log_redaction = install_log_redaction(self.redactor)
        session = SecretSession.open(
            self.config,
            run_id=f"{self.run_id}-{runtime}",
            run_ttl=max(run_ttl, MIN_TOKEN_TTL),
            oidc_token=None,
        )
        self.session = session
        for secret in session.secrets:
            self.redactor.add(secret.read())
            if secret.name not in self.names:
                self.names.append(secret.name)
        logger.info(
            "runtime %s: %d secret(s) resolved: %s",
            runtime,
            len(session.secrets),
            ", ".join(session.names),
        )

    def deliver(self, agent: AgentClient) -> None:
        """run_command, before the workspace: every value to the guest's ramfs,
        then, with key_rotation: automatic, watch for new versions."""
        session = self.session
        if session is None:
            return
        for secret in session.secrets:
            agent.put_secret(secret.name, secret.read())
        with self._agent_lock:
            self._agent = agent
        session.watch(self._rotated, poll_interval=_poll_interval())

    def _rotated(
        self, secret: SealedSecret, old_version: int, new_version: int
    ) -> None:
        """Called by the session's watcher thread, possibly mid-step: the
        client sends the value as a side request the step's reader answers."""
        value = secret.read()
        # Before the guest has it, so that no output can show it unmasked.
        self.redactor.add(value)
        with self._agent_lock:
            agent = self._agent
        if agent is None:
            return
        agent.put_secret(secret.name, value)
        self._note(
            f"secret rotated: {secret.name} (version {old_version} → {new_version})"
        )

    def output_streams(self) -> OutputStreams:
        return OutputStreams(self.redactor)

    def close_session(self) -> None:
        """post_teardown, once the VM is dead: stop the watcher, close every
        memfd, revoke the runtime's token."""
        with self._agent_lock:
            self._agent = None
        session, self.session = self.session, None
        if session is not None:
            session.close()

    # --- what the host shows and stores -----------------------------------------

    def redact_text(self, text: str) -> str:
        return self.redactor.redact_text(text)

    def redact_error(self, error: BaseException) -> None:
        """Mask values in an error's message, hint and details (a guest
        console's last lines, for one) before it is shown or stored."""
        if not self.redactor or not isinstance(error, DevdepError):
            return
        error.message = self.redact_text(error.message)
        if error.hint is not None:
            error.hint = self.redact_text(error.hint)
        error.details = [self.redact_text(line) for line in error.details]
        error.args = tuple(
            self.redact_text(arg) if isinstance(arg, str) else arg for arg in error.args
        )

    def scrub(self, record: Any) -> None:
        """Mask values in every string of a dataclass record (the run summary),
        in place, nested records and lists included."""
        if not self.redactor:
            return
        _scrub_dataclass(record, self.redact_text)

    def close(self) -> None:
        """The end of the run, after its summary is written."""
        self.close_session()
        if self._log_redaction is not None:
            self._log_redaction.remove()
            self._log_redaction = None


def _scrub_dataclass(record: Any, redact: Callable[[str], str]) -> None:
    """Scrub a mutable dataclass in place (the summary and its records)."""
    for field in dataclasses.fields(record):
        setattr(record, field.name, _scrubbed(getattr(record, field.name), redact))


def _scrubbed(value: Any, redact: Callable[[str], str]) -> Any:
    """`value` with every string in it redacted; a frozen dataclass is copied."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list | tuple):
        items = [_scrubbed(item, redact) for item in value]
        if hasattr(value, "_fields"):  # a named tuple
            return type(value)(*items)
        return type(value)(items)
    if isinstance(value, dict):
        return {key: _scrubbed(item, redact) for key, item in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if not value.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            _scrub_dataclass(value, redact)
            return value
        changes = {
            field.name: _scrubbed(getattr(value, field.name), redact)
            for field in dataclasses.fields(value)
            if field.init
        }
        return dataclasses.replace(value, **changes)
    return value


def _poll_interval() -> timedelta:
    configured = os.environ.get(POLL_INTERVAL_VARIABLE)
    if not configured:
        return DEFAULT_POLL_INTERVAL
    try:
        seconds = float(configured)
    except ValueError:
        logger.warning(
            "%s=%r is not a number of seconds; using %ss",
            POLL_INTERVAL_VARIABLE,
            configured,
            DEFAULT_POLL_INTERVAL.total_seconds(),
        )
        return DEFAULT_POLL_INTERVAL
    return timedelta(seconds=max(seconds, 0.5))
