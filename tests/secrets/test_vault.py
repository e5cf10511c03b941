"""The hashicorp-vault provider against a real OpenBao server."""

from __future__ import annotations

import hashlib
import http.server
import logging
import secrets
import socket
import threading
import time
from datetime import timedelta
from pathlib import Path

import hvac.exceptions
import pytest
import requests

from devdep.cli.main import run as run_cli
from devdep.errors import ExitCode, VaultMismatch, exit_code_for
from devdep.secrets import (
    SecretKeyMissing,
    SecretPathMissing,
    SecretSession,
    VaultAuthFailed,
    VaultForbidden,
    VaultProtocolError,
    VaultTlsFailure,
    VaultUnreachable,
)
from devdep.secrets.memfd import SealedSecret
from devdep.secrets.vault import VaultProvider
from tests.secrets.conftest import CREATE_CHILD_POLICY, Bao, canary
from tests.secrets.tls import self_signed_tls_server
from tests.support.oidc import OidcProvider

pytestmark = pytest.mark.integration

RUN_TTL = timedelta(minutes=3)


def open_session(
    bao: Bao,
    *sources: str,
    token: str | None = None,
    names: list[str] | None = None,
    run_ttl: timedelta = RUN_TTL,
    **settings: object,
) -> SecretSession:
    """A session on `sources` with the root token, or `token`; `settings` go to
    the secrets section of devdep.yaml."""
    return SecretSession.open(
        bao.vault_secrets(*sources, names=names or ["DB_PASSKEY"], **settings),
        run_id=f"r-{secrets.token_hex(5)}",
        run_ttl=run_ttl,
        env={"DEVDEP_VAULT_TOKEN": token or bao.server.root_token},
    )


def run_token(session: SecretSession) -> str:
    assert isinstance(session.provider, VaultProvider)
    return str(session.provider._run.token)


def expect_mismatch(error: VaultMismatch, mapping: str, *reason: str) -> None:
    assert exit_code_for(error) is ExitCode.ERR_VAULT_MISMATCH
    assert error.message.startswith(f"cannot resolve {mapping}: "), error.message
    for part in reason:
        assert part in error.message, error.message
    assert "\n" not in error.message
    assert error.__cause__ is not None


# --- resolving -------------------------------------------------------------


def live_run_tokens(bao: Bao) -> list[str]:
    """The accessors of tokens made for a run that are still valid."""
    accessors = bao.request("LIST", "auth/token/accessors").json()["data"]["keys"]
    live = []
    for accessor in accessors:
        answer = bao.admin.post(
            "/v1/auth/token/lookup-accessor", json={"accessor": accessor}
        )
        if answer.status_code == 200 and (answer.json()["data"].get("meta") or {}).get(
            "devdep_run"
        ):
            live.append(accessor)
    return live


def open_memfds() -> list[str]:
    found = []
    for entry in Path("/proc/self/fd").iterdir():
        try:
            target = str(entry.readlink())
        except OSError:
            continue
        if target.startswith("/memfd:devdep-secret"):
            found.append(target)
    return found


def test_the_canary_in_kv2_resolves_into_a_sealed_memfd(
    bao: Bao, secret_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    value = canary()
    bao.write_kv2(secret_path, {"password": value.decode(), "user": "api"})
    caplog.set_level(logging.DEBUG)

    with open_session(bao, f"{secret_path}/password") as session:
        [secret] = session.secrets
        assert isinstance(secret, SealedSecret)
        assert secret.name == "DB_PASSKEY"
        assert secret.version == 1
        assert hashlib.sha256(secret.read()).digest() == hashlib.sha256(value).digest()
        assert session.redactor.redact(b"x" + value + b"y") == b"x***y"
        assert value.decode() not in repr(session.secrets)
        assert len(open_memfds()) == 1

    assert open_memfds() == []
    # Every log line of the session, hvac's and urllib3's included, at debug
    # level: none holds the value, and none even needed redacting.
    assert caplog.records
    for record in caplog.records:
        assert value.decode() not in record.getMessage()
        assert "***" not in record.getMessage()


def test_a_kv1_mount_is_detected_and_read(bao: Bao, secret_path: str) -> None:
    mount = f"kv1-{secrets.token_hex(4)}"
    bao.request(
        "POST", f"sys/mounts/{mount}", json={"type": "kv", "options": {"version": "1"}}
    )
    try:
        value = canary()
        bao.request("POST", f"{mount}/{secret_path}", json={"password": value.decode()})

        with open_session(bao, f"{secret_path}/password", mount=mount) as session:
            assert session.secrets[0].read() == value
            assert session.secrets[0].version is None
    finally:
        bao.request("DELETE", f"sys/mounts/{mount}")


def test_the_run_token_is_short_lived_narrow_and_revoked_at_close(
    bao: Bao, secret_path: str
) -> None:
    bao.write_kv2(secret_path, {"password": "pw"})
    bao.write_kv2(secret_path + "-other", {"password": "not for this run"})

    session = open_session(
        bao, f"{secret_path}/password", run_ttl=timedelta(seconds=90)
    )
    token = run_token(session)
    assert isinstance(session.provider, VaultProvider)
    policy = f"devdep-run-{session.run_id}"
    try:
        looked_up = bao.request("POST", "auth/token/lookup", json={"token": token})
        data = looked_up.json()["data"]
        assert 0 < data["ttl"] <= 90
        assert data["explicit_max_ttl"] == 90
        assert data["renewable"] is False
        assert data["accessor"] == session.provider.run_token_accessor
        assert sorted(data["policies"]) == ["default", policy]
        assert live_run_tokens(bao) == [session.provider.run_token_accessor]

        # Only the mapped secret: its neighbour is out of the run token's reach.
        with bao.server.client() as as_run:
            as_run.headers["X-Vault-Token"] = token
            assert as_run.get(f"/v1/secret/data/{secret_path}").status_code == 200
            assert as_run.get(f"/v1/secret/data/{secret_path}-other").status_code == 403
    finally:
        session.close()

    after = bao.admin.post("/v1/auth/token/lookup", json={"token": token})
    assert after.status_code == 403
    assert live_run_tokens(bao) == []
    with bao.server.client() as as_run:
        as_run.headers["X-Vault-Token"] = token
        assert as_run.get("/v1/auth/token/lookup-self").status_code == 403
    policies = bao.request("GET", "sys/policies/acl", params={"list": "true"})
    assert policy not in policies.json()["data"]["keys"]


def test_a_non_root_token_hands_its_own_policies_down(
    bao: Bao, secret_path: str
) -> None:
    bao.write_kv2(secret_path, {"password": "pw"})
    reader = f"reader-{secrets.token_hex(4)}"
    bao.policy(
        reader,
        f'path "secret/data/{secret_path}" {{ capabilities = ["read"] }}\n'
        + CREATE_CHILD_POLICY,
    )

    with open_session(
        bao, f"{secret_path}/password", token=bao.token(reader)
    ) as session:
        token = run_token(session)
        data = bao.request("POST", "auth/token/lookup", json={"token": token}).json()
        assert sorted(data["data"]["policies"]) == ["default", reader]
        assert session.secrets[0].read() == b"pw"
    assert (
        bao.admin.post("/v1/auth/token/lookup", json={"token": token}).status_code
        == 403
    )


# --- errors ----------------------------------------------------------------


def test_an_unreachable_address(bao: Bao) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"http://127.0.0.1:{port}"

    with pytest.raises(VaultUnreachable) as raised:
        open_session(bao, "prod/database/api-user/password", address=address)

    expect_mismatch(
        raised.value,
        "DB_PASSKEY <- prod/database/api-user/password",
        f"{address} is unreachable: connection refused",
    )
    assert isinstance(raised.value.__cause__, requests.ConnectionError)


def test_a_missing_path(bao: Bao, secret_path: str) -> None:
    with pytest.raises(SecretPathMissing) as raised:
        open_session(bao, f"{secret_path}/password")
    expect_mismatch(
        raised.value,
        f"DB_PASSKEY <- {secret_path}/password",
        f"reading secret/{secret_path}",
        "no secret at that path (404)",
    )
    assert isinstance(raised.value.__cause__, hvac.exceptions.InvalidPath)


def test_a_missing_key(bao: Bao, secret_path: str) -> None:
    bao.write_kv2(secret_path, {"username": "api", "host": "db"})
    with pytest.raises(SecretKeyMissing) as raised:
        open_session(bao, f"{secret_path}/password")
    assert raised.value.message == (
        f"cannot resolve DB_PASSKEY <- {secret_path}/password: secret "
        f"secret/{secret_path} has no key 'password' (it has: host, username)"
    )
    assert exit_code_for(raised.value) is ExitCode.ERR_VAULT_MISMATCH


def test_a_token_without_the_policy_gets_403(bao: Bao, secret_path: str) -> None:
    bao.write_kv2(secret_path, {"password": "pw"})
    only_tokens = f"tokens-only-{secrets.token_hex(4)}"
    bao.policy(only_tokens, CREATE_CHILD_POLICY)

    with pytest.raises(VaultForbidden) as raised:
        open_session(bao, f"{secret_path}/password", token=bao.token(only_tokens))

    expect_mismatch(
        raised.value,
        f"DB_PASSKEY <- {secret_path}/password",
        f"refused reading secret/{secret_path} (403",
    )
    assert isinstance(raised.value.__cause__, hvac.exceptions.Forbidden)


def test_a_token_allowed_the_mount_but_not_the_secret_gets_403(
    bao: Bao, secret_path: str
) -> None:
    bao.write_kv2(secret_path, {"password": "pw"})
    bao.write_kv2(secret_path + "-open", {"password": "pw"})
    partial = f"partial-{secrets.token_hex(4)}"
    bao.policy(
        partial,
        f'path "secret/data/{secret_path}-open" {{ capabilities = ["read"] }}\n'
        + CREATE_CHILD_POLICY,
    )

    with pytest.raises(VaultForbidden) as raised:
        open_session(
            bao,
            f"{secret_path}-open/password",
            f"{secret_path}/password",
            names=["OPEN", "DB_PASSKEY"],
            token=bao.token(partial),
        )
    expect_mismatch(
        raised.value,
        f"DB_PASSKEY <- {secret_path}/password",
        "(403: permission denied)",
    )


def test_a_bad_token(bao: Bao) -> None:
    with pytest.raises(VaultAuthFailed) as raised:
        open_session(bao, "prod/db/password", token="s.not-a-token")
    expect_mismatch(
        raised.value,
        "DB_PASSKEY <- prod/db/password",
        "refused the token from DEVDEP_VAULT_TOKEN",
        "permission denied",
    )


def test_a_token_that_may_not_create_the_run_token(bao: Bao) -> None:
    with pytest.raises(VaultAuthFailed) as raised:
        open_session(bao, "prod/db/password", token=bao.token("default"))
    expect_mismatch(
        raised.value, "DB_PASSKEY <- prod/db/password", "creating the run's token"
    )
    assert raised.value.hint is not None and "auth/token/create" in raised.value.hint


def test_no_credentials_at_all(bao: Bao) -> None:
    with pytest.raises(VaultAuthFailed) as raised:
        SecretSession.open(
            bao.vault_secrets("prod/db/password", names=["DB_PASSKEY"]),
            run_id="r-0000000003",
            run_ttl=RUN_TTL,
            env={},
        )
    assert "no credentials for" in raised.value.message
    assert exit_code_for(raised.value) is ExitCode.ERR_VAULT_MISMATCH


def test_tls_to_a_server_with_an_untrusted_certificate(bao: Bao) -> None:
    with self_signed_tls_server() as port:
        address = f"https://127.0.0.1:{port}"
        with pytest.raises(VaultTlsFailure) as raised:
            open_session(bao, "prod/db/password", address=address)
    expect_mismatch(
        raised.value,
        "DB_PASSKEY <- prod/db/password",
        f"TLS with {address} failed: certificate verify failed",
    )
    assert isinstance(raised.value.__cause__, requests.exceptions.SSLError)


def test_tls_to_a_server_that_speaks_plain_http(bao: Bao) -> None:
    address = bao.address.replace("http://", "https://")
    with pytest.raises(VaultTlsFailure) as raised:
        open_session(bao, "prod/db/password", address=address)
    expect_mismatch(
        raised.value, "DB_PASSKEY <- prod/db/password", f"TLS with {address}"
    )


def test_the_first_failing_mapping_leaves_nothing_open(
    bao: Bao, secret_path: str
) -> None:
    bao.write_kv2(secret_path, {"password": "pw"})
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(SecretKeyMissing):
        open_session(
            bao,
            f"{secret_path}/password",
            f"{secret_path}/missing",
            names=["FIRST", "SECOND"],
        )
    policies = bao.request("GET", "sys/policies/acl", params={"list": "true"})
    assert not [
        p for p in policies.json()["data"]["keys"] if p.startswith("devdep-run-")
    ]
    assert {t.name for t in threading.enumerate()} <= before
    assert open_memfds() == []
    assert live_run_tokens(bao) == []


def test_validate_resolves_the_mappings_unless_offline(
    bao: Bao,
    secret_path: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "devdep.yaml"
    config.write_text(
        f"""version: "4.2"
metadata: {{namespace: acme, owner: ops, environment: production}}
pipeline:
  runtimes:
    - name: build
      run_command: "true"
  secrets:
    provider: hashicorp-vault
    address: {bao.address}
    mappings:
      - env: DB_PASSKEY
        source: {secret_path}/password
"""
    )
    monkeypatch.setenv("DEVDEP_VAULT_TOKEN", bao.server.root_token)

    missing = run_cli(["validate", "--file", str(config)])
    _, err = capsys.readouterr()
    offline = run_cli(["validate", "--file", str(config), "--offline"])
    capsys.readouterr()
    bao.write_kv2(secret_path, {"password": "pw"})
    resolved = run_cli(["validate", "--file", str(config)])
    out, _ = capsys.readouterr()

    assert missing == ExitCode.ERR_VAULT_MISMATCH
    assert f"error: cannot resolve DB_PASSKEY <- {secret_path}/password" in err
    assert offline == ExitCode.SUCCESS
    assert resolved == ExitCode.SUCCESS
    assert "secrets resolved: DB_PASSKEY" in out and "pw" not in out


# --- other ways to log in --------------------------------------------------


def test_approle_login(bao: Bao, secret_path: str) -> None:
    value = canary()
    bao.write_kv2(secret_path, {"password": value.decode()})
    mount = f"approle-{secrets.token_hex(4)}"
    reader = f"reader-{secrets.token_hex(4)}"
    bao.policy(
        reader,
        f'path "secret/data/{secret_path}" {{ capabilities = ["read"] }}\n'
        + CREATE_CHILD_POLICY,
    )
    bao.request("POST", f"sys/auth/{mount}", json={"type": "approle"})
    try:
        bao.request(
            "POST",
            f"auth/{mount}/role/ci",
            json={"token_policies": [reader], "token_ttl": "5m"},
        )
        role_id = bao.request("GET", f"auth/{mount}/role/ci/role-id").json()["data"][
            "role_id"
        ]
        secret_id = bao.request("POST", f"auth/{mount}/role/ci/secret-id").json()[
            "data"
        ]["secret_id"]
        env = {
            "DEVDEP_VAULT_ROLE_ID": role_id,
            "DEVDEP_VAULT_SECRET_ID": secret_id,
            "DEVDEP_VAULT_APPROLE_MOUNT": mount,
        }
        session = SecretSession.open(
            bao.vault_secrets(f"{secret_path}/password", names=["DB_PASSKEY"]),
            run_id="r-00000000a1",
            run_ttl=RUN_TTL,
            env=env,
        )
        assert isinstance(session.provider, VaultProvider)
        login_token = str(session.provider._login.token)
        with session:
            assert session.secrets[0].read() == value
            assert session.provider.auth_method == f"AppRole at auth/{mount}"
        # The login token the provider made is revoked with the run's token.
        lookup = bao.admin.post("/v1/auth/token/lookup", json={"token": login_token})
        assert lookup.status_code == 403

        env["DEVDEP_VAULT_SECRET_ID"] = "not-the-secret-id"
        with pytest.raises(VaultAuthFailed) as raised:
            SecretSession.open(
                bao.vault_secrets(f"{secret_path}/password", names=["DB_PASSKEY"]),
                run_id="r-00000000a2",
                run_ttl=RUN_TTL,
                env=env,
            )
        expect_mismatch(
            raised.value, f"DB_PASSKEY <- {secret_path}/password", "AppRole"
        )
    finally:
        bao.request("DELETE", f"sys/auth/{mount}")


def test_jwt_login_with_the_sessions_oidc_token(
    bao: Bao, secret_path: str, oidc_provider: OidcProvider
) -> None:
    value = canary()
    bao.write_kv2(secret_path, {"password": value.decode()})
    mount = f"jwt-{secrets.token_hex(4)}"
    reader = f"reader-{secrets.token_hex(4)}"
    bao.policy(
        reader,
        f'path "secret/data/{secret_path}" {{ capabilities = ["read"] }}\n'
        + CREATE_CHILD_POLICY,
    )
    bao.request("POST", f"sys/auth/{mount}", json={"type": "jwt"})
    try:
        bao.request(
            "POST",
            f"auth/{mount}/config",
            json={
                "oidc_discovery_url": oidc_provider.issuer,
                "bound_issuer": oidc_provider.issuer,
            },
        )
        bao.request(
            "POST",
            f"auth/{mount}/role/ci",
            json={
                "role_type": "jwt",
                "bound_audiences": [oidc_provider.audience],
                "user_claim": "email",
                "bound_claims": {"email_verified": True},
                "token_policies": [reader],
                "token_ttl": "5m",
            },
        )
        env = {"DEVDEP_VAULT_JWT_ROLE": "ci", "DEVDEP_VAULT_JWT_MOUNT": mount}
        id_token = oidc_provider.issue_id_token("ci@acme.corp")

        with SecretSession.open(
            bao.vault_secrets(f"{secret_path}/password", names=["DB_PASSKEY"]),
            run_id="r-00000000b1",
            run_ttl=RUN_TTL,
            oidc_token=id_token,
            env=env,
        ) as session:
            assert session.secrets[0].read() == value
            assert isinstance(session.provider, VaultProvider)
            assert session.provider.auth_method == f"JWT at auth/{mount}"

        header, payload, signature = id_token.split(".")
        forged = f"{header}.{payload}.{signature[:-4]}AAAA"
        with pytest.raises(VaultAuthFailed) as raised:
            SecretSession.open(
                bao.vault_secrets(f"{secret_path}/password", names=["DB_PASSKEY"]),
                run_id="r-00000000b2",
                run_ttl=RUN_TTL,
                oidc_token=forged,
                env=env,
            )
        expect_mismatch(raised.value, f"DB_PASSKEY <- {secret_path}/password", "JWT")
    finally:
        bao.request("DELETE", f"sys/auth/{mount}")


# --- rotation --------------------------------------------------------------


def test_a_new_version_replaces_the_memfd_and_is_reported(
    bao: Bao, secret_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = canary(), canary()
    bao.write_kv2(secret_path, {"password": first.decode()})
    rotated: list[tuple[str, int, int, bytes]] = []
    called = threading.Event()

    def on_rotated(secret: SealedSecret, old: int, new: int) -> None:
        rotated.append((secret.name, old, new, secret.read()))
        called.set()

    caplog.set_level(logging.INFO, logger="devdep.secrets")
    session = open_session(bao, f"{secret_path}/password", key_rotation="automatic")
    try:
        old_fd = session.secrets[0].fileno()
        session.watch(on_rotated, poll_interval=timedelta(seconds=0.2))
        assert any(t.name.startswith("devdep-secrets-") for t in threading.enumerate())
        bao.write_kv2(secret_path, {"password": second.decode()})

        assert called.wait(timeout=20), "on_rotated was never called"
        assert rotated == [("DB_PASSKEY", 1, 2, second)]
        assert session.secrets[0].read() == second
        assert session.secrets[0].version == 2
        assert (
            session.secrets[0].fileno() != old_fd or session.secrets[0].read() == second
        )
        assert session.redactor.redact(first + b" " + second) == b"*** ***"
    finally:
        session.close()

    assert "secret rotated: DB_PASSKEY (version 1 → 2)" in caplog.messages
    assert not [
        m for m in caplog.messages if first.decode() in m or second.decode() in m
    ]
    assert not [
        t for t in threading.enumerate() if t.name.startswith("devdep-secrets-")
    ]


def test_manual_rotation_keeps_the_boot_value(bao: Bao, secret_path: str) -> None:
    bao.write_kv2(secret_path, {"password": "boot value"})
    with open_session(bao, f"{secret_path}/password", key_rotation="manual") as session:
        session.watch(lambda *args: pytest.fail("manual rotation must not watch"))
        assert not [
            t for t in threading.enumerate() if t.name.startswith("devdep-secrets-")
        ]
        bao.write_kv2(secret_path, {"password": "changed"})
        time.sleep(0.5)
        assert session.secrets[0].read() == b"boot value"


def test_a_new_version_without_the_key_keeps_the_old_value(
    bao: Bao, secret_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    bao.write_kv2(secret_path, {"password": "v1"})
    caplog.set_level(logging.WARNING, logger="devdep.secrets")
    with open_session(
        bao, f"{secret_path}/password", key_rotation="automatic"
    ) as session:
        session.watch(
            lambda *args: pytest.fail("not a usable version"),
            poll_interval=timedelta(seconds=0.1),
        )
        bao.write_kv2(secret_path, {"username": "only"})
        deadline = time.monotonic() + 20
        while not any("version 2 is not usable" in m for m in caplog.messages):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert session.secrets[0].read() == b"v1"
        assert session.secrets[0].version == 1


def test_an_address_that_is_not_vault(bao: Bao) -> None:
    class NotVault(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._page()

        def do_POST(self) -> None:
            self._page()

        def _page(self) -> None:
            body = b"<html>a web page</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotVault)
    thread = threading.Thread(target=server.serve_forever, name="not-vault")
    thread.start()
    try:
        address = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(VaultProtocolError) as raised:
            open_session(bao, "prod/db/password", address=address)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    expect_mismatch(
        raised.value, "DB_PASSKEY <- prod/db/password", "did not answer like Vault"
    )


def test_a_server_that_never_answers(bao: Bao) -> None:
    # Listening but never accepting: the kernel completes the handshake and the
    # request then waits for an answer that does not come.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        address = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(VaultUnreachable) as raised:
            SecretSession.open(
                bao.vault_secrets(
                    "prod/db/password", names=["DB_PASSKEY"], address=address
                ),
                run_id="r-00000000d1",
                run_ttl=RUN_TTL,
                env={"DEVDEP_VAULT_TOKEN": "s.unused", "DEVDEP_VAULT_TIMEOUT": "1"},
            )
        elapsed = time.monotonic() - started
    expect_mismatch(
        raised.value,
        "DB_PASSKEY <- prod/db/password",
        f"{address} did not answer within 1s",
    )
    assert elapsed < 10


def test_a_token_wins_over_approle_and_approle_over_jwt(
    bao: Bao, secret_path: str
) -> None:
    bao.write_kv2(secret_path, {"password": "pw"})
    approle = {
        "DEVDEP_VAULT_ROLE_ID": "no-such-role",
        "DEVDEP_VAULT_SECRET_ID": "no-such-secret",
        "DEVDEP_VAULT_APPROLE_MOUNT": "no-such-mount",
    }
    secrets_section = bao.vault_secrets(f"{secret_path}/password", names=["DB_PASSKEY"])

    with SecretSession.open(
        secrets_section,
        run_id="r-00000000e1",
        run_ttl=RUN_TTL,
        oidc_token="not.a.jwt",
        env={"VAULT_TOKEN": bao.server.root_token, **approle},
    ) as session:
        assert isinstance(session.provider, VaultProvider)
        assert session.provider.auth_method == "token from VAULT_TOKEN"

    with pytest.raises(VaultAuthFailed) as raised:
        SecretSession.open(
            secrets_section,
            run_id="r-00000000e2",
            run_ttl=RUN_TTL,
            oidc_token="not.a.jwt",
            env=approle,
        )
    assert "refused the AppRole at auth/no-such-mount while logging in" in (
        raised.value.message
    )
