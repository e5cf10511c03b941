"""Each runtime's network, as the host agent builds it around the VM.

The egress sandbox itself is `devdep.netsandbox`; this module decides what the
runner does with it:

- when the host agent starts (once per process), it removes what runs that
  died without their teardown left behind: namespaces, links and nft tables;
- for each runtime it creates the sandbox before the VM boots, says how the
  VMM joins it (a command prefix that enters the run's namespace, the NIC on
  the run's tap, the guest's kernel arguments), stops the VM at its first
  violation when the policy says `on_violation: fail`, and closes the sandbox
  once the VM is dead.

Which runs are alive: each run holds an flock on `/run/devdep/runs/<run
id>.lock` for as long as its sandbox exists. The kernel drops the lock when the
process dies, even by SIGKILL, so a namespace whose lock is free belongs to a
dead run. The reaper holds `registry.lock` in the same directory exclusively,
and a run takes it shared while it takes its own lock, so a run starting beside
a reaping agent is either seen alive or has not created anything yet. /run is
a tmpfs: after a reboot neither locks nor namespaces are left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devdep.config.schema import Runtime
from devdep.images.boot import BootSpec
from devdep.netsandbox import (
    EgressViolationError,
    NetworkSandbox,
    NetworkSetupError,
    Violation,
    reap_leftovers,
)
from devdep.netsandbox.addressing import NETNS_PREFIX
from devdep.netsandbox.netns import list_netns
from devdep.netsandbox.pins import Resolver, resolve_ipv4
from devdep.vmm.backend import VmBackend
from devdep.vmm.qemu import VmNetwork

logger = logging.getLogger(__name__)

# The namespace the runs' veth pairs join; unset: the host's root namespace.
UPLINK_NETNS_VARIABLE = "DEVDEP_UPLINK_NETNS"
LEASE_DIRECTORY = Path("/run/devdep/runs")
# Only the runner's own run ids (paths.new_run_id) are swept: other tools may
# name sandboxes of their own on the same host.
RUN_ID_PREFIX = "r-"
# The guest never configures IPv6: the sandbox drops all of it anyway, and a
# kernel without it sends no router solicitations to be dropped.
GUEST_KERNEL_ARGUMENTS = ("ipv6.disable=1",)
# How many violations the run summary lists; the rest are counted.
SUMMARY_VIOLATIONS = 20
# The kernel queued every drop on the log socket before the VM died; its reader
# thread needs a moment to deliver the last ones.
_SETTLE_SECONDS = 0.2


@dataclass(frozen=True)
class NetworkSettings:
    """The host agent's network settings, the same for every run."""

    uplink_netns: str | None = None
    resolver: Resolver = resolve_ipv4
    lease_directory: Path = LEASE_DIRECTORY

    @classmethod
    def from_environment(cls) -> NetworkSettings:
        return cls(uplink_netns=os.environ.get(UPLINK_NETNS_VARIABLE) or None)


# --- which runs are alive ------------------------------------------------------


class RunLease:
    """An flock held by the process of a live run."""

    def __init__(self, path: Path, descriptor: int) -> None:
        self.path = path
        self._descriptor: int | None = descriptor

    @classmethod
    def take(cls, run_id: str, directory: Path) -> RunLease:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = directory / f"{run_id}.lock"
        with _registry(directory, exclusive=False):
            while True:
                descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                fcntl.flock(descriptor, fcntl.LOCK_EX)
                # The reaper unlinks a free lock file while holding it: a lock
                # taken on a file that is no longer at `path` protects nothing.
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_ino == os.fstat(descriptor).st_ino:
                        return cls(path, descriptor)
                os.close(descriptor)

    def release(self) -> None:
        if self._descriptor is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._descriptor)
        self._descriptor = None


@contextlib.contextmanager
def _registry(directory: Path, *, exclusive: bool) -> Iterator[None]:
    descriptor = os.open(
        directory / "registry.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
    )
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(descriptor)


def _lease_is_held(path: Path) -> bool:
    """Whether a live process holds the lock; a free lock file is removed."""
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        path.unlink(missing_ok=True)
        return False
    finally:
        os.close(descriptor)


_reap_lock = threading.Lock()
_reaped: set[Path] = set()  # the lease directories swept by this process


def reap_dead_runs(settings: NetworkSettings) -> list[str]:
    """Remove the networks of dead runs; does its work once per process (the
    host agent's start), and returns what it removed."""
    directory = settings.lease_directory
    with _reap_lock:
        if directory in _reaped:
            return []
        _reaped.add(directory)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _registry(directory, exclusive=True):
            alive = [
                run_id
                for run_id in _runner_run_ids()
                if _lease_is_held(directory / f"{run_id}.lock")
            ]
            removed = reap_leftovers(
                alive, uplink_netns=settings.uplink_netns, run_id_prefix=RUN_ID_PREFIX
            )
            for lease in directory.glob(f"{RUN_ID_PREFIX}*.lock"):
                _lease_is_held(lease)
    # reap_leftovers has logged each removal.
    return removed


def _runner_run_ids() -> list[str]:
    prefix = NETNS_PREFIX + RUN_ID_PREFIX
    return [
        netns[len(NETNS_PREFIX) :] for netns in list_netns() if netns.startswith(prefix)
    ]


# --- one runtime's network -----------------------------------------------------


class RuntimeNetwork:
    """One runtime's sandbox, from pre_bootstrap to post_teardown."""

    def __init__(
        self, runtime: Runtime, sandbox: NetworkSandbox, lease: RunLease
    ) -> None:
        self.runtime = runtime.name
        self.policy = runtime.sandbox
        self.sandbox = sandbox
        self._lease = lease
        self._stopped_vm = threading.Event()

    @classmethod
    def open(
        cls, run_id: str, runtime: Runtime, settings: NetworkSettings
    ) -> RuntimeNetwork:
        """Create the runtime's sandbox; fails closed (NetworkSetupError, 401, or
        EgressPolicyError, 2) with nothing left behind."""
        try:
            reap_dead_runs(settings)
            lease = RunLease.take(run_id, settings.lease_directory)
        except OSError as exc:
            raise NetworkSetupError(
                f"cannot record run {run_id} in {settings.lease_directory}: "
                f"{exc.strerror or exc}",
                hint="the VM was not started; the host agent runs as root, "
                "since it builds a network namespace for every VM",
            ) from exc
        try:
            sandbox = NetworkSandbox.create(
                run_id,
                runtime.sandbox,
                uplink_netns=settings.uplink_netns,
                resolver=settings.resolver,
            )
        except BaseException:
            lease.release()
            raise
        return cls(runtime, sandbox, lease)

    def boot_spec(self, spec: BootSpec) -> BootSpec:
        """`spec` with the guest's network on its kernel command line: `ip=` for
        /init to configure eth0 with, or nothing for an isolated VM."""
        words = [spec.command_line, *GUEST_KERNEL_ARGUMENTS]
        ip_argument = self.sandbox.kernel_ip_argument()
        if ip_argument is not None:
            words.append(ip_argument)
        return dataclasses.replace(spec, command_line=" ".join(words))

    def vm_network(self) -> VmNetwork:
        """QEMU runs inside the run's namespace, with one NIC on the run's tap
        under `allowlist` and none at all under `isolated`."""
        arguments: tuple[str, ...] = ()
        if self.sandbox.tap is not None and self.sandbox.guest is not None:
            arguments = (
                "-netdev",
                f"tap,id=net0,ifname={self.sandbox.tap},script=no,downscript=no",
                "-device",
                f"virtio-net-device,netdev=net0,mac={self.sandbox.guest.mac}",
            )
        return VmNetwork(tuple(self.sandbox.command_prefix()), arguments)

    def stop_at_first_violation(self, vm: VmBackend) -> None:
        """With `on_violation: fail`, kill `vm` at the guest's first violation;
        the step it was running then fails and `violation_error` says why."""
        if self.policy.on_violation != "fail":
            return

        def on_violation(violation: Violation) -> None:
            if self._stopped_vm.is_set():
                return
            self._stopped_vm.set()
            logger.warning(
                "runtime %s: egress violation (%s), stopping its VM",
                self.runtime,
                violation.describe(),
            )
            vm.kill()

        self.sandbox.watch(on_violation)

    def violation_error(self) -> EgressViolationError | None:
        """The run's EgressViolationError (401) when the guest violated a `fail`
        policy, else None."""
        if self.policy.on_violation != "fail":
            return None
        if self.sandbox.tap is not None and self.sandbox.violation_count == 0:
            time.sleep(_SETTLE_SECONDS)
        violations = self.sandbox.violations()
        return EgressViolationError(violations) if violations else None

    def report(self) -> dict[str, object]:
        """The runtime's network for the run summary."""
        guest = self.sandbox.guest
        return {
            "mode": self.policy.network_sandbox,
            "netns": self.sandbox.netns,
            "guest_address": None if guest is None else str(guest.address),
            "dns": self.policy.allow_dns_resolution,
            "on_violation": self.policy.on_violation,
            "violation_count": self.sandbox.violation_count,
            "violations": [
                violation.as_dict()
                for violation in self.sandbox.violations()[:SUMMARY_VIOLATIONS]
            ],
        }

    def close(self) -> None:
        """Remove the sandbox; call it once the VM is dead. What cannot be
        removed is logged, and the next host agent to start removes it."""
        try:
            self.sandbox.close()
        except NetworkSetupError as error:
            logger.error("%s: %s", error.message, "; ".join(error.details))
        finally:
            self._lease.release()
