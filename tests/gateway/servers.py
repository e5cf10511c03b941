"""Running a real gateway for a test (uvicorn in a thread of the test process,
on a free loopback port, shut down and joined afterwards), its configuration
file, and devdep-cli as a separate process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from devdep.gateway.server import Gateway, GatewayServer
from tests.support.oidc import OidcProvider

DEVDEP_CLI = str(Path(sys.executable).parent / "devdep-cli")


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def gateway_in_thread(gateway: Gateway) -> Iterator[str]:
    """Serve `gateway` until the block ends; yields its URL."""
    server = GatewayServer(gateway)
    url = server.bind()
    thread = threading.Thread(target=server.run, name="gateway", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.02)
        yield url
    finally:
        server.request_shutdown()
        thread.join(timeout=20)
        gateway.close()


def gateway_yaml(
    oidc_provider: OidcProvider, store: Path, port: int, **overrides: object
) -> str:
    document: dict[str, object] = {
        "listen": f"127.0.0.1:{port}",
        "store": f"sqlite:///{store}",
        "session_minutes": 15,
        "identity": {
            "allowed_domains": ["acme.corp"],
            "issuers": [oidc_provider.issuer_config("corp")],
        },
        **overrides,
    }
    return yaml.safe_dump(document)


def devdep_cli(
    *arguments: str, cache_home: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run devdep-cli as a user would, with its cache under `cache_home`."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DEVDEP_", "XDG_", "ACTIONS_"))
    }
    environment["XDG_CACHE_HOME"] = str(cache_home)
    environment["NO_COLOR"] = "1"
    environment.update(extra_env or {})
    return subprocess.run(
        [DEVDEP_CLI, *arguments],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )
