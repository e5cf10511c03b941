"""Loading gateway.yaml: the documented example loads, and every mistake is
reported at its line."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devdep.errors import UsageError
from devdep.gateway.config import (
    load_gateway_config,
    parse_gateway_config,
    parse_listen,
)
from devdep.gateway.errors import GatewayConfigError

EXAMPLE = """\
listen: 127.0.0.1:8443
store: sqlite:////var/lib/devdep/gateway.db
session_minutes: 15
identity:
  allowed_domains: [acme.corp]
  blocked_domains: []
  issuers:
    - name: corp
      issuer: https://idp.acme.corp
      audience: devdep-cli
    - name: github
      issuer: https://token.actions.githubusercontent.com
      audience: devdep-github-actions
      bound_claims: {repository_owner_id: "123", ref: "refs/heads/main"}
    - name: gitlab
      issuer: https://gitlab.acme.corp
      audience: devdep-gitlab-actions
      bound_claims: {project_path: "acme/api", ref_protected: "true"}
"""


def details_of(text: str, base: Path | None = None) -> list[str]:
    with pytest.raises(GatewayConfigError) as raised:
        parse_gateway_config(text, "gateway.yaml", base)
    assert isinstance(raised.value, UsageError)
    return raised.value.details


def test_the_documented_example_loads() -> None:
    settings = parse_gateway_config(EXAMPLE)

    assert settings.listen.host == "127.0.0.1"
    assert settings.listen.port == 8443
    assert settings.session_minutes == 15
    assert settings.tls is None
    assert settings.url == "http://127.0.0.1:8443"
    assert [i.kind for i in settings.identity.issuers] == ["corporate", "ci", "ci"]


def test_a_non_loopback_address_without_tls_is_refused() -> None:
    details = details_of(EXAMPLE.replace("127.0.0.1:8443", "0.0.0.0:8443"))

    assert len(details) == 1
    assert details[0].startswith(
        "gateway.yaml:1:9: listen: refusing to listen on 0.0.0.0"
    )


def test_a_non_loopback_address_with_tls_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("-")
    (tmp_path / "key.pem").write_text("-")
    text = EXAMPLE.replace("127.0.0.1:8443", "0.0.0.0:8443") + (
        "tls: {certificate: cert.pem, private_key: key.pem}\n"
    )

    settings = parse_gateway_config(text, base=tmp_path)

    assert settings.tls is not None
    assert settings.tls.certificate == tmp_path / "cert.pem"
    assert settings.url == "https://0.0.0.0:8443"


def test_missing_tls_files_are_reported_at_their_keys(tmp_path: Path) -> None:
    text = EXAMPLE + "tls:\n  certificate: cert.pem\n  private_key: key.pem\n"

    details = details_of(text, tmp_path)

    assert [d.split(": ")[0] for d in details] == [
        "gateway.yaml:20:16",
        "gateway.yaml:21:16",
    ]


def test_mistakes_are_located() -> None:
    text = EXAMPLE.replace("session_minutes: 15", "session_minutes: -1\nlisten_on: x")
    text = text.replace('ref: "refs/heads/main"', 'ref: "refs/heads/*"')

    details = details_of(text)

    assert any(d.startswith("gateway.yaml:3:18: session_minutes:") for d in details)
    assert any(
        d.startswith("gateway.yaml:4:1: listen_on: unknown key") for d in details
    )
    assert any(
        "identity.issuers[1].bound_claims" in d and "wildcard" in d for d in details
    )


def test_duplicate_keys_and_aliases_are_refused() -> None:
    assert "duplicate key 'store'" in details_of(EXAMPLE + "store: sqlite:///x.db\n")[0]
    aliased = EXAMPLE.replace(
        "allowed_domains: [acme.corp]", "allowed_domains: &d [a.b]"
    )
    aliased += "x: *d\n"
    assert "aliases are not supported" in details_of(aliased)[0]


@pytest.mark.parametrize("raw", [b"listen: \x00\n", b"\xff\xfe", b"a: [" * 3000])
def test_unreadable_files_are_configuration_errors(raw: bytes) -> None:
    with pytest.raises(GatewayConfigError) as raised:
        parse_gateway_config(raw, "gateway.yaml")
    assert raised.value.details[0].startswith("gateway.yaml:")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_only_configuration_errors(raw: bytes) -> None:
    with contextlib.suppress(GatewayConfigError):
        parse_gateway_config(raw, "gateway.yaml")


def test_fractional_minutes_shorten_sessions_for_tests() -> None:
    settings = parse_gateway_config(EXAMPLE.replace("15", "0.05", 1))

    assert settings.session_minutes == 0.05


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [("127.0.0.1:8443", "127.0.0.1", 8443), ("[::1]:9000", "::1", 9000)],
)
def test_listen_addresses(text: str, host: str, port: int) -> None:
    listen = parse_listen(text)
    assert (listen.host, listen.port, listen.is_loopback) == (host, port, True)


@pytest.mark.parametrize("text", ["8443", ":8443", "::1:8443", "host:port", "h:0"])
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(text)


@pytest.mark.parametrize("content", [b"", b"- a\n- b\n", b"\xff", b"a: [\n"])
def test_unusable_files_are_clean_errors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_bytes(content)

    with pytest.raises(GatewayConfigError):
        load_gateway_config(path)


def test_a_missing_file_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(GatewayConfigError, match="does not exist"):
        load_gateway_config(tmp_path / "gateway.yaml")
