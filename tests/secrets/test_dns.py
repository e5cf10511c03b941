"""A secrets address whose host name does not resolve, for real: the CLI runs in
a network namespace of its own whose resolver is its own, silent, loopback, so
the lookup fails without a packet leaving the namespace."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devdep.errors import ExitCode

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "devdep-cli")


@pytest.fixture
def isolated_netns() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to make a network namespace")
    name = f"devdep-dns-{secrets.token_hex(4)}"
    # `ip netns exec` bind-mounts /etc/netns/<name>/resolv.conf over
    # /etc/resolv.conf for the command it runs.
    config = Path("/etc/netns") / name
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        config.mkdir(parents=True)
        (config / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1\n")
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)
        shutil.rmtree(config, ignore_errors=True)
        # Leave /etc/netns as found: gone unless something else uses it.
        with contextlib.suppress(OSError):
            Path("/etc/netns").rmdir()


def test_validate_exits_201_naming_the_host_that_does_not_resolve(
    isolated_netns: str, tmp_path: Path
) -> None:
    config = tmp_path / "devdep.yaml"
    config.write_text(
        """version: "4.2"
metadata: {namespace: acme, owner: ops, environment: production}
pipeline:
  runtimes:
    - name: build
      run_command: "true"
  secrets:
    provider: hashicorp-vault
    address: https://vault.devdep-test.invalid:8200
    mappings:
      - env: DB_PASSKEY
        source: prod/database/api-user/password
"""
    )
    environment = {**os.environ, "DEVDEP_VAULT_TOKEN": "s.unused"}

    child = subprocess.run(
        ["ip", "netns", "exec", isolated_netns, CLI, "validate", "--file", str(config)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert child.returncode == ExitCode.ERR_VAULT_MISMATCH, child.stderr
    assert (
        "error: cannot resolve DB_PASSKEY <- prod/database/api-user/password: the "
        "host name vault.devdep-test.invalid of https://vault.devdep-test.invalid:8200 "
        "does not resolve"
    ) in child.stderr
