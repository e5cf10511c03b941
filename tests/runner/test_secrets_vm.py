"""Secrets through `deploy --local`, with a real OpenBao dev server and real VMs.

One VM boot proves the canary (the guest had the value, nothing the host shows
or stores has it), the ramfs file and the env variable, rotation mid-step and
the revocation of the run's token. The ERR_VAULT_MISMATCH cases boot nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from devdep.config.schema import Secrets
from devdep.errors import ExitCode
from devdep.runner.secrets import RunSecrets
from devdep.secrets import SecretKeyMissing
from tests.secrets.conftest import CREATE_CHILD_POLICY, Bao
from tests.secrets.leaks import find_leaks, leak_forms
from tests.support.openbao import OpenBaoServer
from tests.vmm.images import ensure_boot_spec, qemu_processes_under

pytestmark = pytest.mark.integration

DEVDEP_CLI = str(Path(sys.executable).parent / "devdep-cli")
WAIT_MARKER = "waiting-for-rotation"

CANARY_STEP = r"""
f=/run/devdep/secrets/CANARY
printf 'raw:%s\n' "$CANARY"
printf 'base64:%s\n' "$(printf %s "$CANARY" | base64 -w0)"
printf 'hex:%s\n' "$(printf %s "$CANARY" | od -An -v -tx1 | tr -d ' \n')"
printf 'split:'; printf %s "$CANARY" | head -c 16; sleep 0.5
printf %s "$CANARY" | tail -c +17; echo
printf 'sha256:%s\n' "$(sha256sum < $f | cut -d' ' -f1)"
printf 'mode:%s\n' "$(stat -c %a $f)"
printf 'fs:%s\n' "$(stat -f -c %T /run/devdep/secrets)"
[ "$CANARY" = "$(cat $f)" ] && echo env-matches-file
"""

ROTATION_STEP = r"""
f=/run/devdep/secrets/ROTATING
first=$(sha256sum < $f | cut -d' ' -f1)
echo waiting-for-rotation
head -c 2000 /dev/zero | tr '\0' '.'; echo
i=0
while [ $i -lt 240 ]; do
  now=$(sha256sum < $f | cut -d' ' -f1)
  if [ "$now" != "$first" ]; then echo "rotated-seen:$now"; exit 0; fi
  sleep 0.25; i=$((i+1))
done
echo never-rotated; exit 3
"""


@pytest.fixture(scope="module", autouse=True)
def _images() -> None:
    ensure_boot_spec()


@pytest.fixture
def bao(openbao: OpenBaoServer) -> Iterator[Bao]:
    with openbao.client() as admin:
        yield Bao(openbao, admin)


def write_pipeline(
    workspace: Path,
    address: str,
    mappings: dict[str, str],
    steps: list[str],
    *,
    key_rotation: str = "manual",
) -> None:
    workspace.mkdir(parents=True, exist_ok=True)
    config = {
        "version": "4.2",
        "metadata": {"namespace": "test", "owner": "test-owners", "environment": "dev"},
        "pipeline": {
            "secrets": {
                "provider": "hashicorp-vault",
                "address": address,
                "key_rotation": key_rotation,
                "mappings": [
                    {"env": env, "source": source} for env, source in mappings.items()
                ],
            },
            "runtimes": [{"name": "build", "run_command": steps}],
        },
    }
    # JSON is YAML.
    (workspace / "devdep.yaml").write_text(json.dumps(config, indent=2))


def deploy(
    workspace: Path, state: Path, token: str, **env: str
) -> subprocess.Popen[bytes]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    environment.update(DEVDEP_STATE_DIR=str(state), DEVDEP_VAULT_TOKEN=token, **env)
    return subprocess.Popen(
        [DEVDEP_CLI, "deploy", "--local", "--env=dev"],
        cwd=workspace,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def run_tokens(bao: Bao) -> dict[str, str]:
    """Accessor -> run id, for every live token devdep made for a run."""
    found = {}
    keys = bao.request("LIST", "auth/token/accessors").json()["data"]["keys"]
    for accessor in keys:
        answer = bao.admin.post(
            "/v1/auth/token/lookup-accessor", json={"accessor": accessor}
        )
        if answer.status_code == 200:
            run = (answer.json()["data"].get("meta") or {}).get("devdep_run")
            if run:
                found[accessor] = run
    return found


def _lines(stream: object, into: queue.Queue[bytes | None]) -> None:
    for line in iter(stream.readline, b""):  # type: ignore[attr-defined]
        into.put(line)
    into.put(None)


def test_canary_rotation_and_revocation_in_one_vm(bao: Bao, tmp_path: Path) -> None:
    value = base64.b64encode(os.urandom(24))  # 32 printable bytes
    assert len(value) == 32
    path = f"devdep-tests/{os.urandom(6).hex()}"
    bao.write_kv2(f"{path}/canary", {"value": value.decode()})
    rotating_v1 = os.urandom(16).hex()
    bao.write_kv2(f"{path}/rotating", {"value": rotating_v1})
    workspace = tmp_path / "workspace"
    state = tmp_path / "state"
    write_pipeline(
        workspace,
        bao.address,
        {"CANARY": f"{path}/canary/value", "ROTATING": f"{path}/rotating/value"},
        [CANARY_STEP, ROTATION_STEP],
        key_rotation="automatic",
    )
    tokens_before = set(run_tokens(bao))

    process = deploy(
        workspace,
        state,
        bao.server.root_token,
        DEVDEP_DEBUG="1",
        DEVDEP_SECRETS_POLL_INTERVAL="1",
    )
    stdout_lines: queue.Queue[bytes | None] = queue.Queue()
    stderr_lines: queue.Queue[bytes | None] = queue.Queue()
    readers = [
        threading.Thread(target=_lines, args=(process.stdout, stdout_lines)),
        threading.Thread(target=_lines, args=(process.stderr, stderr_lines)),
    ]
    for reader in readers:
        reader.start()

    stdout = b""
    run_accessors: set[str] = set()
    in_process_args_or_env: list[str] | None = None
    qemu_environments: list[bytes] = []
    rotating_v2 = os.urandom(16).hex()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = stdout_lines.get(timeout=300)
        if line is None:
            break
        stdout += line
        if line.strip() == WAIT_MARKER.encode():
            run_accessors = set(run_tokens(bao)) - tokens_before
            in_process_args_or_env = processes_holding(value)
            qemu_environments = [
                Path(f"/proc/{pid}/environ").read_bytes()
                for pid in qemu_processes_under(tmp_path)
            ]
            bao.write_kv2(f"{path}/rotating", {"value": rotating_v2})
    process.wait(timeout=60)
    for reader in readers:
        reader.join(timeout=10)
    for pipe in (process.stdout, process.stderr):
        assert pipe is not None
        pipe.close()
    stderr = b"".join(iter(stderr_lines.get_nowait, None))
    text = stdout.decode(errors="replace")
    assert process.returncode == 0, text + stderr.decode(errors="replace")

    # The guest had the value: its SHA-256 matches, as a 0400 file on a ramfs
    # and as the step's environment variable.
    assert f"sha256:{hashlib.sha256(value).hexdigest()}" in text
    assert "mode:400" in text
    assert "fs:ramfs" in text
    assert "env-matches-file" in text
    for label in ("raw", "base64", "hex"):
        assert f"{label}:***" in text
    assert "split:***" in text

    # The running step saw the new value, and the log says so by name only.
    assert f"rotated-seen:{hashlib.sha256(rotating_v2.encode()).hexdigest()}" in text
    (summary_path,) = (state / "reports").glob("*.json")
    (log_path,) = (state / "reports").glob("*.log")
    run_log = log_path.read_text()
    assert "secret rotated: ROTATING (version 1 → 2)" in run_log
    summary = json.loads(summary_path.read_text())
    assert summary["secret_names"] == ["CANARY", "ROTATING"]
    assert summary["outcome"] == "succeeded"

    # Nothing the host shows or stores holds any form of either value.
    outputs = {"stdout": stdout, "stderr": stderr, "log": log_path.read_bytes()}
    outputs["summary"] = summary_path.read_bytes()
    for secret in (value, rotating_v1.encode(), rotating_v2.encode()):
        for name, data in outputs.items():
            assert not find_leaks_in(secret, data), f"{name} holds a secret"
    roots = [state, workspace, Path("/var/lib/devdep"), Path("/tmp")]
    roots += [
        Path.home() / ".local/share/devdep",
        Path.home() / ".config/devdep",
        Path.home() / ".cache/devdep",
    ]
    for secret in (value, rotating_v1.encode(), rotating_v2.encode()):
        leaks = find_leaks(secret, [root for root in roots if root.exists()])
        assert [str(leak) for leak in leaks] == []

    # While the VM ran, no host process had it in its argv or environment.
    assert in_process_args_or_env == []
    # Nor did QEMU get devdep's Vault credential.
    assert len(qemu_environments) == 1
    assert bao.server.root_token.encode() not in qemu_environments[0]

    # The run's token was revoked at teardown.
    assert len(run_accessors) == 1
    (accessor,) = run_accessors
    answer = bao.admin.post(
        "/v1/auth/token/lookup-accessor", json={"accessor": accessor}
    )
    assert answer.status_code in (400, 403, 404), answer.text
    assert qemu_processes_under(tmp_path) == []


def processes_holding(value: bytes) -> list[str]:
    """The /proc/PID/{cmdline,environ} files of this host holding a form of
    `value`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        for name in ("cmdline", "environ"):
            try:
                data = (proc / name).read_bytes()
            except OSError:
                continue
            if find_leaks_in(value, data):
                found.append(f"{proc}/{name}")
    return found


def find_leaks_in(value: bytes, data: bytes) -> list[str]:
    return [name for name, form in leak_forms(value).items() if form in data]


# --- ERR_VAULT_MISMATCH: no VM boots ---------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unresolvable_mappings_exit_201_before_any_vm(bao: Bao, tmp_path: Path) -> None:
    path = f"devdep-tests/{os.urandom(6).hex()}"
    bao.write_kv2(f"{path}/db", {"host": "db.internal", "username": "ci"})
    unreachable = f"http://127.0.0.1:{_free_port()}"
    bao.policy("devdep-tests-create-child", CREATE_CHILD_POLICY)
    no_read = bao.token("devdep-tests-create-child")
    root = bao.server.root_token
    cases = [
        (unreachable, root, f"{path}/db/password", f"{unreachable} is unreachable"),
        (bao.address, root, f"{path}/nothing/password", "has no secret at that path"),
        (bao.address, root, f"{path}/db/password", "has no key 'password'"),
        (bao.address, no_read, f"{path}/db/host", "refused reading secret/"),
    ]
    for index, (address, token, source, reason) in enumerate(cases):
        workspace = tmp_path / f"workspace{index}"
        state = tmp_path / f"state{index}"
        write_pipeline(workspace, address, {"DB_PASSKEY": source}, ["echo NEVER-RUN"])
        started = time.monotonic()

        process = deploy(workspace, state, token)
        stdout, stderr = process.communicate(timeout=120)

        message = stderr.decode()
        assert process.returncode == ExitCode.ERR_VAULT_MISMATCH, message
        assert f"DB_PASSKEY <- {source}" in message
        assert reason in message
        assert b"NEVER-RUN\n" not in stdout
        assert "guest ready" not in message
        assert time.monotonic() - started < 60
        assert qemu_processes_under(tmp_path) == []


def test_with_several_runtimes_every_mapping_is_checked_up_front(
    bao: Bao, tmp_path: Path
) -> None:
    path = f"devdep-tests/{os.urandom(6).hex()}"
    bao.write_kv2(f"{path}/db", {"username": "ci"})
    config = Secrets.model_validate(
        {
            "provider": "hashicorp-vault",
            "address": bao.address,
            "mappings": [{"env": "DB_PASSKEY", "source": f"{path}/db/password"}],
        }
    )
    run_secrets = RunSecrets(config, "r-0123456789")
    environment = {"DEVDEP_VAULT_TOKEN": bao.server.root_token}

    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        run_secrets.preflight(1)  # one runtime: its pre_bootstrap checks
        with pytest.raises(SecretKeyMissing, match="has no key 'password'"):
            run_secrets.preflight(2)
    run_secrets.close()


def test_each_runtime_gets_a_token_revoked_at_its_teardown(
    bao: Bao, tmp_path: Path
) -> None:
    path = f"devdep-tests/{os.urandom(6).hex()}"
    bao.write_kv2(f"{path}/db", {"password": "pw-" + os.urandom(8).hex()})
    config = Secrets.model_validate(
        {
            "provider": "hashicorp-vault",
            "address": bao.address,
            "mappings": [{"env": "DB_PASSKEY", "source": f"{path}/db/password"}],
        }
    )
    run_secrets = RunSecrets(config, "r-abcdef0123")
    before = set(run_tokens(bao))

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEVDEP_VAULT_TOKEN", bao.server.root_token)
        run_secrets.preflight(1)
        run_secrets.open("build", timedelta(minutes=3))
        made = {a: run for a, run in run_tokens(bao).items() if a not in before}
        session = run_secrets.session
        assert session is not None
        run_secrets.close_session()

    assert list(made.values()) == ["r-abcdef0123-build"]
    assert not set(made) & set(run_tokens(bao))
    assert all(secret.closed for secret in session.secrets)
    assert run_secrets.names == ["DB_PASSKEY"]
    run_secrets.close()
