"""Fixtures of the store's tests."""

from tests.store.postgresql import postgresql_url

__all__ = ["postgresql_url"]
