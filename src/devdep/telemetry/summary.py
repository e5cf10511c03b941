"""The run summary: one JSON document per run, kept in the state directory after
the run's own directory is gone.

It names what ran and measures it; it never holds a secret's value, only the
names of the secrets a run received.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SUMMARY_VERSION = 1


@dataclass
class StepRecord:
    runtime: str
    index: int
    command: str
    exit_status: int | None = None  # None: never finished (timeout, interrupt)
    seconds: float | None = None


@dataclass
class RuntimeRecord:
    name: str
    base_os: str
    vcpus: int
    memory_mb: int
    boot_seconds: float | None = None
    kernel_release: str | None = None
    hooks: dict[str, float] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    missing_artifacts: list[str] = field(default_factory=list)
    # The runtime's egress sandbox: mode, netns, guest address, and the
    # violations (the first ones, and their count).
    network: dict[str, object] | None = None


@dataclass
class RunSummary:
    run_id: str
    environment: str
    config_path: str
    acceleration: str
    started_at: str
    outcome: str = "running"  # succeeded | failed | timed-out | interrupted
    error: str | None = None
    finished_at: str | None = None
    config_sha384: str | None = None
    log_sha384: str | None = None
    log_path: str | None = None
    artifacts_dir: str | None = None
    secret_names: list[str] = field(default_factory=list)
    runtimes: list[RuntimeRecord] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"summary_version": SUMMARY_VERSION, **asdict(self)}

    def write(self, reports_dir: Path) -> Path:
        """Write `<reports_dir>/<run id>.json` atomically; return its path."""
        reports_dir.mkdir(parents=True, exist_ok=True)
        path = reports_dir / f"{self.run_id}.json"
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        temporary.replace(path)
        return path
