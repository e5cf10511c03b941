"""The CLI's session cache: the ticket and credential of the last `auth`, in
`$XDG_CACHE_HOME/devdep/session.json` (default `~/.cache/devdep/session.json`).

The credential is a bearer secret, so the file is created with mode 0600 from
the start (never widened then narrowed) in a 0700 directory, and replaced
atomically so a reader never sees half of it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

logger = logging.getLogger(__name__)

CACHE_FILE_MODE = 0o600
CACHE_DIRECTORY_MODE = 0o700


@dataclass(frozen=True)
class CachedSession:
    """What the CLI remembers of its session."""

    gateway: str
    ticket: str
    credential: str
    subject: str
    issuer_name: str
    expires_at: str

    def expires(self) -> datetime:
        return datetime.fromisoformat(self.expires_at)


def cache_path(env: Mapping[str, str] = os.environ) -> Path:
    """Where the session is cached, following the XDG base directory spec."""
    base = env.get("XDG_CACHE_HOME", "")
    # The spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "devdep" / "session.json"


def save_session(session: CachedSession, path: Path) -> None:
    """Write `session` to `path`, readable and writable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=CACHE_DIRECTORY_MODE)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(
        temporary,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
        CACHE_FILE_MODE,
    )
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(asdict(session), handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def load_session(path: Path) -> CachedSession | None:
    """The cached session, or None when there is none or it is unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        session = CachedSession(**data)
        session.expires()
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        logger.warning("ignoring the unreadable session cache %s: %s", path, exc)
        return None
    return session


def clear_session(path: Path) -> bool:
    """Delete the cached session; whether there was one."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        return True
    return False
