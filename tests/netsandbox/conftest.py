"""Fixtures for the network sandbox's integration tests: a test topology made of
namespaces the test creates, and a check that no run leaves anything behind."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator

import pytest

from devdep.netsandbox import reap_leftovers
from tests.netsandbox.topology import Topology, leftovers, sh

RUN_ID_PREFIX = "t"


@pytest.fixture
def topology() -> Iterator[Topology]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("nft") is None:
        pytest.skip("nft is not installed (scripts/debian-packages.txt: nftables)")
    built = Topology()
    try:
        yield built
    finally:
        built.close()


@pytest.fixture
def run_id(topology: Topology) -> Iterator[str]:
    """A fresh run id; after the test, nothing of that run may remain."""
    value = f"{RUN_ID_PREFIX}{secrets.token_hex(4)}"
    yield value
    left = leftovers(value, topology.uplink)
    # Clean up before asserting, so a failing test does not leave its run on
    # the machine for the next one.
    reap_leftovers([], uplink_netns=topology.uplink, run_id_prefix=value)
    assert left == []
    assert f"devdep-{value}" not in sh("ip", "netns", "list")
