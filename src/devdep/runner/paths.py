"""Where a host agent keeps its state, and how runs are named.

As root the state lives in /var/lib/devdep; otherwise in $XDG_STATE_HOME/devdep
(~/.local/state/devdep). DEVDEP_STATE_DIR overrides both. Inside it:

    runs/<run-id>/        the run's directory: sockets, overlays; removed at teardown
    reports/<run-id>.json the run summary, kept
    reports/<run-id>.log  the run's log, kept
    host/                 per-host caches (the acceleration decision, image digests)
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

RUN_ID_PATTERN = re.compile(r"^r-[0-9a-f]{10}$")


def state_dir() -> Path:
    override = os.environ.get("DEVDEP_STATE_DIR")
    if override:
        return Path(override)
    if os.geteuid() == 0:
        return Path("/var/lib/devdep")
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "devdep"


def runs_dir(state: Path) -> Path:
    return state / "runs"


def reports_dir(state: Path) -> Path:
    return state / "reports"


def host_dir(state: Path) -> Path:
    return state / "host"


def new_run_id() -> str:
    """`r-` and 10 hex digits: 40 random bits, safe in file and socket names."""
    return f"r-{secrets.token_hex(5)}"
