"""One run's network: its namespace, veth pair, tap, egress rules, DNS and violations.

`NetworkSandbox.create` builds everything before the VM boots, and fails
closed: if any part cannot be built, what was built is removed again and the
error says which part failed. `close` removes it all after the VM is gone.
`reap_leftovers` removes what runs that died without closing left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Collection, Iterator
from datetime import timedelta
from pathlib import Path
from types import TracebackType

from devdep.config.schema import EgressRule, Sandbox
from devdep.netsandbox import netns as plumbing
from devdep.netsandbox.addressing import (
    DEFAULT_POOL,
    NETNS_PREFIX,
    UPLINK_VETH_PREFIX,
    GuestNetwork,
    RunAddresses,
    RunNames,
    first_free_slot,
    guest_mac,
    link_token,
    slot_of,
)
from devdep.netsandbox.dns import DnsResponder
from devdep.netsandbox.errors import (
    EgressPolicyError,
    EgressViolationError,
    NetworkSetupError,
)
from devdep.netsandbox.netns import CommandFailed, ip_prefix, run, socket_in_netns
from devdep.netsandbox.pins import (
    DEFAULT_PIN_TIMEOUT,
    HostnamePins,
    Pin,
    Resolver,
    resolve_ipv4,
)
from devdep.netsandbox.ruleset import (
    LOG_GROUP,
    AllowedHost,
    AllowedNetwork,
    RulesetSpec,
    render,
    render_pin,
)
from devdep.netsandbox.violations import (
    NETLINK_NETFILTER,
    NflogReader,
    Violation,
    ViolationLog,
)

logger = logging.getLogger(__name__)

LOCK_PATH = Path("/run/devdep/netsandbox.lock")
METADATA_NETWORK = ipaddress.IPv4Network("169.254.0.0/16")


class NetworkSandbox:
    """One run's network, from `create` to `close`; also a context manager.

    With `network_sandbox: isolated` the run's namespace holds nothing but `lo`,
    `tap` and `guest` are None, and the VM gets no network device. With
    `allowlist` the VM's one device is attached to `tap`, and `guest` says how
    the guest configures it.
    """

    def __init__(self, names: RunNames, uplink_netns: str | None) -> None:
        self.names = names
        self.uplink_netns = uplink_netns
        self.tap: str | None = None
        self.guest: GuestNetwork | None = None
        self.addresses: RunAddresses | None = None
        self._log = ViolationLog()
        self._reader: NflogReader | None = None
        self._responder: DnsResponder | None = None
        self._pins: HostnamePins | None = None
        self._closed = False

    @property
    def netns(self) -> str:
        return self.names.netns

    # -- creation ---------------------------------------------------------

    @classmethod
    def create(
        cls,
        run_id: str,
        runtime_sandbox: Sandbox,
        *,
        uplink_netns: str | None = None,
        address_pool: ipaddress.IPv4Network = DEFAULT_POOL,
        resolver: Resolver = resolve_ipv4,
        pin_timeout: timedelta = DEFAULT_PIN_TIMEOUT,
    ) -> NetworkSandbox:
        """Build the run's network; raises before anything of it is left behind.

        `uplink_netns` is the namespace the run's veth joins (the root namespace
        when None). `resolver` resolves allowlisted hostnames on the host.
        """
        names = RunNames.for_run(run_id)
        plumbing.require_netns(uplink_netns)
        if plumbing.netns_exists(names.netns):
            raise NetworkSetupError(
                f"network namespace {names.netns} already exists",
                hint="another run with this id is alive, or a dead run left it: "
                "the host agent removes leftovers when it starts",
            )
        rules = runtime_sandbox.egress.allow if runtime_sandbox.egress else []
        _refuse_ipv6_rules(rules)

        sandbox = cls(names, uplink_netns)
        try:
            sandbox._create_namespace()
            if runtime_sandbox.network_sandbox == "allowlist":
                sandbox._create_links(address_pool)
                sandbox._apply_policy(
                    rules,
                    runtime_sandbox.allow_dns_resolution,
                    address_pool,
                    resolver,
                    pin_timeout,
                )
                sandbox._warn_if_uplink_does_not_forward()
        except BaseException as exc:
            try:
                sandbox.close()
            except NetworkSetupError as cleanup:
                # The first failure is the one to report; what could not be
                # removed is logged, and the reaper removes it later.
                logger.error("%s: %s", cleanup.message, "; ".join(cleanup.details))
            if isinstance(exc, (EgressPolicyError, NetworkSetupError)):
                raise
            if isinstance(exc, (CommandFailed, OSError, LookupError)):
                raise NetworkSetupError(
                    f"could not build the network sandbox of run {run_id}: {exc}",
                    hint="the VM was not started; check that nftables and iproute2 "
                    "are installed and devdep runs as root",
                ) from exc
            raise
        logger.info(
            "network sandbox of run %s ready: %s%s",
            run_id,
            runtime_sandbox.network_sandbox,
            f", guest {sandbox.guest.address}" if sandbox.guest else "",
        )
        return sandbox

    def _create_namespace(self) -> None:
        run(["ip", "netns", "add", self.netns])
        inside = ["ip", "netns", "exec", self.netns]
        # IPv6 off for the namespace's own interfaces: no link-local chatter out
        # of the veth. The guest's IPv6 is still seen, and logged, at the tap's
        # ingress hook, which runs before the IPv6 stack would discard it.
        run(
            [
                *inside,
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]
        )
        run(["ip", "-n", self.netns, "link", "set", "lo", "up"])

    def _create_links(self, pool: ipaddress.IPv4Network) -> None:
        names = self.names
        uplink = ip_prefix(self.uplink_netns)
        inside = ["ip", "-n", self.netns]

        # Two runs starting at once must not pick the same slot: the pick and
        # the address that marks the slot as used happen under one lock.
        with _slot_lock():
            used = _used_slots(self.uplink_netns, pool)
            slot = first_free_slot(pool, used)
            if slot is None:
                raise NetworkSetupError(
                    f"the address pool {pool} has no free /29 for another run"
                )
            addresses = RunAddresses.for_slot(slot)
            run(
                [
                    *uplink,
                    "link",
                    "add",
                    names.uplink_veth,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    names.run_veth,
                    "netns",
                    self.netns,
                ]
            )
            run(
                [
                    *uplink,
                    "addr",
                    "add",
                    str(addresses.uplink),
                    "dev",
                    names.uplink_veth,
                ]
            )
        self.addresses = addresses

        run([*uplink, "link", "set", names.uplink_veth, "up"])
        run([*inside, "addr", "add", str(addresses.run), "dev", names.run_veth])
        run([*inside, "link", "set", names.run_veth, "up"])
        run([*inside, "route", "add", "default", "via", str(addresses.uplink.ip)])

        mac = guest_mac(names.run_id)
        run([*inside, "tuntap", "add", "dev", names.tap, "mode", "tap"])
        self.tap = names.tap
        run([*inside, "addr", "add", str(addresses.gateway), "dev", names.tap])
        run([*inside, "link", "set", names.tap, "up"])
        # The namespace answers only the guest's MAC for the guest's address.
        run(
            [
                *inside,
                "neigh",
                "replace",
                str(addresses.guest.ip),
                "lladdr",
                mac,
                "dev",
                names.tap,
                "nud",
                "permanent",
            ]
        )
        run(
            [
                "ip",
                "netns",
                "exec",
                self.netns,
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.ip_forward=1",
            ]
        )
        self.guest = GuestNetwork(
            mac=mac,
            address=addresses.guest,
            gateway=addresses.gateway.ip,
            dns_server=None,
        )

    def _apply_policy(
        self,
        rules: list[EgressRule],
        dns_enabled: bool,
        pool: ipaddress.IPv4Network,
        resolver: Resolver,
        pin_timeout: timedelta,
    ) -> None:
        assert self.addresses is not None and self.guest is not None
        networks = [
            AllowedNetwork(rule.network, rule.port, rule.protocol)
            for rule in rules
            if isinstance(rule.network, ipaddress.IPv4Network)
        ]
        hosts = [
            AllowedHost(rule.hostname, f"host_{index}", rule.port, rule.protocol)
            for index, rule in enumerate(rules)
            if rule.hostname is not None
        ]
        always_blocked = [
            *_host_addresses(self.uplink_netns),
            pool,
            METADATA_NETWORK,
        ]
        spec = RulesetSpec(
            table=self.names.table,
            tap=self.names.tap,
            run_veth=self.names.run_veth,
            guest_mac=self.guest.mac,
            guest_ip=self.guest.address.ip,
            gateway_ip=self.guest.gateway,
            dns=dns_enabled,
            networks=networks,
            hosts=hosts,
            always_blocked=always_blocked,
        )

        # The log reader is bound before the rules exist, so no drop goes
        # unrecorded between the two.
        self._start_violation_reader()
        plumbing.nft(self.netns, render(spec))

        pins = HostnamePins(resolver, pin_timeout, self._apply_pin)
        self._pins = pins
        for host in hosts:
            try:
                pins.pin(host.hostname, host.set_name)
            except LookupError as exc:
                raise EgressPolicyError(
                    f"the egress allowlist names {host.hostname}, which does not "
                    f"resolve on this host: {exc}",
                    hint="fix the name in sandbox.egress.allow, or allow its network",
                ) from exc
        if hosts:
            pins.start()

        if dns_enabled:
            self._start_dns_responder()
            self.guest = GuestNetwork(
                mac=self.guest.mac,
                address=self.guest.address,
                gateway=self.guest.gateway,
                dns_server=self.guest.gateway,
            )

    def _apply_pin(self, pin: Pin) -> None:
        plumbing.nft(
            self.netns,
            render_pin(
                self.names.table,
                pin.set_name,
                pin.addresses,
                timedelta(seconds=pin.expires - time.monotonic()),
            ),
        )

    def _start_violation_reader(self) -> None:
        netlink = socket_in_netns(
            self.netns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER
        )
        reader = NflogReader(netlink, LOG_GROUP, self._log.record)
        try:
            reader.bind()
        except OSError:
            netlink.close()
            raise
        reader.start()
        self._reader = reader

    def _start_dns_responder(self) -> None:
        assert self.addresses is not None and self._pins is not None
        gateway = str(self.addresses.gateway.ip)
        udp = socket_in_netns(self.netns, socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket_in_netns(self.netns, socket.AF_INET, socket.SOCK_STREAM)
        try:
            udp.bind((gateway, 53))
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((gateway, 53))
            tcp.listen(16)
        except OSError:
            udp.close()
            tcp.close()
            raise
        self._responder = DnsResponder(
            udp, tcp, self._pins.addresses, self._pins.remaining, self._log.record
        )
        self._responder.start()

    def _warn_if_uplink_does_not_forward(self) -> None:
        try:
            value = run(
                plumbing.in_netns(
                    self.uplink_netns, ["sysctl", "-n", "net.ipv4.ip_forward"]
                )
            ).strip()
        except CommandFailed:
            return
        if value != "1":
            logger.warning(
                "the uplink namespace does not forward IPv4 (net.ipv4.ip_forward=0): "
                "run %s can reach no allowlisted destination beyond this host",
                self.names.run_id,
            )

    # -- use ----------------------------------------------------------------

    def kernel_ip_argument(self) -> str | None:
        """The guest kernel's `ip=` argument, or None for an isolated run."""
        return None if self.guest is None else self.guest.kernel_ip_argument()

    def command_prefix(self) -> list[str]:
        """Prefix a command (the VMM) with this to run it inside the run's namespace."""
        return ["ip", "netns", "exec", self.netns]

    def violations(self) -> list[Violation]:
        """What the guest tried that its allowlist refused, oldest first (the first
        10,000; `violation_count` counts them all)."""
        return self._log.snapshot()

    @property
    def violation_count(self) -> int:
        return self._log.count

    def watch(self, listener: Callable[[Violation], None]) -> None:
        """Call `listener` with each violation from now on, on a reader thread;
        with `on_violation: fail` the runner can stop the VM at the first one."""
        self._log.add_listener(listener)

    def raise_for_violations(self) -> None:
        """Raise EgressViolationError if the guest caused any violation."""
        violations = self._log.snapshot()
        if violations:
            raise EgressViolationError(violations)

    def as_dict(self) -> dict[str, object]:
        return {
            "netns": self.netns,
            "tap": self.tap,
            "guest": None if self.guest is None else self.guest.as_dict(),
            "violations": [v.as_dict() for v in self.violations()],
            "violation_count": self.violation_count,
        }

    # -- teardown -------------------------------------------------------------

    def close(self) -> None:
        """Remove everything of the run's network. Safe to call more than once.

        Call it after the VMM has exited: a process still inside the namespace
        is killed, and logged, because the namespace must not outlive the run.
        """
        if self._closed:
            return
        self._closed = True

        # Our own sockets hold the namespace alive; close them first.
        for component in (self._pins, self._responder, self._reader):
            if component is not None:
                component.stop()
        failures: list[str] = []
        for removed in _remove_run(self.names, self.uplink_netns, failures):
            logger.debug("run %s: removed %s", self.names.run_id, removed)
        if failures:
            raise NetworkSetupError(
                f"could not remove all of the network of run {self.names.run_id}",
                details=failures,
                hint="the host agent removes what is left when it starts",
            )

    def __enter__(self) -> NetworkSandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def reap_leftovers(
    alive_run_ids: Collection[str],
    *,
    uplink_netns: str | None = None,
    run_id_prefix: str = "",
) -> list[str]:
    """Remove the networks of runs that are not alive, found by their name prefix.

    Returns (and logs) what was removed. `run_id_prefix` limits the sweep to run
    ids that start with it, for a host that shares its namespaces with others.
    """
    alive_tokens = {link_token(run_id) for run_id in alive_run_ids}
    removed: list[str] = []
    failures: list[str] = []

    for netns in plumbing.list_netns():
        if not netns.startswith(NETNS_PREFIX):
            continue
        run_id = netns[len(NETNS_PREFIX) :]
        if run_id in alive_run_ids or not run_id.startswith(run_id_prefix):
            continue
        try:
            names = RunNames.for_run(run_id)
        except EgressPolicyError:
            continue
        removed += _remove_run(names, uplink_netns, failures)

    # A veth whose namespace is already gone, e.g. a crash between the two.
    for link in _links(uplink_netns):
        if not link.startswith(UPLINK_VETH_PREFIX):
            continue
        token = link[len(UPLINK_VETH_PREFIX) :]
        if token in alive_tokens or not token.startswith(run_id_prefix):
            continue
        with _collect(failures):
            run([*ip_prefix(uplink_netns), "link", "del", link])
            removed.append(f"veth {link}")

    for item in removed:
        logger.warning("removed leftover of a dead run: %s", item)
    for failure in failures:
        logger.error("could not remove a leftover of a dead run: %s", failure)
    return removed


def _remove_run(
    names: RunNames, uplink_netns: str | None, failures: list[str]
) -> Iterator[str]:
    """Remove one run's objects and yield what was removed.

    Processes go first: while the VMM can still send, the table must stay in
    place. Then the table, the tap, the veth pair, and last the namespace,
    whose removal would otherwise take the others with it unlogged."""
    if plumbing.netns_exists(names.netns):
        for pid in _pids_in(names.netns):
            with _collect(failures):
                os.kill(pid, signal.SIGKILL)
                yield f"process {pid} in {names.netns}"
        inside = ["ip", "-n", names.netns]
        with contextlib.suppress(CommandFailed):
            run(
                plumbing.in_netns(
                    names.netns, ["nft", "delete", "table", "inet", names.table]
                )
            )
            yield f"nft table inet {names.table} in {names.netns}"
        with contextlib.suppress(CommandFailed):
            run([*inside, "link", "del", names.tap])
            yield f"tap {names.tap} in {names.netns}"
        with contextlib.suppress(CommandFailed):
            # Deleting one end of a veth pair deletes its peer too.
            run([*inside, "link", "del", names.run_veth])
            yield f"veth {names.run_veth}/{names.uplink_veth}"
    if names.uplink_veth in _links(uplink_netns):
        with _collect(failures):
            run([*ip_prefix(uplink_netns), "link", "del", names.uplink_veth])
            yield f"veth {names.uplink_veth}"
    if plumbing.netns_exists(names.netns):
        with _collect(failures):
            run(["ip", "netns", "del", names.netns])
            yield f"netns {names.netns}"


@contextlib.contextmanager
def _collect(failures: list[str]) -> Iterator[None]:
    try:
        yield
    except (CommandFailed, OSError) as exc:
        failures.append(str(exc))


@contextlib.contextmanager
def _slot_lock() -> Iterator[None]:
    LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    with LOCK_PATH.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _addresses_json(netns: str | None) -> list[dict[str, object]]:
    output = run([*ip_prefix(netns), "-j", "addr", "show"])
    document = json.loads(output or "[]")
    return document if isinstance(document, list) else []


def _used_slots(
    netns: str | None, pool: ipaddress.IPv4Network
) -> set[ipaddress.IPv4Network]:
    used: set[ipaddress.IPv4Network] = set()
    for link in _addresses_json(netns):
        for info in _address_infos(link):
            if info.get("family") != "inet":
                continue
            address = ipaddress.IPv4Address(str(info["local"]))
            if address in pool:
                used.add(slot_of(address))
    return used


def _host_addresses(netns: str | None) -> list[ipaddress.IPv4Network]:
    """Every IPv4 address of the uplink namespace, each as a /32."""
    networks: list[ipaddress.IPv4Network] = []
    for link in _addresses_json(netns):
        for info in _address_infos(link):
            if info.get("family") == "inet":
                networks.append(ipaddress.IPv4Network(f"{info['local']}/32"))
    return networks


def _address_infos(link: dict[str, object]) -> list[dict[str, object]]:
    infos = link.get("addr_info", [])
    return (
        [info for info in infos if isinstance(info, dict)]
        if isinstance(infos, list)
        else []
    )


def _links(netns: str | None) -> list[str]:
    try:
        output = run([*ip_prefix(netns), "-j", "link", "show"])
    except CommandFailed:
        return []
    document = json.loads(output or "[]")
    return [str(link["ifname"]) for link in document if isinstance(link, dict)]


def _pids_in(netns: str) -> list[int]:
    try:
        output = run(["ip", "netns", "pids", netns])
    except CommandFailed:
        return []
    return [
        int(pid) for pid in output.split() if pid.isdigit() and int(pid) != os.getpid()
    ]


def _refuse_ipv6_rules(rules: list[EgressRule]) -> None:
    for rule in rules:
        if isinstance(rule.network, ipaddress.IPv6Network):
            raise EgressPolicyError(
                f"egress rule {rule} names an IPv6 network; the sandbox gives the "
                "guest IPv4 only, and drops every IPv6 packet",
                hint="allow the destination's IPv4 network instead",
            )
