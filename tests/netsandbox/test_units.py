"""Unit tests of the sandbox's pure parts: names, addresses, the generated ruleset,
packet parsing, the DNS responder's answers and the violation error."""

from __future__ import annotations

import ipaddress
import socket
import struct
from datetime import UTC, datetime, timedelta

import dns.message
import dns.rcode
import pytest

from devdep.config.schema import GatewayThresholds, PipelineConfig, Sandbox
from devdep.errors import ExitCode, exit_code_for
from devdep.netsandbox.addressing import (
    IFNAMSIZ,
    GuestNetwork,
    RunAddresses,
    RunNames,
    first_free_slot,
    guest_mac,
    link_token,
)
from devdep.netsandbox.dns import DnsResponder
from devdep.netsandbox.errors import (
    EgressPolicyError,
    EgressViolationError,
    NoHealthyNodeError,
)
from devdep.netsandbox.pins import resolve_ipv4
from devdep.netsandbox.routes import NodeStatus, Probe, classify, pick_nearest
from devdep.netsandbox.ruleset import (
    AllowedHost,
    AllowedNetwork,
    RulesetSpec,
    render,
    render_pin,
)
from devdep.netsandbox.violations import Violation, ViolationKind, violation_from_packet

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_interface_names_fit_ifnamsiz_for_any_run_id() -> None:
    for run_id in ["a", "run-12345678", "0b2f6c1e-4c1d-4e0a-9d3e-1f2a3b4c5d6e"]:
        names = RunNames.for_run(run_id)
        assert len(names.uplink_veth) < IFNAMSIZ
        assert len(names.run_veth) < IFNAMSIZ
        assert names.netns == f"devdep-{run_id}"
    assert link_token("short-id") == "short-id"
    long_id = "0b2f6c1e-4c1d-4e0a-9d3e-1f2a3b4c5d6e"
    assert link_token(long_id) == link_token(long_id) != long_id[:11]


def test_a_run_id_that_cannot_name_a_namespace_is_refused() -> None:
    with pytest.raises(EgressPolicyError):
        RunNames.for_run("../etc")


def test_slots_are_carved_from_the_pool_in_order() -> None:
    pool = ipaddress.IPv4Network("10.213.0.0/28")
    first = first_free_slot(pool, set())
    assert first == ipaddress.IPv4Network("10.213.0.0/29")
    second = first_free_slot(pool, {first})
    assert second == ipaddress.IPv4Network("10.213.0.8/29")
    assert first_free_slot(pool, {first, second}) is None
    addresses = RunAddresses.for_slot(second)
    assert str(addresses.uplink) == "10.213.0.9/30"
    assert str(addresses.run) == "10.213.0.10/30"
    assert str(addresses.gateway) == "10.213.0.13/30"
    assert str(addresses.guest) == "10.213.0.14/30"


def test_guest_mac_is_locally_administered_and_stable() -> None:
    mac = guest_mac("run-1")
    assert mac == guest_mac("run-1") != guest_mac("run-2")
    assert int(mac.split(":")[0], 16) & 0b11 == 0b10


def test_kernel_ip_argument() -> None:
    guest = GuestNetwork(
        mac="02:dd:00:00:00:01",
        address=ipaddress.IPv4Interface("10.213.0.6/30"),
        gateway=ipaddress.IPv4Address("10.213.0.5"),
        dns_server=None,
    )
    assert (
        guest.kernel_ip_argument()
        == "ip=10.213.0.6::10.213.0.5:255.255.255.252::eth0:off"
    )


def spec(**overrides: object) -> RulesetSpec:
    values: dict[str, object] = {
        "table": "devdep",
        "tap": "dd-tap0",
        "run_veth": "ddn-r1",
        "guest_mac": "02:dd:00:00:00:01",
        "guest_ip": ipaddress.IPv4Address("10.213.0.6"),
        "gateway_ip": ipaddress.IPv4Address("10.213.0.5"),
        "dns": False,
        "always_blocked": [
            ipaddress.IPv4Network("10.213.0.0/16"),
            ipaddress.IPv4Network("10.213.0.1/32"),
            ipaddress.IPv4Network("169.254.0.0/16"),
        ],
    }
    values.update(overrides)
    return RulesetSpec(**values)  # type: ignore[arg-type]


def test_ruleset_orders_explicit_allows_before_always_blocked_before_the_rest() -> None:
    text = render(
        spec(
            networks=[
                AllowedNetwork(ipaddress.IPv4Network("0.0.0.0/0"), 443, "tcp"),
                AllowedNetwork(ipaddress.IPv4Network("169.254.169.254/32"), 80, "tcp"),
            ],
            hosts=[AllowedHost("build.acme.com", "host_0", 53, "udp")],
        )
    )
    explicit = text.index("ip daddr 169.254.169.254 tcp dport 80 accept")
    blocked = text.index("ip daddr @always_blocked")
    general = text.index("ip daddr 0.0.0.0/0 tcp dport 443 accept")
    assert explicit < blocked < general
    assert "ip daddr @host_0 udp dport 53 accept" in text
    assert "set host_0 { type ipv4_addr; flags timeout; }" in text
    # Overlapping blocked ranges are merged: nft refuses overlaps in a set.
    assert "elements = { 10.213.0.0/16, 169.254.0.0/16 }" in text
    assert "policy drop" in text.split("chain forward")[1]
    assert 'oifname "ddn-r1" masquerade' in text


def test_ruleset_accepts_dns_on_the_gateway_only_when_allowed() -> None:
    assert "dport 53" not in render(spec(dns=False)).split("chain input")[1]
    with_dns = render(spec(dns=True)).split("chain input")[1].split("chain forward")[0]
    assert 'iifname "dd-tap0" ip daddr 10.213.0.5 udp dport 53 accept' in with_dns
    assert 'iifname "dd-tap0" ip daddr 10.213.0.5 tcp dport 53 accept' in with_dns


def test_ruleset_pins_mac_and_address_and_drops_ipv6_at_the_tap() -> None:
    ingress = render(spec()).split("chain guest_ingress")[1].split("chain input")[0]
    assert 'hook ingress device "dd-tap0"' in ingress
    assert (
        'ether saddr != 02:dd:00:00:00:01 log group 1 prefix "spoofed-mac"' in ingress
    )
    assert 'ip saddr != 10.213.0.6 log group 1 prefix "spoofed-ip" drop' in ingress
    assert 'meta nfproto ipv6 log group 1 prefix "ipv6" drop' in ingress


def test_pin_replaces_a_sets_elements_in_one_script() -> None:
    script = render_pin(
        "devdep",
        "host_0",
        [ipaddress.IPv4Address("198.18.0.1"), ipaddress.IPv4Address("198.18.0.2")],
        timedelta(minutes=5),
    )
    assert script == (
        "flush set inet devdep host_0\n"
        "add element inet devdep host_0 { 198.18.0.1 timeout 300s, "
        "198.18.0.2 timeout 300s }\n"
    )


def ipv4_packet(destination: str, protocol: int, port: int) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        40,
        0,
        0,
        64,
        protocol,
        0,
        ipaddress.IPv4Address("10.213.0.6").packed,
        ipaddress.IPv4Address(destination).packed,
    )
    return header + struct.pack("!HH", 40000, port) + b"\0" * 16


def test_violation_from_an_ipv4_packet() -> None:
    violation = violation_from_packet(ipv4_packet("198.18.1.2", 6, 8081), "x", NOW)
    assert (violation.destination, violation.port, violation.protocol) == (
        "198.18.1.2",
        8081,
        "tcp",
    )
    icmp = violation_from_packet(ipv4_packet("198.18.1.2", 1, 0), "x", NOW)
    assert (icmp.protocol, icmp.port) == ("icmp", None)


def test_violation_from_an_ipv6_packet() -> None:
    header = struct.pack(
        "!IHBB16s16s",
        6 << 28,
        8,
        17,
        64,
        ipaddress.IPv6Address("2001:db8::2").packed,
        ipaddress.IPv6Address("2001:db8:1::2").packed,
    )
    violation = violation_from_packet(header + struct.pack("!HH", 5353, 53), "x", NOW)
    assert violation.target() == "[2001:db8:1::2]:53/udp"


def test_violation_error_lists_the_first_destinations_and_the_count() -> None:
    violations = [
        Violation(ViolationKind.PACKET, f"198.18.0.{n}", 443, "tcp", NOW, "r")
        for n in range(8)
    ] * 2
    error = EgressViolationError(violations)
    assert error.message.startswith("egress violation: 16 violations;")
    assert "198.18.0.0:443/tcp" in error.message
    assert "and 3 more" in error.message
    assert len(error.details) == 5
    assert exit_code_for(error) is ExitCode.ERR_EGRESS_VIOLATION
    assert exit_code_for(NoHealthyNodeError("x")) is ExitCode.ERR_JOB_FAILED


def responder(table: dict[str, list[str]]) -> tuple[DnsResponder, list[Violation]]:
    recorded: list[Violation] = []

    def lookup(name: str) -> list[ipaddress.IPv4Address] | None:
        if name not in table:
            return None
        return [ipaddress.IPv4Address(a) for a in table[name]]

    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    answerer = DnsResponder(
        sockets[0], sockets[1], lookup, lambda _: 300, recorded.append
    )
    for item in sockets:
        item.close()
    return answerer, recorded


def test_dns_answers_allowlisted_names_and_refuses_others() -> None:
    answerer, recorded = responder({"build.acme.com": ["198.18.0.7"]})

    reply = dns.message.from_wire(
        answerer.answer(dns.message.make_query("Build.Acme.com.", "A").to_wire()) or b""
    )
    assert reply.rcode() == dns.rcode.NOERROR
    assert [r.address for r in reply.answer[0]] == ["198.18.0.7"]
    assert reply.answer[0].ttl == 60

    empty = dns.message.from_wire(
        answerer.answer(dns.message.make_query("build.acme.com", "AAAA").to_wire())
        or b""
    )
    assert empty.rcode() == dns.rcode.NOERROR and empty.answer == []

    refused = dns.message.from_wire(
        answerer.answer(dns.message.make_query("evil.example", "A").to_wire()) or b""
    )
    assert refused.rcode() == dns.rcode.REFUSED
    assert [(v.kind, v.destination) for v in recorded] == [
        (ViolationKind.DNS, "evil.example")
    ]
    assert answerer.answer(b"\x00garbage") is None


def test_status_classification() -> None:
    thresholds = GatewayThresholds(
        degraded=timedelta(milliseconds=100), down=timedelta(seconds=1)
    )
    fast = Probe(1.0, 2.0)
    slow = Probe(1.0, 200.0)
    failed = Probe(None, None, "connect: connection refused")
    assert classify([fast, fast], thresholds) is NodeStatus.NOMINAL
    assert classify([fast, failed], thresholds) is NodeStatus.DEGRADED
    assert classify([slow, slow, fast], thresholds) is NodeStatus.DEGRADED
    assert classify([failed, failed], thresholds) is NodeStatus.DOWN
    assert classify([Probe(1.0, 1500.0)], thresholds) is NodeStatus.DOWN
    assert pick_nearest([]) is None


def test_schema_on_violation_and_gateway() -> None:
    assert Sandbox().on_violation == "fail"
    assert Sandbox.model_validate({"on_violation": "report"}).on_violation == "report"
    with pytest.raises(ValueError):
        Sandbox.model_validate({"on_violation": "ignore"})
    base = {
        "version": "4.2",
        "metadata": {"namespace": "acme", "owner": "o", "environment": "prod"},
        "pipeline": {"runtimes": [{"name": "build", "run_command": "make"}]},
    }
    config = PipelineConfig.model_validate(
        {
            **base,
            "gateway": {
                "nodes": [{"name": "US-East-1", "url": "https://us.acme.com"}],
                "thresholds": {"degraded": "50ms", "down": "2s"},
            },
        }
    )
    assert config.gateway is not None
    assert config.gateway.thresholds.down == timedelta(seconds=2)
    assert config.gateway.thresholds.probe_timeout == timedelta(seconds=3)
    for bad in [
        {"nodes": [{"name": "a", "url": "http://plain.acme.com"}]},
        {"nodes": []},
        {
            "nodes": [
                {"name": "a", "url": "https://a.acme.com"},
                {"name": "a", "url": "https://b.acme.com"},
            ]
        },
        {
            "nodes": [{"name": "a", "url": "https://a.acme.com"}],
            "thresholds": {"degraded": "2s", "down": "1s"},
        },
    ]:
        with pytest.raises(ValueError):
            PipelineConfig.model_validate({**base, "gateway": bad})


def test_default_resolver_uses_the_hosts_own_resolution(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # localhost comes from /etc/hosts: no packet leaves the machine.
    assert ipaddress.IPv4Address("127.0.0.1") in resolve_ipv4("localhost")

    # A failing lookup, without asking any DNS server for a name.
    def fail(*_: object, **__: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(LookupError, match=r"cannot resolve nowhere\.example"):
        resolve_ipv4("nowhere.example")
