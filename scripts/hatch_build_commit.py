"""Hatch build hook: records the git commit a wheel is built from, for `devdep-cli
version`."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        completed = subprocess.run(
            ["git", "-C", self.root, "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        )
        commit = completed.stdout.strip() if completed.returncode == 0 else "unknown"
        target = Path(self.root) / "src" / "devdep" / "_build_commit.txt"
        target.write_text(commit + "\n")
        build_data["force_include"][str(target)] = "devdep/_build_commit.txt"
