"""The egress sandbox around real micro-VMs, through the runner and `deploy
--local`: the run's namespace, tap and rules, the guest's own /init applying
`ip=`, violations ending the run with 401, and leftovers reaped after a SIGKILL.

Each test builds its own world of namespaces (tests/netsandbox/topology.py):
an uplink namespace stands in for the host's root namespace (the host agent's
DEVDEP_UPLINK_NETNS), with test hosts on 198.18.0.0/15 behind it. Nothing is
sent to any address outside this machine. Each boot costs about 10 s under
TCG, so each test checks as much as one boot can show.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devdep.config.loader import load_config
from devdep.errors import ExitCode
from devdep.guest.protocol import AgentHello
from devdep.images.boot import ImageStore
from devdep.netsandbox.addressing import RunNames
from devdep.runner.local import LocalRunner, RunOptions
from devdep.runner.network import UPLINK_NETNS_VARIABLE, NetworkSettings
from tests.netsandbox.topology import Topology, sh
from tests.vmm.images import ensure_boot_spec, qemu_processes_under

pytestmark = pytest.mark.integration

DEVDEP_CLI = str(Path(sys.executable).parent / "devdep-cli")
BUILD_HOST = "build.example.test"


@pytest.fixture(scope="module", autouse=True)
def _images() -> None:
    ensure_boot_spec()


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
def states() -> Iterator[Path]:
    """A short directory for state directories: a run's socket paths must fit
    in 108 bytes, which pytest's tmp_path can exceed."""
    directory = Path(tempfile.mkdtemp(prefix="ddnet-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def write_pipeline(directory: Path, steps: list[str], sandbox: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    document = {
        "version": "4.2",
        "metadata": {"namespace": "test", "owner": "test-owners", "environment": "dev"},
        "pipeline": {
            "runtimes": [{"name": "build", "run_command": steps, "sandbox": sandbox}]
        },
    }
    # JSON is YAML: no quoting to get wrong in the steps' shell.
    (directory / "devdep.yaml").write_text(json.dumps(document, indent=2))


def leftovers(run_id: str, uplink: str) -> list[str]:
    """What of a run is still on the machine: its namespace (which holds its
    tap and nft table) and either end of its veth pair."""
    names = RunNames.for_run(run_id)
    found = []
    if names.netns in sh("ip", "netns", "list").split():
        found.append(f"netns {names.netns}")
    for netns in (uplink, None):
        prefix = ["ip"] if netns is None else ["ip", "-n", netns]
        for line in sh(*prefix, "-o", "link", "show").splitlines():
            if names.uplink_veth in line or names.run_veth in line:
                found.append(line)
    return found


def run_ids(state: Path) -> list[str]:
    return sorted(log.stem for log in (state / "reports").glob("r-*.log"))


class Recorder:
    def __init__(self) -> None:
        self.chunks: dict[int, bytes] = {}

    def phase(self, description: str) -> None:
        pass

    def ready(self, runtime: str, hello: AgentHello, boot_seconds: float) -> None:
        pass

    def step_started(self, runtime: str, index: int, count: int, command: str) -> None:
        pass

    def output(self, runtime: str, index: int, stream: str, chunk: bytes) -> None:
        self.chunks[index] = self.chunks.get(index, b"") + chunk

    def step_finished(self, runtime: str, index: int, status: int) -> None:
        pass

    def text(self, index: int) -> str:
        return self.chunks.get(index, b"").decode()


_started: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _reap_deployments() -> Iterator[None]:
    yield
    while _started:
        process = _started.pop()
        if process.poll() is None:
            process.kill()
        process.communicate()


def deploy(workspace: Path, state: Path, uplink: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [DEVDEP_CLI, "deploy", "--local", "--env=dev"],
        cwd=workspace,
        env={
            **os.environ,
            "DEVDEP_STATE_DIR": str(state),
            UPLINK_NETNS_VARIABLE: uplink,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _started.append(process)
    return process


def test_dns_allowlist_and_blocked_addresses_in_a_reporting_run(
    topology: Topology, tmp_path: Path, states: Path
) -> None:
    host, address = topology.add_host()
    allowed = topology.listen(host, address, 8080)
    # A stand-in metadata service, inside the test host's namespace.
    sh("ip", "-n", host, "addr", "add", "169.254.169.254/32", "dev", "lo")
    sh("ip", "-n", topology.uplink, "route", "add", "169.254.169.254/32", "via",
       address)  # fmt: skip
    metadata = topology.listen(host, "169.254.169.254", 80)
    uplink_address = str(ipaddress.IPv4Address(address) - 1)
    host_service = topology.listen(topology.uplink, uplink_address, 80)
    # Any DNS packet that left the run's namespace would pass the uplink.
    sh(
        "ip", "netns", "exec", topology.uplink, "nft", "-f", "-",
        stdin="table inet dnswatch {\n chain watch {\n"
        "  type filter hook prerouting priority -300; policy accept;\n"
        "  udp dport 53 counter\n  tcp dport 53 counter\n }\n}\n",
    )  # fmt: skip

    workspace = tmp_path / "workspace"
    status = 'status() { curl -sS -m 3 "$1" >/dev/null 2>&1; echo "$2: $?"; }; '
    write_pipeline(
        workspace,
        [
            f"curl -sS -m 10 http://{BUILD_HOST}:8080/",
            "cat /etc/resolv.conf; ls /sys/class/net",
            status
            + "status http://elsewhere.example.test/ other-name; "
            + "status http://169.254.169.254/ metadata; "
            + f"status http://{uplink_address}/ host",
        ],
        {
            "network_sandbox": "allowlist",
            "allow_dns_resolution": True,
            "on_violation": "report",
            "egress": {"allow": [f"{BUILD_HOST}:8080", "0.0.0.0/0:80"]},
        },
    )
    recorder = Recorder()
    runner = LocalRunner(
        load_config(workspace / "devdep.yaml"),
        ImageStore(),
        recorder,
        RunOptions(
            environment="dev",
            workspace=workspace,
            artifacts_root=tmp_path / "artifacts",
            state_dir=states / "state",
        ),
        network_settings=NetworkSettings(
            uplink_netns=topology.uplink,
            resolver=lambda name: (
                [ipaddress.IPv4Address(address)] if name == BUILD_HOST else []
            ),
        ),
    )
    try:
        summary = runner.run()
    finally:
        left = leftovers(runner.run_id, topology.uplink)

    assert recorder.text(1) == "hello from the test host\n"
    resolv_conf, interfaces = recorder.text(2), recorder.text(2).split()
    assert "nameserver 10.213." in resolv_conf
    assert "eth0" in interfaces and "lo" in interfaces
    results = dict(line.split(": ", 1) for line in recorder.text(3).splitlines())
    assert results == {"other-name": "6", "metadata": "28", "host": "28"}

    assert summary.outcome == "succeeded"
    network = summary.runtimes[0].network
    assert network is not None and network["mode"] == "allowlist"
    violations = network["violations"]
    assert isinstance(violations, list)
    targets = {(v["kind"], v["destination"], v["port"]) for v in violations}
    assert ("dns", "elsewhere.example.test", 53) in targets
    assert ("packet", "169.254.169.254", 80) in targets
    assert ("packet", uplink_address, 80) in targets
    assert network["violation_count"] == len(violations)

    assert allowed.accepted == 1
    assert metadata.accepted == 0
    assert host_service.accepted == 0
    watched = sh("ip", "netns", "exec", topology.uplink, "nft", "list", "table",
                 "inet", "dnswatch")  # fmt: skip
    assert watched.count("counter packets 0 bytes 0") == 2, watched
    assert left == []
    assert qemu_processes_under(states) == []


def test_a_port_outside_the_allowlist_ends_the_run_with_401(
    topology: Topology, tmp_path: Path, states: Path
) -> None:
    host, address = topology.add_host()
    allowed = topology.listen(host, address, 8080)
    refused = topology.listen(host, address, 8081)
    topology.count_syns(host, [8080, 8081])
    workspace = tmp_path / "workspace"
    write_pipeline(
        workspace,
        [
            f"curl -sS -m 10 http://{address}:8080/",
            f"curl -sS -m 20 http://{address}:8081/; echo curl exited $?",
            "echo NEVER-RUN",
        ],
        {"network_sandbox": "allowlist", "egress": {"allow": [f"{address}:8080"]}},
    )
    state = states / "state"
    started = time.monotonic()
    process = deploy(workspace, state, topology.uplink)
    stdout, stderr = process.communicate(timeout=300)
    elapsed = time.monotonic() - started
    (run_id,) = run_ids(state)

    # An exit status keeps the low 8 bits: 401 reaches the parent as 145.
    assert process.returncode == ExitCode.ERR_EGRESS_VIOLATION & 0xFF, stderr.decode()
    assert b"error: egress violation: " in stderr
    assert b"hello from the test host" in stdout
    assert f"{address}:8081/tcp".encode() in stderr
    assert not re.search(rb"curl exited \d", stdout), "stopped at the violation"
    assert b"NEVER-RUN\n" not in stdout.replace(b"$ echo NEVER-RUN", b"")
    assert elapsed < 120
    assert topology.syn_counts(host)[8081] == 0
    assert allowed.accepted == 1
    assert refused.accepted == 0

    summary = json.loads((state / "reports" / f"{run_id}.json").read_text())
    assert summary["outcome"] == "failed"
    network = summary["runtimes"][0]["network"]
    assert network["violation_count"] >= 1
    assert network["violations"][0]["destination"] == address
    assert network["violations"][0]["port"] == 8081
    assert leftovers(run_id, topology.uplink) == []
    assert qemu_processes_under(states) == []


def test_a_killed_run_is_reaped_by_the_next_and_isolated_has_only_lo(
    topology: Topology, tmp_path: Path, states: Path
) -> None:
    _, address = topology.add_host()
    workspace = tmp_path / "killed"
    write_pipeline(
        workspace,
        ["echo started; sleep 600"],
        {"network_sandbox": "allowlist", "egress": {"allow": [f"{address}:8080"]}},
    )
    killed_state = states / "killed"
    process = deploy(workspace, killed_state, topology.uplink)
    assert process.stdout is not None
    seen = b""
    for line in process.stdout:
        seen += line
        if line.strip() == b"started":
            break
    else:
        pytest.fail(f"the step never started: {seen.decode()}")
    (killed_run,) = run_ids(killed_state)
    assert leftovers(killed_run, topology.uplink) != []
    process.send_signal(signal.SIGKILL)
    process.wait()
    # QEMU dies with its parent (its parent-death signal); the network stays.
    deadline = time.monotonic() + 10
    while qemu_processes_under(states) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert qemu_processes_under(states) == []
    left = leftovers(killed_run, topology.uplink)
    assert f"netns devdep-{killed_run}" in left
    assert any(RunNames.for_run(killed_run).uplink_veth in line for line in left)

    # The next host agent to start removes it, and an isolated VM sees no NIC.
    isolated = tmp_path / "isolated"
    write_pipeline(
        isolated,
        ["ls /sys/class/net; cat /proc/net/dev"],
        {"network_sandbox": "isolated"},
    )
    state = states / "isolated"
    process = deploy(isolated, state, topology.uplink)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr.decode()
    (run_id,) = run_ids(state)
    assert leftovers(killed_run, topology.uplink) == []
    assert leftovers(run_id, topology.uplink) == []
    # /proc/net/dev: one "<interface>: <counters>" line per interface.
    devices = re.findall(r"^\s*([\w.-]+):\s+\d", stdout.decode(), re.MULTILINE)
    assert devices == ["lo"], stdout.decode()
    assert b"eth0" not in stdout
    assert f"netns devdep-{killed_run}" in stderr.decode()
