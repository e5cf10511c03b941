"""Which build of devdep this is: its version, protocol and git commit."""

from __future__ import annotations

import functools
import re
import subprocess
from importlib import resources
from pathlib import Path

from devdep import PROTOCOL_VERSION, __version__

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@functools.cache
def build_commit() -> str:
    """The first 8 hex digits of the commit devdep was built from, or "unknown".

    A wheel carries the commit in `_build_commit.txt`, written by the build hook.
    A source checkout (the editable install of `make test`) asks git, so the
    answer follows the checkout rather than the moment it was installed.
    """
    source_dir = Path(__file__).resolve().parent
    try:
        completed = subprocess.run(
            ["git", "-C", str(source_dir), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        commit = completed.stdout.strip()
        if completed.returncode == 0 and _COMMIT.match(commit):
            return commit[:8]
    except (OSError, subprocess.SubprocessError):
        pass

    try:
        recorded = resources.files("devdep").joinpath("_build_commit.txt").read_text()
    except (OSError, ValueError):
        return "unknown"
    recorded = recorded.strip()
    return recorded[:8] if _COMMIT.match(recorded) else "unknown"


def version_line() -> str:
    return (
        f"DEVELOPMENT DEPLOYER CLI v{__version__} (protocol v{PROTOCOL_VERSION}) "
        f"[commit: {build_commit()}]"
    )
