"""The network sandbox's errors, each a subclass of one of devdep's exit-code errors::

    UsageError (2)
     └── EgressPolicyError        the allowlist cannot be turned into rules
    EgressViolation (401)
     ├── NetworkSetupError        the host could not build or enforce the sandbox
     └── EgressViolationError     the guest tried to reach what is not allowlisted
    JobFailed (1)
     └── NoHealthyNodeError       `network check-routes` found every node down

A sandbox that cannot be enforced fails closed with 401: the VM never boots
without its egress policy in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from devdep.errors import EgressViolation, JobFailed, UsageError

if TYPE_CHECKING:
    from devdep.netsandbox.violations import Violation

# How many violations the error's message names; the rest are counted.
LISTED_VIOLATIONS = 5


class EgressPolicyError(UsageError):
    """An egress rule cannot be enforced: an unresolvable hostname, an IPv6 rule."""


class NetworkSetupError(EgressViolation):
    """A namespace, link, address or nft rule could not be created or removed."""


class EgressViolationError(EgressViolation):
    """The guest sent traffic, or asked DNS for a name, outside its allowlist."""

    def __init__(self, violations: Sequence[Violation]) -> None:
        self.violations = list(violations)
        destinations = _distinct_destinations(self.violations)
        listed = ", ".join(destinations[:LISTED_VIOLATIONS])
        more = len(destinations) - LISTED_VIOLATIONS
        if more > 0:
            listed += f" and {more} more"
        count = len(self.violations)
        noun = "violation" if count == 1 else "violations"
        super().__init__(
            f"egress violation: {count} {noun}; the guest tried to reach {listed}",
            hint="add what the build needs to sandbox.egress.allow in devdep.yaml, "
            "or set sandbox.on_violation: report",
            details=[v.describe() for v in self.violations[:LISTED_VIOLATIONS]],
        )


class NoHealthyNodeError(JobFailed):
    """Every gateway node failed its probes.

    `run_document` is the route report, which the CLI's JSON output carries
    beside the error.
    """

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        run_document: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.run_document = run_document


def _distinct_destinations(violations: Sequence[Violation]) -> list[str]:
    seen: dict[str, None] = {}
    for violation in violations:
        seen.setdefault(violation.target(), None)
    return list(seen)
