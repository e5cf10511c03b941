"""The devdep.yaml schema: what a pipeline declares, checked with pydantic.

Every model forbids unknown keys, so a misspelt key is an error rather than a
setting that silently does nothing. docs/config.md documents each field.
"""

from __future__ import annotations

import ipaddress
import os
import re
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from devdep.config.durations import parse_duration

SUPPORTED_VERSION = "4.2"
DEFAULT_BASE_OS = "debian-bookworm-minimal"
DEFAULT_TIMEOUT = timedelta(minutes=30)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_IMAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)*"
    r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
)


def _dns_label(value: str) -> str:
    if not _DNS_LABEL.match(value):
        raise ValueError(
            "must be a DNS label: 1-63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return value


def _hostname(value: str) -> str:
    normalised = value.lower().rstrip(".")
    if not _HOSTNAME.match(normalised):
        raise ValueError("must be a DNS name such as build.acme.com")
    return normalised


def _image_name(value: str) -> str:
    if not _IMAGE_NAME.match(value):
        raise ValueError(
            "must be an image name: lowercase letters, digits, '.', '_' or '-', "
            "such as debian-bookworm-minimal"
        )
    return value


def _env_name(value: str) -> str:
    if not _ENV_NAME.match(value) or len(value) > 128:
        raise ValueError(
            "must be an environment variable name: letters, digits and '_', "
            "not starting with a digit"
        )
    return value


def _secret_source(value: str) -> str:
    if not re.match(r"^[^/\s]+(/[^/\s]+)+$", value):
        raise ValueError(
            "must be the secret's path and then the key inside it, such as "
            "prod/database/api-user/password"
        )
    return value


def _vault_address(value: str) -> str:
    if not re.match(r"^https?://[^\s/]+(/\S*)?$", value):
        raise ValueError("must be an http(s) URL, such as https://vault.acme.com:8200")
    return value


def _kv_mount(value: str) -> str:
    if not re.match(r"^[^/\s]+(/[^/\s]+)*$", value):
        raise ValueError("must be a mount path without leading or trailing '/'")
    return value


DnsLabel = Annotated[str, AfterValidator(_dns_label)]
Hostname = Annotated[str, AfterValidator(_hostname)]


class StrictModel(BaseModel):
    """The base of every devdep.yaml section: unknown keys and lax coercions fail."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Metadata(StrictModel):
    namespace: DnsLabel
    owner: str = Field(min_length=1, max_length=128)
    environment: DnsLabel
    entity: str | None = Field(default=None, min_length=1, max_length=128)
    domain: Hostname | None = None


class EgressRule(StrictModel):
    """One allowlist entry: a network or a hostname, optionally a port and protocol."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    hostname: str | None = None
    port: int | None = None
    protocol: Literal["tcp", "udp"] = "tcp"

    def __str__(self) -> str:
        target = str(self.network) if self.network is not None else self.hostname
        if self.network is not None and self.network.version == 6:
            target = f"[{target}]"
        if self.port is None:
            return f"{target}"
        return f"{target}:{self.port}/{self.protocol}"


def parse_egress_rule(value: object) -> object:
    """Turn `CIDR[:port[/proto]]` or `hostname[:port[/proto]]` into an EgressRule.

    An IPv6 network is written in brackets, `[2001:db8::/32]:443/tcp`, because
    its colons would otherwise be read as the port separator.
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    target, port_part = text, None
    if text.startswith("["):
        closing = text.find("]")
        if closing < 0:
            raise ValueError("an IPv6 network needs its closing ']'")
        target, rest = text[1:closing], text[closing + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError("expected ':port' after ']'")
            port_part = rest[1:]
    elif ":" in text:
        target, port_part = text.rsplit(":", 1)

    port: int | None = None
    protocol = "tcp"
    if port_part is not None:
        port_text, _, protocol_text = port_part.partition("/")
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"port {port_text!r} must be a number from 1 to 65535")
        port = int(port_text)
        if protocol_text:
            if protocol_text not in ("tcp", "udp"):
                raise ValueError(f"protocol {protocol_text!r} must be tcp or udp")
            protocol = protocol_text

    try:
        network = ipaddress.ip_network(target, strict=True)
    except ValueError as exc:
        if any(ch.isdigit() for ch in target) and all(
            ch.isdigit() or ch in "./:" for ch in target
        ):
            raise ValueError(f"{target!r} is not a valid network: {exc}") from exc
        return EgressRule(hostname=_hostname(target), port=port, protocol=protocol)  # type: ignore[arg-type]
    return EgressRule(network=network, port=port, protocol=protocol)  # type: ignore[arg-type]


class Egress(StrictModel):
    allow: list[Annotated[EgressRule, BeforeValidator(parse_egress_rule)]] = Field(
        default_factory=list
    )


class Sandbox(StrictModel):
    read_only_rootfs: bool = True
    network_sandbox: Literal["isolated", "allowlist"] = "isolated"
    allow_dns_resolution: bool = False
    egress: Egress | None = None
    # fail: a run with any egress violation ends with 401; report: it goes on,
    # and its report lists the violations.
    on_violation: Literal["fail", "report"] = "fail"

    @model_validator(mode="after")
    def _egress_needs_allowlist(self) -> Sandbox:
        if self.egress is not None and self.network_sandbox != "allowlist":
            raise ValueError(
                "'egress' is only allowed with network_sandbox: allowlist; an "
                "isolated sandbox has no network at all"
            )
        if self.allow_dns_resolution and self.network_sandbox != "allowlist":
            raise ValueError(
                "allow_dns_resolution: true needs network_sandbox: allowlist"
            )
        return self


def _steps(value: object) -> object:
    return [value] if isinstance(value, str) else value


def _non_blank_steps(steps: list[str]) -> list[str]:
    if not steps:
        raise ValueError("needs at least one command")
    for step in steps:
        if not step.strip():
            raise ValueError("a step must not be blank")
    return steps


def _artifact_path(value: str) -> str:
    parts = value.replace("\\", "/").split("/")
    if value.startswith("/") or ".." in parts or not value.strip():
        raise ValueError(
            "must be a relative path under /workspace, without '..', such as dist/"
        )
    return value


def _vcpus(value: int) -> int:
    host_cores = os.cpu_count() or 1
    if not 1 <= value <= host_cores:
        raise ValueError(f"must be from 1 to {host_cores}, the cores of this host")
    return value


class Runtime(StrictModel):
    name: DnsLabel
    vm_vcpus: Annotated[int, AfterValidator(_vcpus)] = 1
    vm_memory_mb: int = Field(default=512, ge=128, le=65536)
    base_os: Annotated[str, AfterValidator(_image_name)] = DEFAULT_BASE_OS
    timeout: Annotated[timedelta, BeforeValidator(parse_duration)] = DEFAULT_TIMEOUT
    run_command: Annotated[
        list[str], BeforeValidator(_steps), AfterValidator(_non_blank_steps)
    ]
    artifacts: list[Annotated[str, AfterValidator(_artifact_path)]] = Field(
        default_factory=list
    )
    sandbox: Sandbox = Field(default_factory=Sandbox)


class SecretMapping(StrictModel):
    env: Annotated[str, AfterValidator(_env_name)]
    source: Annotated[str, AfterValidator(_secret_source)]

    @property
    def path(self) -> str:
        """The secret's path: everything before the last '/'."""
        return self.source.rsplit("/", 1)[0]

    @property
    def key(self) -> str:
        """The key inside the secret: the part after the last '/'."""
        return self.source.rsplit("/", 1)[1]


class Secrets(StrictModel):
    provider: Literal["hashicorp-vault", "local"]
    address: Annotated[str, AfterValidator(_vault_address)] | None = None
    mount: Annotated[str, AfterValidator(_kv_mount)] = "secret"
    key_rotation: Literal["automatic", "manual"] = "manual"
    mappings: list[SecretMapping] = Field(default_factory=list)

    @model_validator(mode="after")
    def _vault_needs_address(self) -> Secrets:
        if self.provider == "hashicorp-vault" and self.address is None:
            raise ValueError(
                "provider hashicorp-vault needs an 'address', such as "
                "https://vault.acme.com:8200"
            )
        return self


class Pipeline(StrictModel):
    runtimes: list[Runtime] = Field(min_length=1)
    secrets: Secrets | None = None


def _https_url(value: str) -> str:
    if not re.match(r"^https://[^\s/:]+(:\d{1,5})?(/\S*)?$", value):
        raise ValueError("must be an https:// URL, such as https://us-east-1.acme.com")
    return value


def _positive_duration(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than 0ms")
    return value


PositiveDuration = Annotated[
    timedelta, BeforeValidator(parse_duration), AfterValidator(_positive_duration)
]


class GatewayNode(StrictModel):
    """One ingress node of the gateway, probed by `network check-routes`."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][\w.-]*$")
    url: Annotated[str, AfterValidator(_https_url)]


class GatewayThresholds(StrictModel):
    """Median probe latencies at which a node is DEGRADED or DOWN."""

    degraded: PositiveDuration = timedelta(milliseconds=100)
    down: PositiveDuration = timedelta(seconds=1)
    probe_timeout: PositiveDuration = timedelta(seconds=3)

    @model_validator(mode="after")
    def _ordered(self) -> GatewayThresholds:
        if not self.degraded < self.down:
            raise ValueError("'degraded' must be shorter than 'down'")
        return self


class Gateway(StrictModel):
    nodes: list[GatewayNode] = Field(min_length=1)
    thresholds: GatewayThresholds = Field(default_factory=GatewayThresholds)

    @field_validator("nodes")
    @classmethod
    def _unique_node_names(cls, nodes: list[GatewayNode]) -> list[GatewayNode]:
        names = [node.name for node in nodes]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"gateway node name {name!r} is used twice")
        return nodes


def _version(value: object) -> object:
    # `version: 4.2` without quotes is a float in YAML; it means the same thing.
    if isinstance(value, float) and str(value) == SUPPORTED_VERSION:
        return SUPPORTED_VERSION
    return value


class PipelineConfig(StrictModel):
    """A whole devdep.yaml."""

    version: Annotated[Literal["4.2"], BeforeValidator(_version)]
    metadata: Metadata
    pipeline: Pipeline
    gateway: Gateway | None = None

    @field_validator("pipeline")
    @classmethod
    def _unique_names(cls, pipeline: Pipeline) -> Pipeline:
        seen: set[str] = set()
        for runtime in pipeline.runtimes:
            if runtime.name in seen:
                raise ValueError(f"runtime name {runtime.name!r} is used twice")
            seen.add(runtime.name)
        env_names: set[str] = set()
        for mapping in pipeline.secrets.mappings if pipeline.secrets else []:
            if mapping.env in env_names:
                raise ValueError(f"secret env {mapping.env!r} is mapped twice")
            env_names.add(mapping.env)
        return pipeline
