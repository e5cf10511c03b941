"""A throwaway PostgreSQL cluster on loopback, started by the tests themselves.

Debian's postgresql package provides the server binaries under
/usr/lib/postgresql/<version>/bin; `initdb` makes a fresh cluster in a
temporary directory owned by the `postgres` user (the server refuses to run
as root), `pg_ctl` starts it on a free loopback port and stops it afterwards.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

SERVER_USER = "postgres"
DATABASE_USER = "devdep"


def postgresql_binaries() -> Path | None:
    """The newest installed server's bin directory, if any."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parent.parent.name),
    )
    return versions[-1].parent if versions else None


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run_as_server_user(command: list[str]) -> None:
    result = subprocess.run(
        command,
        user=SERVER_USER,
        group=SERVER_USER,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/tmp"},
        cwd="/tmp",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}"
        )


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    """Start a PostgreSQL cluster; yield its postgresql+psycopg:// URL."""
    binaries = postgresql_binaries()
    if binaries is None:
        pytest.fail("PostgreSQL is not installed: run 'make test', which installs it")
    if os.geteuid() != 0:
        pytest.skip("starting a PostgreSQL cluster as the postgres user needs root")

    server = pwd.getpwnam(SERVER_USER)
    root = Path(tempfile.mkdtemp(prefix="devdep-postgresql-"))
    os.chown(root, server.pw_uid, server.pw_gid)
    data = root / "data"
    log = root / "server.log"
    port = _free_loopback_port()

    _run_as_server_user(
        [
            str(binaries / "initdb"),
            f"--pgdata={data}",
            f"--username={DATABASE_USER}",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        ]
    )
    try:
        _run_as_server_user(
            [
                str(binaries / "pg_ctl"),
                "start",
                f"--pgdata={data}",
                f"--log={log}",
                "--wait",
                "--timeout=60",
                "--options",
                f"-c listen_addresses=127.0.0.1 -c port={port} "
                f"-c unix_socket_directories={root} -c fsync=off",
            ]
        )
        yield f"postgresql+psycopg://{DATABASE_USER}@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            _run_as_server_user(
                [
                    str(binaries / "pg_ctl"),
                    "stop",
                    f"--pgdata={data}",
                    "--mode=fast",
                    "--wait",
                ]
            )
        shutil.rmtree(root, ignore_errors=True)
