from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from devdep.config.loader import (
    MAX_FILE_BYTES,
    ConfigError,
    Location,
    load_config,
    parse_config,
)
from devdep.errors import UsageError

VALID = """\
version: "4.2"
metadata:
  namespace: acme-prod-gateway
  owner: security-ops
  environment: production
pipeline:
  runtimes:
    - name: api-gateway-worker
      vm_vcpus: 1
      vm_memory_mb: 2048
      timeout: 10m
      run_command:
        - make build
        - make test
      artifacts: [dist/]
      sandbox:
        read_only_rootfs: true
        network_sandbox: allowlist
        allow_dns_resolution: false
        egress:
          allow: ["10.0.4.0/24:443/tcp", "pypi.org:443", "[2001:db8::/32]:53/udp"]
  secrets:
    provider: hashicorp-vault
    address: https://vault.prod.acme.com:8200
    key_rotation: automatic
    mappings:
      - env: DB_PASSKEY
        source: prod/database/api-user/password
"""


def issues_of(text: str | bytes) -> list[tuple[Location | None, str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "devdep.yaml")
    return [(i.location, i.path, i.message) for i in caught.value.issues]


def test_a_complete_file_loads_with_its_values() -> None:
    config = parse_config(VALID).config

    runtime = config.pipeline.runtimes[0]
    assert runtime.timeout == timedelta(minutes=10)
    assert runtime.run_command == ["make build", "make test"]
    assert runtime.base_os == "debian-bookworm-minimal"
    rules = [str(rule) for rule in runtime.sandbox.egress.allow]  # type: ignore[union-attr]
    assert rules == [
        "10.0.4.0/24:443/tcp",
        "pypi.org:443/tcp",
        "[2001:db8::/32]:53/udp",
    ]
    mapping = config.pipeline.secrets.mappings[0]  # type: ignore[union-attr]
    assert (mapping.path, mapping.key) == ("prod/database/api-user", "password")
    assert config.pipeline.secrets.mount == "secret"  # type: ignore[union-attr]


def test_a_single_string_run_command_is_one_step() -> None:
    text = VALID.replace(
        "      run_command:\n        - make build\n        - make test\n",
        "      run_command: make all\n",
    )
    assert parse_config(text).config.pipeline.runtimes[0].run_command == ["make all"]


def test_an_unquoted_version_means_the_same() -> None:
    config = parse_config(VALID.replace('version: "4.2"', "version: 4.2")).config
    assert config.version == "4.2"


def test_every_error_is_reported_at_its_line_and_column() -> None:
    text = (
        VALID.replace("owner: security-ops", "ownr: security-ops")
        .replace("vm_memory_mb: 2048", "vm_memory_mb: 64")
        .replace("network_sandbox: allowlist", "network_sandbox: allowlst")
    )

    found = issues_of(text)

    assert (Location(4, 3), "metadata.ownr", "unknown key 'ownr'") in found
    assert (Location(2, 1), "metadata.owner", "missing required key 'owner'") in found
    memory = [f for f in found if f[1] == "pipeline.runtimes[0].vm_memory_mb"]
    assert memory and memory[0][0] == Location(10, 21)
    sandbox = [f for f in found if f[1].endswith("network_sandbox")]
    assert sandbox == [
        (
            Location(18, 26),
            "pipeline.runtimes[0].sandbox.network_sandbox",
            "expected isolated or allowlist, got 'allowlst'",
        )
    ]


def test_a_misspelt_key_gets_a_did_you_mean() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(VALID.replace("vm_vcpus: 1", "vm_vpcus: 1"))
    [issue] = caught.value.issues
    assert issue.hint == "did you mean 'vm_vcpus'?"
    assert "devdep.yaml:9:7: pipeline.runtimes[0].vm_vpcus" in caught.value.details[0]


def test_an_unsupported_version_names_the_supported_one() -> None:
    [(location, _, message)] = issues_of(VALID.replace('"4.2"', '"4.1"'))
    assert location == Location(1, 10)
    assert message == "unsupported version '4.1'"


def test_duplicate_keys_are_errors() -> None:
    text = VALID.replace("  owner: security-ops\n", "  owner: a\n  owner: b\n")
    [(location, path, message)] = issues_of(text)
    assert location == Location(5, 3)
    assert path == "metadata.owner"
    assert "first defined on line 4" in message


def test_duplicate_runtime_names_are_errors() -> None:
    second = "    - name: api-gateway-worker\n      run_command: make\n"
    text = VALID.replace("  secrets:\n", second + "  secrets:\n")
    found = issues_of(text)
    assert any("used twice" in message for _, _, message in found)


def test_egress_needs_the_allowlist_sandbox() -> None:
    text = VALID.replace("network_sandbox: allowlist", "network_sandbox: isolated")
    [(_, path, message)] = issues_of(text)
    assert path == "pipeline.runtimes[0].sandbox"
    assert "only allowed with network_sandbox: allowlist" in message


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        ("10.0.4.0/33:443", "not a valid network"),
        ("10.0.4.1/24", "not a valid network"),
        ("pypi.org:0", "from 1 to 65535"),
        ("pypi.org:443/icmp", "tcp or udp"),
        ("bad_host!:443", "DNS name"),
        ("[2001:db8::/32", "closing ']'"),
    ],
)
def test_bad_egress_rules_say_what_is_wrong(rule: str, fragment: str) -> None:
    text = VALID.replace('"pypi.org:443"', f'"{rule}"')
    found = issues_of(text)
    assert any(fragment in message for _, _, message in found), found


def test_vault_provider_needs_an_address() -> None:
    text = VALID.replace("    address: https://vault.prod.acme.com:8200\n", "")
    [(_, path, message)] = issues_of(text)
    assert path == "pipeline.secrets"
    assert "needs an 'address'" in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (b"", "the file is empty"),
        (b"# only a comment\n", "the file is empty"),
        (b"\xff\xfe\x00binary", "is not UTF-8 text"),
        (b"- a\n- b\n", "expected a mapping of keys at the top"),
        (b"a: 1\n---\nb: 2\n", "invalid YAML"),
        (b"version: !!python/object:os.system x\n", "cannot read this value"),
        (b"metadata:\n\tnamespace: x\n", "invalid YAML"),
        (b"a: &a [*a]\n", "refers to its own anchor"),
        (b"? [a, b]\n: c\n", "a key must be a plain word"),
        (b"a: [1, 2\n", "invalid YAML"),
        (b"a: \x00\n", "invalid YAML"),
    ],
)
def test_unreadable_input_is_a_located_error(text: bytes, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    [issue] = caught.value.issues
    assert fragment in issue.message
    assert issue.location is not None


def test_tabs_get_a_hint() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(b"metadata:\n\tnamespace: x\n")
    assert caught.value.issues[0].hint == "indent with spaces; YAML does not allow tabs"


def test_an_alias_bomb_is_refused_without_expanding_it() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    previous = "a"
    for name in "bcdefghijklmnop":  # 9**16 values once expanded
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
        previous = name
    [(_, _, message)] = issues_of("\n".join(lines) + "\n")
    assert "possible alias bomb" in message


def test_aliases_and_merge_keys_of_normal_size_work() -> None:
    text = VALID.replace(
        "  runtimes:\n    - name: api-gateway-worker\n",
        "  runtimes:\n    - &worker\n      name: api-gateway-worker\n",
    ).replace(
        "  secrets:\n",
        "    - <<: *worker\n      name: second-worker\n  secrets:\n",
    )
    runtimes = parse_config(text).config.pipeline.runtimes
    assert [r.name for r in runtimes] == ["api-gateway-worker", "second-worker"]
    assert runtimes[1].run_command == ["make build", "make test"]


def test_deep_nesting_is_refused_cleanly() -> None:
    [(_, _, message)] = issues_of("a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested too deeply" in message


def test_a_file_over_the_size_limit_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "devdep.yaml"
    with path.open("wb") as handle:
        handle.truncate(10 * 1024 * 1024)

    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"at most {MAX_FILE_BYTES} bytes" in caught.value.issues[0].message


def test_missing_file_and_directory_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(UsageError, match="is a directory"):
        load_config(tmp_path)
