"""The network sandbox against the real kernel: namespaces, veth, tap, nftables.

A "guest" here is a namespace wired to the run's tap the way QEMU would be
(see tests/netsandbox/topology.py). Every address the tests reach lives in a
namespace the test created.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from devdep.config.schema import Sandbox
from devdep.errors import ExitCode, exit_code_for
from devdep.netsandbox import (
    EgressPolicyError,
    EgressViolationError,
    NetworkSandbox,
    NetworkSetupError,
    ViolationKind,
    reap_leftovers,
)
from devdep.netsandbox import sandbox as sandbox_module
from devdep.netsandbox.netns import socket_in_netns
from devdep.netsandbox.violations import wait_for
from tests.netsandbox.conftest import RUN_ID_PREFIX
from tests.netsandbox.topology import (
    Topology,
    connect_from,
    in_guest,
    leftovers,
    sh,
)

pytestmark = pytest.mark.integration

BUILD_HOST = "build.example.test"


def allowlist(*rules: str, dns: bool = False) -> Sandbox:
    return Sandbox.model_validate(
        {
            "network_sandbox": "allowlist",
            "allow_dns_resolution": dns,
            "egress": {"allow": list(rules)},
        }
    )


def names_resolving_to(table: dict[str, str]):  # type: ignore[no-untyped-def]
    def resolve(hostname: str) -> list[ipaddress.IPv4Address]:
        if hostname not in table:
            raise LookupError(f"{hostname} is not a test name")
        return [ipaddress.IPv4Address(table[hostname])]

    return resolve


@pytest.fixture
def resolv_conf_for() -> Iterator[list[str]]:
    """`ip netns exec` binds /etc/netns/<ns>/resolv.conf over /etc/resolv.conf;
    the namespaces listed here get theirs removed after the test."""
    namespaces: list[str] = []
    parent = Path("/etc/netns")
    parent_existed = parent.exists()
    yield namespaces
    for name in namespaces:
        directory = parent / name
        (directory / "resolv.conf").unlink(missing_ok=True)
        directory.rmdir()
    if not parent_existed and parent.exists() and not any(parent.iterdir()):
        parent.rmdir()


def test_allowlisted_port_answers_and_another_port_is_a_violation(
    topology: Topology, run_id: str
) -> None:
    host, address = topology.add_host()
    allowed = topology.listen(host, address, 8080)
    refused = topology.listen(host, address, 8081)
    topology.count_syns(host, [8080, 8081])

    with NetworkSandbox.create(
        run_id, allowlist(f"{address}:8080"), uplink_netns=topology.uplink
    ) as sandbox:
        assert sandbox.tap == "dd-tap0"
        assert sandbox.guest is not None
        guest = topology.attach_guest(sandbox.netns, sandbox.tap, sandbox.guest)
        first_seen = threading.Event()
        sandbox.watch(lambda violation: first_seen.set())

        answer = in_guest(guest, "curl", "-sS", "-m", "5", f"http://{address}:8080/")
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout == "hello from the test host\n"

        blocked = in_guest(guest, "curl", "-sS", "-m", "2", f"http://{address}:8081/")
        assert blocked.returncode != 0

        assert first_seen.wait(timeout=5)
        violations = sandbox.violations()
        assert {(v.destination, v.port, v.protocol) for v in violations} == {
            (address, 8081, "tcp")
        }
        assert all(v.kind is ViolationKind.PACKET for v in violations)

        with pytest.raises(EgressViolationError) as raised:
            sandbox.raise_for_violations()
        assert f"{address}:8081/tcp" in raised.value.message
        assert exit_code_for(raised.value) is ExitCode.ERR_EGRESS_VIOLATION

    # The not-allowlisted port never saw a single SYN: the drop is in the run's
    # namespace, before the uplink.
    counts = topology.syn_counts(host)
    assert counts[8081] == 0
    assert counts[8080] >= 1
    assert refused.accepted == 0
    assert allowed.accepted == 1


def test_dns_answers_allowlisted_names_only_and_never_forwards(
    topology: Topology, run_id: str, resolv_conf_for: list[str]
) -> None:
    host, address = topology.add_host()
    topology.listen(host, address, 8080)
    # Any DNS packet that left the run's namespace would pass the uplink.
    sh(
        "ip", "netns", "exec", topology.uplink, "nft", "-f", "-",
        stdin="table inet dnswatch {\n chain watch {\n"
        "  type filter hook prerouting priority -300; policy accept;\n"
        "  udp dport 53 counter\n  tcp dport 53 counter\n }\n}\n",
    )  # fmt: skip

    sandbox = NetworkSandbox.create(
        run_id,
        allowlist(f"{BUILD_HOST}:8080", dns=True),
        uplink_netns=topology.uplink,
        resolver=names_resolving_to({BUILD_HOST: address}),
    )
    try:
        assert sandbox.guest is not None and sandbox.tap is not None
        assert sandbox.guest.dns_server == sandbox.guest.gateway
        assert sandbox.kernel_ip_argument() == (
            f"ip={sandbox.guest.address.ip}::{sandbox.guest.gateway}:"
            f"255.255.255.252::eth0:off:{sandbox.guest.gateway}"
        )
        guest = topology.attach_guest(sandbox.netns, sandbox.tap, sandbox.guest)
        server = str(sandbox.guest.dns_server)

        answer = _query(guest, server, BUILD_HOST, "A", tcp=False)
        assert answer.rcode() == dns.rcode.NOERROR
        assert [item.address for item in answer.answer[0]] == [address]
        assert _query(guest, server, BUILD_HOST, "A", tcp=True).answer
        assert _query(guest, server, BUILD_HOST, "AAAA", tcp=False).answer == []

        refused = _query(guest, server, "elsewhere.example.test", "A", tcp=False)
        assert refused.rcode() == dns.rcode.REFUSED

        # The guest's own resolver path, as a build would use it: curl by name.
        directory = Path("/etc/netns") / guest
        directory.mkdir(parents=True)
        resolv_conf_for.append(guest)
        (directory / "resolv.conf").write_text(f"nameserver {server}\n")
        by_name = in_guest(
            guest, "curl", "-sS", "-m", "5", f"http://{BUILD_HOST}:8080/"
        )
        assert by_name.returncode == 0, by_name.stderr

        dns_violations = [
            v for v in sandbox.violations() if v.kind is ViolationKind.DNS
        ]
        assert [v.destination for v in dns_violations] == ["elsewhere.example.test"]
        assert all(v.kind is ViolationKind.DNS for v in sandbox.violations())
    finally:
        sandbox.close()

    listing = ["nft", "-j", "list", "table", "inet", "dnswatch"]
    watched = json.loads(sh("ip", "netns", "exec", topology.uplink, *listing))
    counters = [
        expression["counter"]["packets"]
        for item in watched["nftables"]
        if "rule" in item
        for expression in item["rule"]["expr"]
        if "counter" in expression
    ]
    assert counters == [0, 0]


def _query(
    netns: str, server: str, name: str, kind: str, *, tcp: bool
) -> dns.message.Message:
    query = dns.message.make_query(name, kind)
    if tcp:
        connection = socket_in_netns(netns, socket.AF_INET, socket.SOCK_STREAM)
        connection.settimeout(3)
        connection.connect((server, 53))
        # dnspython takes only non-blocking sockets of the caller's.
        connection.setblocking(False)
        with connection:
            return dns.query.tcp(query, server, timeout=3, sock=connection)
    datagram = socket_in_netns(netns, socket.AF_INET, socket.SOCK_DGRAM)
    datagram.setblocking(False)
    with datagram:
        return dns.query.udp(query, server, timeout=3, sock=datagram)


def test_without_dns_resolution_there_is_no_resolver(
    topology: Topology, run_id: str
) -> None:
    _, address = topology.add_host()
    with NetworkSandbox.create(
        run_id, allowlist(f"{address}:8080"), uplink_netns=topology.uplink
    ) as sandbox:
        assert sandbox.guest is not None and sandbox.tap is not None
        assert sandbox.guest.dns_server is None
        assert sandbox.kernel_ip_argument() is not None
        assert not sandbox.kernel_ip_argument().endswith(str(sandbox.guest.gateway))
        guest = topology.attach_guest(sandbox.netns, sandbox.tap, sandbox.guest)
        with pytest.raises(dns.exception.Timeout):
            _query(guest, str(sandbox.guest.gateway), BUILD_HOST, "A", tcp=False)
        assert wait_for(lambda: sandbox.violation_count > 0, timeout=5)
        assert sandbox.violations()[0].port == 53


def test_metadata_address_and_host_addresses_are_unreachable(
    topology: Topology, run_id: str
) -> None:
    host, address = topology.add_host()
    # A stand-in metadata service inside the test host's namespace, routed
    # from the uplink, so the test reaches no address it did not create.
    sh("ip", "-n", host, "addr", "add", "169.254.169.254/32", "dev", "lo")
    sh("ip", "-n", topology.uplink, "route", "add", "169.254.169.254/32", "via",
       address)  # fmt: skip
    metadata = topology.listen(host, "169.254.169.254", 80)
    uplink_address = str(ipaddress.IPv4Address(address) - 1)
    host_service = topology.listen(topology.uplink, uplink_address, 80)
    ordinary = topology.listen(host, address, 80)

    # A rule as broad as the whole internet still does not open them.
    with NetworkSandbox.create(
        run_id, allowlist("0.0.0.0/0:80"), uplink_netns=topology.uplink
    ) as sandbox:
        assert sandbox.guest is not None and sandbox.tap is not None
        guest = topology.attach_guest(sandbox.netns, sandbox.tap, sandbox.guest)

        assert connect_from(guest, address, 80)
        assert not connect_from(guest, "169.254.169.254", 80)
        assert not connect_from(guest, uplink_address, 80)
        assert sandbox.addresses is not None
        veth_host_end = str(sandbox.addresses.uplink.ip)
        assert not connect_from(guest, veth_host_end, 80)
        assert not connect_from(guest, str(sandbox.guest.gateway), 22)

        assert wait_for(lambda: sandbox.violation_count >= 4, timeout=5)
        by_destination = {v.destination: v.reason for v in sandbox.violations()}
        assert by_destination["169.254.169.254"] == "always-blocked"
        assert by_destination[uplink_address] == "always-blocked"
        assert by_destination[veth_host_end] == "always-blocked"
        assert by_destination[str(sandbox.guest.gateway)] == "host"
    assert metadata.accepted == 0
    assert host_service.accepted == 0
    assert ordinary.accepted == 1


def test_an_explicit_rule_opens_an_always_blocked_address(
    topology: Topology, run_id: str
) -> None:
    host, address = topology.add_host()
    sh("ip", "-n", host, "addr", "add", "169.254.169.254/32", "dev", "lo")
    sh("ip", "-n", topology.uplink, "route", "add", "169.254.169.254/32", "via",
       address)  # fmt: skip
    metadata = topology.listen(host, "169.254.169.254", 80)
    with NetworkSandbox.create(
        run_id, allowlist("169.254.169.254:80"), uplink_netns=topology.uplink
    ) as sandbox:
        assert sandbox.guest is not None and sandbox.tap is not None
        guest = topology.attach_guest(sandbox.netns, sandbox.tap, sandbox.guest)
        assert connect_from(guest, "169.254.169.254", 80)
        assert sandbox.violations() == []
    assert metadata.accepted == 1


def test_ipv6_is_dropped_and_recorded(topology: Topology, run_id: str) -> None:
    host, _ = topology.add_host()
    sh("ip", "netns", "exec", host, "sysctl", "-q", "-w",
       "net.ipv6.conf.all.disable_ipv6=0")  # fmt: skip
    sh("ip", "-n", host, "addr", "add", "2001:db8:1::2/64", "dev", "eth0", "nodad")
    with NetworkSandbox.create(
        run_id, allowlist("0.0.0.0/0"), uplink_netns=topology.uplink
    ) as sandbox:
        assert sandbox.guest is not None and sandbox.tap is not None
        guest = topology.attach_guest(sandbox.netns, sandbox.tap, sandbox.guest)
        sh("ip", "-n", guest, "addr", "add", "2001:db8:9::2/64", "dev", "eth0", "nodad")
        sh("ip", "-n", guest, "-6", "route", "add", "default", "dev", "eth0")
        sh("ip", "-n", guest, "-6", "neigh", "replace", "2001:db8:9::1", "lladdr",
           "02:00:00:00:00:01", "dev", "eth0")  # fmt: skip
        sh("ip", "-n", guest, "-6", "route", "replace", "default", "via",
           "2001:db8:9::1", "dev", "eth0")  # fmt: skip

        probe = socket_in_netns(guest, socket.AF_INET6, socket.SOCK_STREAM)
        probe.settimeout(1)
        with probe, pytest.raises(OSError):
            probe.connect(("2001:db8:1::2", 443))

        assert wait_for(
            lambda: any(v.reason == "ipv6" for v in sandbox.violations()), timeout=5
        )
        ipv6 = [v for v in sandbox.violations() if v.reason == "ipv6"]
        assert (ipv6[0].destination, ipv6[0].port, ipv6[0].protocol) == (
            "2001:db8:1::2",
            443,
            "tcp",
        )


def test_spoofed_source_address_and_mac_are_dropped(
    topology: Topology, run_id: str
) -> None:
    host, address = topology.add_host()
    listener = topology.listen(host, address, 8080)
    with NetworkSandbox.create(
        run_id, allowlist(f"{address}:8080"), uplink_netns=topology.uplink
    ) as sandbox:
        assert sandbox.guest is not None and sandbox.tap is not None
        guest = topology.attach_guest(sandbox.netns, sandbox.tap, sandbox.guest)

        sh("ip", "-n", guest, "addr", "add", "192.0.2.77/32", "dev", "eth0")
        spoofed = socket_in_netns(guest, socket.AF_INET, socket.SOCK_STREAM)
        spoofed.settimeout(1)
        spoofed.bind(("192.0.2.77", 0))
        with spoofed, pytest.raises(OSError):
            spoofed.connect((address, 8080))
        assert wait_for(
            lambda: any(v.reason == "spoofed-ip" for v in sandbox.violations()), 5
        )

        sh("ip", "-n", guest, "link", "set", "eth0", "address", "02:00:00:00:00:66")
        assert not connect_from(guest, address, 8080)
        assert wait_for(
            lambda: any(v.reason == "spoofed-mac" for v in sandbox.violations()), 5
        )
    assert listener.accepted == 0


def test_isolated_gives_a_namespace_with_only_lo(run_id: str) -> None:
    with NetworkSandbox.create(run_id, Sandbox()) as sandbox:
        assert sandbox.tap is None
        assert sandbox.guest is None
        assert sandbox.kernel_ip_argument() is None
        links = json.loads(sh("ip", "-n", sandbox.netns, "-j", "link", "show"))
        assert [link["ifname"] for link in links] == ["lo"]
        inside = subprocess.run(
            [*sandbox.command_prefix(), "ip", "-o", "link"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert inside.stdout.count("\n") == 1 and ": lo:" in inside.stdout


def test_hostname_pins_are_refreshed(topology: Topology, run_id: str) -> None:
    first, second = "198.18.200.1", "198.18.200.2"
    answers = iter([first] + [second] * 100)
    with NetworkSandbox.create(
        run_id,
        allowlist(f"{BUILD_HOST}:443"),
        uplink_netns=topology.uplink,
        resolver=lambda name: [ipaddress.IPv4Address(next(answers))],
        pin_timeout=sandbox_module.timedelta(seconds=2),
    ) as sandbox:
        assert _set_elements(sandbox.netns, "host_0") == [first]
        assert wait_for(lambda: _set_elements(sandbox.netns, "host_0") == [second], 10)


def _set_elements(netns: str, set_name: str) -> list[str]:
    listing = ["nft", "-j", "list", "set", "inet", "devdep", set_name]
    document = json.loads(sh("ip", "netns", "exec", netns, *listing))
    for item in document["nftables"]:
        if "set" in item:
            return [
                element["elem"]["val"] if isinstance(element, dict) else element
                for element in item["set"].get("elem", [])
            ]
    return []


def test_an_unresolvable_name_fails_closed(topology: Topology, run_id: str) -> None:
    with pytest.raises(EgressPolicyError, match="does not resolve"):
        NetworkSandbox.create(
            run_id,
            allowlist("nowhere.example.test:443"),
            uplink_netns=topology.uplink,
            resolver=names_resolving_to({}),
        )
    assert leftovers(run_id, topology.uplink) == []


def test_rules_that_cannot_be_applied_fail_closed(
    topology: Topology, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox_module, "render", lambda spec: "table inet {\n")
    with pytest.raises(NetworkSetupError) as raised:
        NetworkSandbox.create(
            run_id, allowlist("198.18.1.2:80"), uplink_netns=topology.uplink
        )
    assert "nft" in raised.value.message
    assert exit_code_for(raised.value) is ExitCode.ERR_EGRESS_VIOLATION
    assert leftovers(run_id, topology.uplink) == []


def test_a_killed_run_is_reaped(topology: Topology, run_id: str) -> None:
    _, address = topology.add_host()
    script = (
        "import sys\n"
        "from devdep.config.schema import Sandbox\n"
        "from devdep.netsandbox import NetworkSandbox\n"
        "sandbox = NetworkSandbox.create(sys.argv[1], Sandbox.model_validate("
        "{'network_sandbox': 'allowlist', 'allow_dns_resolution': True, "
        "'egress': {'allow': [sys.argv[3] + ':8080']}}), uplink_netns=sys.argv[2])\n"
        # A stand-in for the VMM, left running in the run's namespace.
        "import subprocess\n"
        "vmm = subprocess.Popen([*sandbox.command_prefix(), 'sleep', '600'])\n"
        "print(vmm.pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    survivor = f"{RUN_ID_PREFIX}alive{os.getpid() % 1000}"
    with subprocess.Popen(
        [sys.executable, "-c", script, run_id, topology.uplink, address],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as creator:
        try:
            assert creator.stdout is not None
            vmm_pid = int(creator.stdout.readline())
            alive = NetworkSandbox.create(
                survivor, allowlist(f"{address}:8080"), uplink_netns=topology.uplink
            )
        finally:
            creator.send_signal(signal.SIGKILL)
            creator.wait()

    try:
        assert leftovers(run_id, topology.uplink) != []
        removed = reap_leftovers(
            [survivor], uplink_netns=topology.uplink, run_id_prefix=RUN_ID_PREFIX
        )
        assert f"netns devdep-{run_id}" in removed
        assert f"process {vmm_pid} in devdep-{run_id}" in removed
        assert wait_for(lambda: not Path(f"/proc/{vmm_pid}").exists(), 5)
        assert any(item.startswith("nft table") for item in removed)
        assert leftovers(run_id, topology.uplink) == []
        assert leftovers(survivor, topology.uplink) != []
    finally:
        alive.close()
    assert leftovers(survivor, topology.uplink) == []
    assert reap_leftovers([], uplink_netns=topology.uplink, run_id_prefix=run_id) == []


def test_two_runs_get_distinct_slots_and_cannot_reach_each_other(
    topology: Topology, run_id: str
) -> None:
    other_id = f"{run_id}b"
    with (
        NetworkSandbox.create(
            run_id, allowlist("0.0.0.0/0"), uplink_netns=topology.uplink
        ) as first,
        NetworkSandbox.create(
            other_id, allowlist("0.0.0.0/0"), uplink_netns=topology.uplink
        ) as second,
    ):
        assert first.guest is not None and second.guest is not None
        assert first.addresses is not None and second.addresses is not None
        assert first.addresses.slot != second.addresses.slot
        assert first.tap is not None and second.tap is not None
        guest = topology.attach_guest(first.netns, first.tap, first.guest)
        other_guest = topology.attach_guest(second.netns, second.tap, second.guest)
        target = str(second.guest.address.ip)
        topology.listen(other_guest, target, 8080)
        assert not connect_from(guest, target, 8080)
        assert wait_for(lambda: first.violation_count > 0, 5)
        assert first.violations()[0].reason == "always-blocked"
    assert leftovers(other_id, topology.uplink) == []
