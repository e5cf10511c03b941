"""The hashicorp-vault provider over real TLS: OpenBao in its `-dev-tls` mode,
with the CA it generates."""

from __future__ import annotations

import os
import secrets
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from devdep.config.schema import Secrets
from devdep.secrets import SecretSession, VaultTlsFailure
from tests.secrets.conftest import canary
from tests.support.openbao import _free_loopback_port, bao_binary

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class TlsBao:
    address: str
    root_token: str
    ca_file: Path


@pytest.fixture(scope="module")
def tls_bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBao]:
    directory = tmp_path_factory.mktemp("openbao-tls")
    port = _free_loopback_port()
    root_token = "root-" + secrets.token_hex(8)
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))
    }
    with (directory / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [
                bao_binary(),
                "server",
                "-dev",
                "-dev-tls",
                f"-dev-tls-cert-dir={directory}",
                f"-dev-listen-address=127.0.0.1:{port}",
                f"-dev-root-token-id={root_token}",
                "-dev-no-store-token",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
        )
    server = TlsBao(f"https://127.0.0.1:{port}", root_token, directory / "vault-ca.pem")
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"bao exited early:\n{(directory / 'server.log').read_text()}"
                )
            if server.ca_file.exists():
                try:
                    health = httpx.get(
                        f"{server.address}/v1/sys/health",
                        verify=ssl.create_default_context(cafile=server.ca_file),
                        timeout=1,
                    )
                    if health.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"bao did not start:\n{(directory / 'server.log').read_text()}"
                )
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def open_session(server: TlsBao, env: dict[str, str]) -> SecretSession:
    return SecretSession.open(
        Secrets.model_validate(
            {
                "provider": "hashicorp-vault",
                "address": server.address,
                "mappings": [{"env": "DB_PASSKEY", "source": "prod/db/password"}],
            }
        ),
        run_id=f"r-{secrets.token_hex(5)}",
        run_ttl=timedelta(minutes=1),
        env={"DEVDEP_VAULT_TOKEN": server.root_token, **env},
    )


def test_the_generated_ca_is_trusted_through_devdep_vault_cacert(
    tls_bao: TlsBao,
) -> None:
    value = canary()
    httpx.post(
        f"{tls_bao.address}/v1/secret/data/prod/db",
        headers={"X-Vault-Token": tls_bao.root_token},
        json={"data": {"password": value.decode()}},
        verify=ssl.create_default_context(cafile=tls_bao.ca_file),
        timeout=10,
    ).raise_for_status()

    with open_session(
        tls_bao, {"DEVDEP_VAULT_CACERT": str(tls_bao.ca_file)}
    ) as session:
        assert session.secrets[0].read() == value


def test_without_the_ca_the_certificate_is_refused(tls_bao: TlsBao) -> None:
    with pytest.raises(VaultTlsFailure) as raised:
        open_session(tls_bao, {})
    assert raised.value.message.startswith(
        f"cannot resolve DB_PASSKEY <- prod/db/password: TLS with {tls_bao.address} "
        "failed: certificate verify failed"
    )
