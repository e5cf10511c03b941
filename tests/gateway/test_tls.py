"""TLS: the gateway speaks TLS 1.3 only, and negotiates X25519."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from devdep.cli.main import run
from devdep.gateway.config import TlsSettings
from devdep.gateway.errors import TlsError
from devdep.gateway.server import build_gateway
from devdep.gateway.tls import server_context
from tests.gateway.fakes import FakeVerifier, gateway_settings, identity_for
from tests.gateway.servers import free_loopback_port, gateway_in_thread
from tests.support.certificates import self_signed_certificate


def make_certificate(directory: Path) -> TlsSettings:
    """A self-signed certificate for 127.0.0.1, and its key."""
    certificate_file, key_file = self_signed_certificate(
        directory, "devdep test gateway", stem="gateway"
    )
    return TlsSettings(certificate=certificate_file, private_key=key_file)


def test_the_context_allows_tls_1_3_only(tmp_path: Path) -> None:
    context = server_context(make_certificate(tmp_path))

    assert context.minimum_version is ssl.TLSVersion.TLSv1_3
    assert context.maximum_version is ssl.TLSVersion.TLSv1_3


def test_an_unusable_certificate_is_a_clean_error(tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("not a certificate")

    with pytest.raises(TlsError, match="cannot load the TLS certificate"):
        server_context(
            TlsSettings(
                certificate=tmp_path / "bad.pem", private_key=tmp_path / "bad.pem"
            )
        )


@pytest.mark.integration
def test_the_gateway_serves_tls_1_3_with_x25519(tmp_path: Path) -> None:
    tls = make_certificate(tmp_path)
    port = free_loopback_port()
    settings = gateway_settings(
        f"sqlite:///{tmp_path / 'gateway.db'}",
        listen=f"127.0.0.1:{port}",
        tls=tls,
    )

    with gateway_in_thread(build_gateway(settings, verifier=FakeVerifier())) as url:
        assert url == f"https://127.0.0.1:{port}"

        modern = ssl.create_default_context(cafile=str(tls.certificate))
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            modern.wrap_socket(raw, server_hostname="127.0.0.1") as connection,
        ):
            assert connection.version() == "TLSv1.3"
            connection.sendall(
                b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            assert connection.recv(4096).startswith(b"HTTP/1.1 200")

        legacy = ssl.create_default_context(cafile=str(tls.certificate))
        legacy.maximum_version = ssl.TLSVersion.TLSv1_2
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            pytest.raises(ssl.SSLError),
        ):
            legacy.wrap_socket(raw, server_hostname="127.0.0.1")

        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.fail("openssl is not installed: run 'make test', which installs it")
        handshake = subprocess.run(
            [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3", "-brief"],
            input="",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        report = handshake.stdout + handshake.stderr
        assert "Protocol version: TLSv1.3" in report
        assert "X25519" in report


@pytest.mark.integration
def test_the_cli_authenticates_over_tls_with_a_private_ca(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tls = make_certificate(tmp_path)
    port = free_loopback_port()
    settings = gateway_settings(
        f"sqlite:///{tmp_path / 'gateway.db'}", listen=f"127.0.0.1:{port}", tls=tls
    )
    verifier = FakeVerifier({"alice-token": identity_for("alice@acme.corp")})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    with gateway_in_thread(build_gateway(settings, verifier=verifier)) as url:
        monkeypatch.delenv("DEVDEP_GATEWAY_CA", raising=False)
        untrusted = run(["auth", "--token=alice-token", f"--gateway={url}"])
        assert "CERTIFICATE_VERIFY_FAILED" in capsys.readouterr().err

        monkeypatch.setenv("DEVDEP_GATEWAY_CA", str(tls.certificate))
        trusted = run(["auth", "--token=alice-token", f"--gateway={url}"])
        output = capsys.readouterr().out

    assert untrusted == 2
    assert trusted == 0
    assert "signature check PASS (RSA-2048, RS256)" in output
