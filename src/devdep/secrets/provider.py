"""What every secret provider offers a run, and the `local` provider's adapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from devdep.config.schema import SecretMapping


@dataclass(frozen=True)
class FetchedSecret:
    """A value just read from its provider, and its version where it has one."""

    value: bytes
    version: int | None

    def __repr__(self) -> str:
        return f"FetchedSecret(version={self.version}, {len(self.value)} bytes)"


class SecretProvider(Protocol):
    def fetch(
        self, mapping: SecretMapping, version: int | None = None
    ) -> FetchedSecret:
        """The value of `mapping`, at `version` or the latest."""

    def current_version(self, mapping: SecretMapping) -> int | None:
        """The latest version of `mapping`'s secret; None if it has no versions."""

    def close(self) -> None:
        """Give back whatever the provider holds: tokens, connections."""
