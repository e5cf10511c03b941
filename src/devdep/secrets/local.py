"""The `local` secret provider: values encrypted at rest on this machine.

For machines without Vault. Each value is sealed with AES-256-GCM under a key
kept apart from the values:

    $XDG_CONFIG_HOME/devdep/secrets.key     32 random bytes, mode 0600
    $XDG_DATA_HOME/devdep/secrets.store     JSON of nonces and ciphertexts, 0600

A stolen store is useless without the key, and a stolen key without the store.
The associated data of each ciphertext is its name and version, so entries
cannot be swapped or rolled back within the file unnoticed. The names in the
store are the `source` of the mappings that use them, such as
`prod/database/api-user/password`.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from devdep.config.schema import SecretMapping
from devdep.secrets.errors import LocalStoreError, SecretPathMissing
from devdep.secrets.provider import FetchedSecret

logger = logging.getLogger(__name__)

KEY_FILE_NAME = "secrets.key"
STORE_FILE_NAME = "secrets.store"
STORE_FORMAT = 1
KEY_BYTES = 32
NONCE_BYTES = 12
MAX_NAME_LENGTH = 256

_NAME = re.compile(r"^[^\s/][^\s]*$")


def _xdg_dir(env: Mapping[str, str], variable: str, fallback: str) -> Path:
    value = env.get(variable, "")
    # The XDG spec says a relative path in these variables is invalid.
    if value and Path(value).is_absolute():
        return Path(value)
    return Path.home() / fallback


def default_key_path(env: Mapping[str, str] = os.environ) -> Path:
    return _xdg_dir(env, "XDG_CONFIG_HOME", ".config") / "devdep" / KEY_FILE_NAME


def default_store_path(env: Mapping[str, str] = os.environ) -> Path:
    return _xdg_dir(env, "XDG_DATA_HOME", ".local/share") / "devdep" / STORE_FILE_NAME


def check_name(name: str) -> str:
    """A store name: no whitespace, not starting with '/', at most 256 chars."""
    if not _NAME.match(name) or len(name) > MAX_NAME_LENGTH or name.endswith("/"):
        raise LocalStoreError(
            f"{name!r} is not a secret name",
            hint="use the mapping's source, such as prod/database/api-user/password",
        )
    return name


@dataclass(frozen=True)
class StoredSecret:
    value: bytes
    version: int


class LocalSecretStore:
    """The encrypted store of local secrets; every write replaces the file
    atomically, under an exclusive lock."""

    def __init__(self, key_path: Path, store_path: Path) -> None:
        self.key_path = key_path
        self.store_path = store_path

    @classmethod
    def default(cls, env: Mapping[str, str] = os.environ) -> LocalSecretStore:
        return cls(default_key_path(env), default_store_path(env))

    def set(self, name: str, value: bytes) -> int:
        """Store `value` under `name`; returns its new version (1 for a new name)."""
        with self._file_errors():
            check_name(name)
            if not value:
                raise LocalStoreError(
                    f"the value for {name} is empty; nothing was stored"
                )
            cipher = AESGCM(self._key(create=True))
            with self._locked():
                entries = self._read_entries()
                version = int(entries.get(name, {}).get("version", 0)) + 1
                nonce = os.urandom(NONCE_BYTES)
                ciphertext = cipher.encrypt(
                    nonce, value, _associated_data(name, version)
                )
                entries[name] = {
                    "version": version,
                    "nonce": base64.b64encode(nonce).decode("ascii"),
                    "ciphertext": base64.b64encode(ciphertext).decode("ascii"),
                }
                self._write_entries(entries)
            logger.debug("local secret %s stored (version %d)", name, version)
            return version

    def get(self, name: str) -> StoredSecret | None:
        with self._file_errors():
            entry = self._read_entries().get(name)
            if entry is None:
                return None
            cipher = AESGCM(self._key(create=False))
            try:
                version = int(entry["version"])
                value = cipher.decrypt(
                    base64.b64decode(entry["nonce"]),
                    base64.b64decode(entry["ciphertext"]),
                    _associated_data(name, version),
                )
            except (InvalidTag, KeyError, ValueError, TypeError) as exc:
                raise LocalStoreError(
                    f"local secret {name} cannot be decrypted: the store or its key "
                    f"was changed",
                    hint=f"set it again with 'devdep-cli secrets set {name}'",
                ) from exc
            return StoredSecret(value, version)

    def version(self, name: str) -> int | None:
        with self._file_errors():
            entry = self._read_entries().get(name)
            return None if entry is None else int(entry["version"])

    def names(self) -> list[str]:
        with self._file_errors():
            return sorted(self._read_entries())

    def remove(self, name: str) -> bool:
        with self._file_errors():
            with self._locked():
                entries = self._read_entries()
                if entries.pop(name, None) is None:
                    return False
                self._write_entries(entries)
            logger.debug("local secret %s removed", name)
            return True

    @contextlib.contextmanager
    def _file_errors(self) -> Iterator[None]:
        """An unreadable or unwritable file is the user's to fix: say which."""
        try:
            yield
        except OSError as exc:
            where = exc.filename or self.store_path
            raise LocalStoreError(
                f"cannot use the local secret store: {where}: {exc.strerror or exc}"
            ) from exc

    # --- the key -------------------------------------------------------------

    def _key(self, *, create: bool) -> bytes:
        try:
            return self._read_key()
        except FileNotFoundError:
            if not create:
                raise LocalStoreError(
                    f"the local store's key {self.key_path} is missing, so its "
                    f"values cannot be decrypted",
                    hint="set the secrets again with 'devdep-cli secrets set'",
                ) from None
        self._create_key()
        return self._read_key()

    def _read_key(self) -> bytes:
        descriptor = os.open(self.key_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(descriptor, "rb") as handle:
            _check_private(self.key_path, os.fstat(handle.fileno()))
            key = handle.read()
        if len(key) != KEY_BYTES:
            raise LocalStoreError(
                f"{self.key_path} is not a devdep key ({len(key)} bytes, not "
                f"{KEY_BYTES})"
            )
        return key

    def _create_key(self) -> None:
        """Create the key file with its content in one step.

        The key is written to a private temporary file made with O_EXCL and mode
        0600, then hard-linked into place: the link fails if another process
        made the key first, and no reader ever sees a key file that is empty,
        half written, or briefly open to others.
        """
        _private_directory(self.key_path.parent)
        temporary = self.key_path.with_name(
            f".{self.key_path.name}.{secrets.token_hex(8)}"
        )
        descriptor = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
        )
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(os.urandom(KEY_BYTES))
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(temporary, self.key_path)
                logger.info("created the local secret key %s", self.key_path)
        finally:
            temporary.unlink(missing_ok=True)

    # --- the store file ------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        _private_directory(self.store_path.parent)
        lock_path = self.store_path.with_name(self.store_path.name + ".lock")
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)

    def _read_entries(self) -> dict[str, dict[str, Any]]:
        try:
            descriptor = os.open(
                self.store_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
            )
        except FileNotFoundError:
            return {}
        with os.fdopen(descriptor, "rb") as handle:
            _check_private(self.store_path, os.fstat(handle.fileno()))
            raw = handle.read()
        try:
            document = json.loads(raw)
            if document.get("format") != STORE_FORMAT:
                raise ValueError(f"unknown format {document.get('format')!r}")
            entries: dict[str, dict[str, Any]] = dict(document["secrets"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LocalStoreError(
                f"{self.store_path} is not a devdep secret store: {exc}"
            ) from exc
        return entries

    def _write_entries(self, entries: dict[str, dict[str, Any]]) -> None:
        document = {"format": STORE_FORMAT, "secrets": entries}
        temporary = self.store_path.with_name(
            f".{self.store_path.name}.{secrets.token_hex(8)}"
        )
        descriptor = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
        )
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(json.dumps(document, indent=1, sort_keys=True).encode())
                handle.flush()
                os.fsync(handle.fileno())
            temporary.replace(self.store_path)
        finally:
            temporary.unlink(missing_ok=True)
        _fsync_directory(self.store_path.parent)


def _associated_data(name: str, version: int) -> bytes:
    return f"devdep-local-secret\0{name}\0{version}".encode()


def _private_directory(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)


def _check_private(path: Path, status: os.stat_result) -> None:
    if not stat.S_ISREG(status.st_mode):
        raise LocalStoreError(f"{path} is not a regular file")
    if status.st_uid != os.geteuid():
        raise LocalStoreError(
            f"{path} belongs to uid {status.st_uid}, not to this user",
            hint="the local store and its key must belong to the user running devdep",
        )
    if status.st_mode & 0o077:
        raise LocalStoreError(
            f"{path} is open to other users (mode {stat.S_IMODE(status.st_mode):04o})",
            hint=f"run 'chmod 600 {path}', and treat the values in it as exposed",
        )


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class LocalProvider:
    """Resolves mappings from the local store: a mapping's `source` is its name."""

    def __init__(self, store: LocalSecretStore) -> None:
        self.store = store

    def fetch(
        self, mapping: SecretMapping, version: int | None = None
    ) -> FetchedSecret:
        stored = self._get(mapping)
        if version is not None and stored.version != version:
            raise SecretPathMissing(
                [mapping],
                f"the local store holds version {stored.version} of {mapping.source}, "
                f"not {version}",
            )
        return FetchedSecret(stored.value, stored.version)

    def current_version(self, mapping: SecretMapping) -> int | None:
        return self._get_version(mapping)

    def close(self) -> None:
        pass

    def _get(self, mapping: SecretMapping) -> StoredSecret:
        try:
            stored = self.store.get(mapping.source)
        except LocalStoreError as exc:
            raise SecretPathMissing([mapping], exc.message, hint=exc.hint) from exc
        if stored is None:
            raise SecretPathMissing(
                [mapping],
                f"the local store {self.store.store_path} has no secret named "
                f"{mapping.source}",
                hint=f"store it with 'devdep-cli secrets set {mapping.source}'",
            )
        return stored

    def _get_version(self, mapping: SecretMapping) -> int | None:
        try:
            return self.store.version(mapping.source)
        except LocalStoreError as exc:
            raise SecretPathMissing([mapping], exc.message, hint=exc.hint) from exc
