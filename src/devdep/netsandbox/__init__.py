"""The egress sandbox of a run's VM: network namespace, veth pair, tap, nftables
allowlist, DNS responder and violation events; and the gateway route checks.

docs/network.md describes the design and the API the runner uses.
"""

from __future__ import annotations

from devdep.netsandbox.addressing import DEFAULT_POOL, GuestNetwork
from devdep.netsandbox.errors import (
    EgressPolicyError,
    EgressViolationError,
    NetworkSetupError,
    NoHealthyNodeError,
)
from devdep.netsandbox.sandbox import NetworkSandbox, reap_leftovers
from devdep.netsandbox.violations import Violation, ViolationKind

__all__ = [
    "DEFAULT_POOL",
    "EgressPolicyError",
    "EgressViolationError",
    "GuestNetwork",
    "NetworkSandbox",
    "NetworkSetupError",
    "NoHealthyNodeError",
    "Violation",
    "ViolationKind",
    "reap_leftovers",
]
