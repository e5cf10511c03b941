"""Suite-wide test set-up: every test is `unit` unless marked `integration`."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.support.openbao", "tests.support.oidc"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("integration") is None:
            item.add_marker(pytest.mark.unit)
