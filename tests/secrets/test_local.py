"""The local provider: encrypted at rest, private files, values never on argv."""

from __future__ import annotations

import json
import os
import pty
import select
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from devdep.config.schema import Secrets
from devdep.errors import ExitCode, exit_code_for
from devdep.secrets import (
    LocalSecretStore,
    LocalStoreError,
    SecretPathMissing,
    SecretSession,
)
from tests.secrets.conftest import canary
from tests.secrets.leaks import find_leaks

CLI = [str(Path(sys.executable).parent / "devdep-cli")]


@pytest.fixture
def homes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    env = {
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield env


@pytest.fixture
def store(homes: dict[str, str]) -> LocalSecretStore:
    return LocalSecretStore.default(homes)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_value_round_trips_and_each_set_is_a_new_version(
    store: LocalSecretStore,
) -> None:
    value = canary()

    assert store.set("prod/db/password", value) == 1
    assert store.set("prod/db/password", value + b"2") == 2
    store.set("prod/api/token", b"other")

    stored = store.get("prod/db/password")
    assert stored is not None
    assert (stored.value, stored.version) == (value + b"2", 2)
    assert store.names() == ["prod/api/token", "prod/db/password"]
    assert store.remove("prod/api/token")
    assert not store.remove("prod/api/token")
    assert store.get("prod/api/token") is None


def test_files_are_private_and_hold_no_plaintext(
    store: LocalSecretStore, tmp_path: Path
) -> None:
    value = canary()
    store.set("prod/db/password", value)

    assert mode(store.key_path) == 0o600
    assert mode(store.store_path) == 0o600
    assert mode(store.key_path.parent) == 0o700
    assert mode(store.store_path.parent) == 0o700
    assert store.key_path.parent != store.store_path.parent
    assert find_leaks(value, [tmp_path]) == []


def test_the_key_is_created_with_0600_even_under_a_permissive_umask(
    store: LocalSecretStore,
) -> None:
    previous = os.umask(0)
    try:
        store.set("a/b", b"value")
    finally:
        os.umask(previous)
    assert mode(store.key_path) == 0o600
    assert not [p for p in store.key_path.parent.iterdir() if p.name.startswith(".")]


def test_a_key_open_to_others_is_refused(store: LocalSecretStore) -> None:
    store.set("a/b", b"value")
    store.key_path.chmod(0o644)
    with pytest.raises(LocalStoreError, match="open to other users"):
        store.get("a/b")


def test_swapped_ciphertexts_do_not_decrypt(store: LocalSecretStore) -> None:
    store.set("a/one", b"first value")
    store.set("a/two", b"second value")
    document = json.loads(store.store_path.read_text())
    entries = document["secrets"]
    entries["a/one"], entries["a/two"] = entries["a/two"], entries["a/one"]
    store.store_path.write_text(json.dumps(document))

    with pytest.raises(LocalStoreError, match="cannot be decrypted"):
        store.get("a/one")


def test_a_session_resolves_local_mappings(homes: dict[str, str]) -> None:
    value = canary()
    LocalSecretStore.default(homes).set("prod/db/password", value)
    secrets = Secrets(
        provider="local",
        mappings=[{"env": "DB_PASSKEY", "source": "prod/db/password"}],  # type: ignore[list-item]
    )

    with SecretSession.open(
        secrets, run_id="r-0000000001", run_ttl=timedelta(minutes=1), env=homes
    ) as session:
        assert [s.name for s in session.secrets] == ["DB_PASSKEY"]
        assert session.secrets[0].read() == value
        assert session.secrets[0].version == 1
        assert session.redactor.redact(value) == b"***"


def test_a_missing_local_secret_is_a_vault_mismatch(homes: dict[str, str]) -> None:
    secrets = Secrets(
        provider="local",
        mappings=[{"env": "DB_PASSKEY", "source": "prod/db/password"}],  # type: ignore[list-item]
    )
    with pytest.raises(SecretPathMissing) as raised:
        SecretSession.open(
            secrets, run_id="r-0000000002", run_ttl=timedelta(minutes=1), env=homes
        )
    assert exit_code_for(raised.value) is ExitCode.ERR_VAULT_MISMATCH
    assert "DB_PASSKEY <- prod/db/password" in raised.value.message
    assert (
        raised.value.hint == "store it with 'devdep-cli secrets set prod/db/password'"
    )


# --- the CLI ---------------------------------------------------------------


def run_cli(
    homes: dict[str, str], *args: str, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*CLI, *args],
        input=stdin,
        capture_output=True,
        env={**os.environ, **homes},
        check=False,
        timeout=60,
    )


def test_set_reads_stdin_and_ls_shows_names_only(homes: dict[str, str]) -> None:
    value = canary()

    stored = run_cli(homes, "secrets", "set", "prod/db/password", stdin=value + b"\n")
    listed = run_cli(homes, "secrets", "ls")
    as_json = run_cli(homes, "secrets", "ls", "-o", "json")

    assert stored.returncode == 0, stored.stderr
    assert stored.stdout == b"stored prod/db/password (version 1)\n"
    assert listed.stdout == b"prod/db/password\n"
    assert json.loads(as_json.stdout) == {"ok": True, "names": ["prod/db/password"]}
    got = LocalSecretStore.default(homes).get("prod/db/password")
    assert got is not None and got.value == value  # the final newline dropped
    for output in (stored, listed, as_json):
        assert value not in output.stdout + output.stderr


def test_set_refuses_a_value_on_the_command_line(homes: dict[str, str]) -> None:
    refused = run_cli(homes, "secrets", "set", "prod/db/password", "hunter2")
    assert refused.returncode == ExitCode.ERR_USAGE
    assert b"unexpected extra argument" in refused.stderr.lower()
    assert LocalSecretStore.default(homes).names() == []


def test_the_value_is_never_in_the_processes_argv_or_environment(
    homes: dict[str, str],
) -> None:
    value = canary()
    process = subprocess.Popen(
        [*CLI, "secrets", "set", "prod/db/password"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **homes},
    )
    try:
        assert process.stdin is not None
        process.stdin.write(value)
        process.stdin.flush()
        # The process now holds the value and waits for the end of stdin.
        time.sleep(1.0)
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{process.pid}/environ").read_bytes()
        out, err = process.communicate(timeout=60)  # closes stdin: end of value
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert value not in cmdline and value not in environ
    assert value not in out + err


def test_rm_removes_and_a_second_rm_is_a_usage_error(homes: dict[str, str]) -> None:
    run_cli(homes, "secrets", "set", "a/b", stdin=b"value")
    removed = run_cli(homes, "secrets", "rm", "a/b")
    again = run_cli(homes, "secrets", "rm", "a/b")
    assert removed.returncode == 0 and removed.stdout == b"removed a/b\n"
    assert again.returncode == ExitCode.ERR_USAGE
    assert b"no secret named a/b" in again.stderr


def test_an_empty_value_is_refused(homes: dict[str, str]) -> None:
    refused = run_cli(homes, "secrets", "set", "a/b", stdin=b"\n")
    assert refused.returncode == ExitCode.ERR_USAGE
    assert b"empty" in refused.stderr


def _read_until(fd: int, marker: bytes, seen: bytearray) -> None:
    deadline = time.monotonic() + 60
    while marker not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{marker!r} never came; got {bytes(seen)!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                raise AssertionError(f"{marker!r} never came; got {bytes(seen)!r}")
            seen.extend(chunk)


def test_at_a_terminal_the_value_is_typed_without_echo(homes: dict[str, str]) -> None:
    value = os.urandom(12).hex().encode()
    pid, terminal = pty.fork()
    if pid == 0:  # the child: the CLI, with the pty as its controlling terminal
        os.environ.update(homes)
        os.execv(CLI[0], [*CLI, "secrets", "set", "prod/db/password"])
    seen = bytearray()
    try:
        _read_until(terminal, b"value for prod/db/password: ", seen)
        os.write(terminal, value + b"\n")
        _read_until(terminal, b"(again): ", seen)
        os.write(terminal, value + b"\n")
        _read_until(terminal, b"(version 1)", seen)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(terminal)
    assert os.waitstatus_to_exitcode(status) == 0
    assert value not in seen
    got = LocalSecretStore.default(homes).get("prod/db/password")
    assert got is not None and got.value == value


def test_a_store_file_that_is_a_symlink_is_refused(
    store: LocalSecretStore, tmp_path: Path
) -> None:
    store.set("a/b", b"value")
    elsewhere = tmp_path / "elsewhere.store"
    store.store_path.rename(elsewhere)
    store.store_path.symlink_to(elsewhere)
    with pytest.raises(LocalStoreError, match="cannot use the local secret store"):
        store.names()
