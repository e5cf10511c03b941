"""The check `validate` and `deploy` run against the image store: every
runtime's `base_os` must name an image the store holds."""

from __future__ import annotations

from devdep.config.loader import ConfigError, ConfigIssue, LoadedConfig
from devdep.images.boot import ImageStore


def check_base_images(loaded: LoadedConfig, store: ImageStore | None = None) -> None:
    """Raise ConfigError (exit 2) placing each unknown `base_os` at its line,
    listing the images the store has and how to add one."""
    store = store if store is not None else ImageStore()
    available = store.names()
    held = ", ".join(available) if available else "none"
    issues: list[ConfigIssue] = []
    for index, runtime in enumerate(loaded.config.pipeline.runtimes):
        if runtime.base_os in available:
            continue
        issues.append(
            loaded.issue_at(
                ("pipeline", "runtimes", index, "base_os"),
                f"image {runtime.base_os!r} is not in the image store "
                f"{store.root} (it holds: {held})",
                "build the default image with 'devdep-cli image build-base', or "
                "add one with 'devdep-cli image import NAME FILE'",
            )
        )
    if issues:
        raise ConfigError(loaded.filename, issues)
