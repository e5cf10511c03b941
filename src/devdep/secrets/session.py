"""A run's secrets: resolved once into sealed memfds, watched for rotation, and
given back at the end.

    with SecretSession.open(config.pipeline.secrets, run_id=run_id,
                            run_ttl=runtime.timeout) as session:
        for secret in session.secrets:
            agent.put_secret(secret.name, secret.read())
        session.watch(lambda secret, old, new: agent.put_secret(...))
        ...  # stream output through RedactingStream(session.redactor)

Opening a session marks the process non-dumpable and puts the session's
redactor on logging; closing it stops the watcher, closes every memfd, revokes
the provider's tokens and takes the redactor off logging, in that order: the
watcher may still be reading with the token and writing into the memfds.
"""

from __future__ import annotations

import enum
import logging
import os
import random
import secrets as secrets_module
import threading
from collections.abc import Callable, Mapping
from datetime import timedelta
from types import TracebackType

from devdep.config.schema import SecretMapping, Secrets
from devdep.secrets.errors import SecretsError
from devdep.secrets.local import LocalProvider, LocalSecretStore
from devdep.secrets.memfd import SealedSecret, mark_process_non_dumpable
from devdep.secrets.provider import SecretProvider
from devdep.secrets.redaction import LogRedaction, Redactor, install_log_redaction
from devdep.secrets.vault import VaultProvider

logger = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL = timedelta(seconds=15)
MAX_POLL_INTERVAL = timedelta(minutes=2)
# Below this a value is likely to occur in ordinary output, where redaction will
# mask it too; such a value is most likely a mistake in the mapping.
SHORT_VALUE_BYTES = 4
# The TTL of the token made by `check_mappings`, which revokes it at once anyway.
CHECK_TTL = timedelta(minutes=1)

RotationCallback = Callable[[SealedSecret, int, int], None]


class SessionState(enum.Enum):
    OPEN = "open"
    WATCHING = "watching"
    CLOSED = "closed"


class SecretSession:
    """Everything one run holds of its secrets; a context manager."""

    def __init__(
        self,
        run_id: str,
        provider: SecretProvider | None,
        key_rotation: str,
        redactor: Redactor,
    ) -> None:
        self.run_id = run_id
        self.provider = provider
        self.key_rotation = key_rotation
        self.redactor = redactor
        self.secrets: list[SealedSecret] = []
        self.state = SessionState.OPEN
        self._mappings: dict[str, SecretMapping] = {}
        # A session without secrets has nothing to redact; it leaves logging be.
        self._log_redaction: LogRedaction | None = (
            install_log_redaction(redactor) if provider is not None else None
        )
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._logger = logger.getChild(run_id)

    @classmethod
    def open(
        cls,
        secrets: Secrets | None,
        *,
        run_id: str,
        run_ttl: timedelta,
        oidc_token: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> SecretSession:
        """Resolve every mapping into a SealedSecret.

        Raises a VaultMismatch subclass naming the mapping and the reason when
        any one cannot be resolved; by then whatever was opened (memfds, the
        run's token) has been given back.
        """
        mark_process_non_dumpable()
        if secrets is None or not secrets.mappings:
            return cls(run_id, None, "manual", Redactor())

        environment = os.environ if env is None else env
        provider: SecretProvider
        if secrets.provider == "hashicorp-vault":
            provider = VaultProvider.open(
                secrets,
                run_id=run_id,
                run_ttl=run_ttl,
                oidc_token=oidc_token,
                env=environment,
            )
        else:
            provider = LocalProvider(LocalSecretStore.default(environment))

        session = cls(run_id, provider, secrets.key_rotation, Redactor())
        try:
            for mapping in secrets.mappings:
                fetched = provider.fetch(mapping)
                if len(fetched.value) < SHORT_VALUE_BYTES:
                    session._logger.warning(
                        "secret %s is only %d bytes: every occurrence of those bytes "
                        "in output will be masked",
                        mapping.env,
                        len(fetched.value),
                    )
                session.redactor.add(fetched.value)
                session.secrets.append(
                    SealedSecret(mapping.env, fetched.value, fetched.version)
                )
                session._mappings[mapping.env] = mapping
        except BaseException:
            session.close()
            raise
        session._logger.debug(
            "%d secret(s) resolved: %s",
            len(session.secrets),
            ", ".join(session.names),
        )
        return session

    @property
    def names(self) -> list[str]:
        """The env names of the run's secrets, for summaries; never values."""
        return [secret.name for secret in self.secrets]

    def __enter__(self) -> SecretSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- rotation ------------------------------------------------------------

    def watch(
        self,
        on_rotated: RotationCallback,
        *,
        poll_interval: timedelta = DEFAULT_POLL_INTERVAL,
    ) -> None:
        """With key_rotation: automatic, poll the secrets' versions in a thread
        and call `on_rotated(secret, old_version, new_version)` from that thread
        after a new value has replaced the old one's memfd. With manual, the
        values stay as they were when the session opened."""
        if self.state is not SessionState.OPEN:
            raise RuntimeError(f"watch() needs an open session, not {self.state.value}")
        if self.key_rotation != "automatic" or self.provider is None:
            return
        watched = [secret for secret in self.secrets if secret.version is not None]
        if not watched:
            self._logger.debug("no secret has versions; rotation is not watched")
            return

        self.state = SessionState.WATCHING
        self._watcher = threading.Thread(
            target=self._watch_loop,
            args=(self.provider, watched, on_rotated, poll_interval.total_seconds()),
            name=f"devdep-secrets-{self.run_id}",
            daemon=True,
        )
        self._watcher.start()

    def _watch_loop(
        self,
        provider: SecretProvider,
        watched: list[SealedSecret],
        on_rotated: RotationCallback,
        interval: float,
    ) -> None:
        delay = interval
        failures = 0
        skipped: set[tuple[str, int]] = set()
        while not self._stop.wait(_jittered(delay)):
            try:
                for secret in watched:
                    if self._stop.is_set():
                        return
                    self._check(provider, secret, on_rotated, skipped)
            except SecretsError as error:
                # Backing off spares a Vault that is struggling; the values
                # already delivered stay valid meanwhile.
                failures += 1
                delay = min(interval * 2**failures, MAX_POLL_INTERVAL.total_seconds())
                self._logger.warning(
                    "cannot check secret versions (%s); next check in %.0fs",
                    error.message,
                    delay,
                )
            else:
                failures = 0
                delay = interval

    def _check(
        self,
        provider: SecretProvider,
        secret: SealedSecret,
        on_rotated: RotationCallback,
        skipped: set[tuple[str, int]],
    ) -> None:
        mapping = self._mappings[secret.name]
        old_version = secret.version
        new_version = provider.current_version(mapping)
        if old_version is None or new_version is None or new_version <= old_version:
            return
        if (secret.name, new_version) in skipped:
            return

        try:
            fetched = provider.fetch(mapping, version=new_version)
        except SecretsError as error:
            # A version without the key, or deleted at once: keep the value we
            # have, and say so once for this version.
            skipped.add((secret.name, new_version))
            self._logger.warning(
                "secret %s version %d is not usable, keeping version %d: %s",
                secret.name,
                new_version,
                old_version,
                error.message,
            )
            return

        # The new value joins the redactor before anything can print it.
        self.redactor.add(fetched.value)
        secret.replace(fetched.value, new_version)
        self._logger.info(
            "secret rotated: %s (version %d → %d)",
            secret.name,
            old_version,
            new_version,
        )
        try:
            on_rotated(secret, old_version, new_version)
        except Exception:
            self._logger.exception("delivering rotated secret %s failed", secret.name)

    # --- closing -------------------------------------------------------------

    def close(self) -> None:
        """Stop the watcher, close every memfd, revoke the run's token. Safe to
        call more than once."""
        if self.state is SessionState.CLOSED:
            return
        self._stop.set()
        if self._watcher is not None:
            # A poll in flight finishes within the provider's request timeout.
            self._watcher.join()
            self._watcher = None
        for secret in self.secrets:
            secret.close()
        if self.provider is not None:
            self.provider.close()
        if self._log_redaction is not None:
            self._log_redaction.remove()
            self._log_redaction = None
        self.state = SessionState.CLOSED
        self._logger.debug("secrets closed")


def _jittered(seconds: float) -> float:
    """Spread the polls of many runs so they do not reach Vault in step."""
    return seconds * random.uniform(0.9, 1.1)


def check_mappings(
    secrets: Secrets | None, *, env: Mapping[str, str] | None = None
) -> list[str]:
    """Resolve every mapping as a run would, then give everything back at once;
    returns the env names resolved. For `validate`."""
    run_id = f"validate-{secrets_module.token_hex(5)}"
    with SecretSession.open(
        secrets, run_id=run_id, run_ttl=CHECK_TTL, env=env
    ) as session:
        return session.names
