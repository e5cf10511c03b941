"""The nft ruleset of one run: generated as text, applied in one `nft -f` transaction.

The table lives inside the run's namespace, so it sees only the run's traffic
and goes away with the namespace. Its chains, in the order a guest's packet
meets them:

- `guest_ingress` (hook ingress on the tap): drops IPv6, and any frame whose
  source MAC or IPv4 address is not the guest's, before the stack sees it;
- `input`: the run namespace itself accepts only DNS on the gateway address,
  and only when DNS is allowed;
- `forward` (policy drop): replies to the guest's own connections, then
  explicit allows of always-blocked ranges, then the always-blocked ranges,
  then the allowlist, then a logged drop;
- `postrouting` (nat): masquerade out of the veth, so the uplink needs no
  route back to the guest's link.

Every drop of the guest's traffic is logged to an nfnetlink_log group with a
prefix naming the reason, which becomes a violation.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import timedelta

LOG_GROUP = 1


@dataclass(frozen=True)
class AllowedNetwork:
    network: ipaddress.IPv4Network
    port: int | None
    protocol: str


@dataclass(frozen=True)
class AllowedHost:
    hostname: str
    set_name: str
    port: int | None
    protocol: str


@dataclass(frozen=True)
class RulesetSpec:
    table: str
    tap: str
    run_veth: str
    guest_mac: str
    guest_ip: ipaddress.IPv4Address
    gateway_ip: ipaddress.IPv4Address
    dns: bool
    networks: list[AllowedNetwork] = field(default_factory=list)
    hosts: list[AllowedHost] = field(default_factory=list)
    always_blocked: list[ipaddress.IPv4Network] = field(default_factory=list)
    log_group: int = LOG_GROUP


def _log_drop(spec: RulesetSpec, reason: str) -> str:
    return f'log group {spec.log_group} prefix "{reason}" drop'


def _port_match(port: int | None, protocol: str) -> str:
    return "" if port is None else f" {protocol} dport {port}"


def _address(network: ipaddress.IPv4Network) -> str:
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def _allow(rule: AllowedNetwork) -> str:
    match = _port_match(rule.port, rule.protocol)
    return f"    ip daddr {_address(rule.network)}{match} accept"


def _elements(networks: list[ipaddress.IPv4Network]) -> str:
    return ", ".join(_address(network) for network in networks)


def is_explicit(rule: AllowedNetwork, blocked: list[ipaddress.IPv4Network]) -> bool:
    """Whether a rule names an always-blocked range itself, not just a wider one.

    `169.254.169.254/32` explicitly allows the metadata address; `0.0.0.0/0` does
    not, though it contains it.
    """
    return any(rule.network.subnet_of(network) for network in blocked)


def render(spec: RulesetSpec) -> str:
    """The whole table as an nft script that creates it."""
    # Overlapping elements are an error in an interval set: merge them first.
    blocked = list(ipaddress.collapse_addresses(spec.always_blocked))
    explicit = [rule for rule in spec.networks if is_explicit(rule, blocked)]
    general = [rule for rule in spec.networks if not is_explicit(rule, blocked)]
    tap, veth = spec.tap, spec.run_veth

    lines = [f"table inet {spec.table} {{"]
    for host in spec.hosts:
        lines.append(f"  set {host.set_name} {{ type ipv4_addr; flags timeout; }}")
    if blocked:
        lines.append(
            "  set always_blocked { type ipv4_addr; flags interval; "
            f"elements = {{ {_elements(blocked)} }}; }}"
        )

    lines += [
        "  chain guest_ingress {",
        f'    type filter hook ingress device "{tap}" priority -500; policy accept;',
        # A guest kernel with IPv6 on sends neighbour discovery and MLD to
        # link-local and multicast addresses by itself: not an egress attempt,
        # so dropped without a record.
        "    ip6 daddr { fe80::/10, ff00::/8 } drop",
        f"    meta nfproto ipv6 {_log_drop(spec, 'ipv6')}",
        f"    ether saddr != {spec.guest_mac} {_log_drop(spec, 'spoofed-mac')}",
        f"    meta nfproto ipv4 ip saddr != {spec.guest_ip} "
        f"{_log_drop(spec, 'spoofed-ip')}",
        "  }",
        "  chain input {",
        "    type filter hook input priority filter; policy drop;",
        '    iifname "lo" accept',
        "    ct state established,related accept",
    ]
    if spec.dns:
        lines += [
            f'    iifname "{tap}" ip daddr {spec.gateway_ip} udp dport 53 accept',
            f'    iifname "{tap}" ip daddr {spec.gateway_ip} tcp dport 53 accept',
        ]
    lines += [
        # Broadcasts and multicasts stay on the tap's link; they reach nothing.
        f'    iifname "{tap}" meta pkttype {{ broadcast, multicast }} drop',
        f'    iifname "{tap}" {_log_drop(spec, "host")}',
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter; policy drop;",
        "    ct state established,related accept",
        "    ct state invalid drop",
        # Nothing on the uplink side may open a connection to the guest.
        f'    iifname != "{tap}" drop',
        f'    oifname != "{veth}" {_log_drop(spec, "not-allowlisted")}',
    ]
    for rule in explicit:
        lines.append(_allow(rule))
    if blocked:
        lines.append(
            f"    ip daddr @always_blocked {_log_drop(spec, 'always-blocked')}"
        )
    for rule in general:
        lines.append(_allow(rule))
    for host in spec.hosts:
        match = _port_match(host.port, host.protocol)
        lines.append(f"    ip daddr @{host.set_name}{match} accept")
    lines += [
        f"    {_log_drop(spec, 'not-allowlisted')}",
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        f'    oifname "{veth}" masquerade',
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def render_pin(
    table: str,
    set_name: str,
    addresses: list[ipaddress.IPv4Address],
    timeout: timedelta,
) -> str:
    """Replace a hostname's pinned addresses in one transaction: no moment in
    between when the set is empty or holds a stale address."""
    seconds = max(1, int(timeout.total_seconds()))
    lines = [f"flush set inet {table} {set_name}"]
    if addresses:
        elements = ", ".join(f"{address} timeout {seconds}s" for address in addresses)
        lines.append(f"add element inet {table} {set_name} {{ {elements} }}")
    return "\n".join(lines) + "\n"
