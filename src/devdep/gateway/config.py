"""The gateway's configuration file (gateway.yaml): its schema and its loader.

Every problem is reported at its line and column, all of them at once. Beyond
the schema the loader checks what can be checked before binding: the TLS files
exist, and an address that is not loopback is only listened on with TLS.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from devdep.auth.settings import IdentitySettings
from devdep.config.loader import (
    ConfigIssue,
    ConfigPath,
    Location,
    SourceMap,
    dotted,
)
from devdep.gateway.errors import GatewayConfigError

DEFAULT_LISTEN = "127.0.0.1:8443"
DEFAULT_STORE = "sqlite:////var/lib/devdep/gateway.db"
MAX_CONFIG_BYTES = 256 * 1024


class TlsSettings(BaseModel):
    """A PEM certificate chain and its private key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    certificate: Path
    private_key: Path


class ListenAddress(BaseModel):
    """Where the gateway listens: an IP address or host name, and a port."""

    model_config = ConfigDict(frozen=True)

    host: str
    port: int = Field(ge=1, le=65535)

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def url(self, tls: bool) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if tls else 'http'}://{host}:{self.port}"


def parse_listen(text: str) -> ListenAddress:
    """`host:port` or `[ipv6]:port` into a ListenAddress; ValueError otherwise."""
    host, separator, port = text.strip().rpartition(":")
    if not separator or not host or not port.isdigit():
        raise ValueError(f"{text!r} is not host:port, e.g. 127.0.0.1:8443")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)
    elif ":" in host:
        raise ValueError(f"write an IPv6 address in brackets: [{host}]:{port}")
    return ListenAddress(host=host, port=int(port))


class GatewaySettings(BaseModel):
    """The whole gateway.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: ListenAddress = Field(default_factory=lambda: parse_listen(DEFAULT_LISTEN))
    store: str = DEFAULT_STORE
    # Fractions are accepted (0.05 is three seconds), so tests can watch a
    # session run out; production keeps the default.
    session_minutes: float = Field(default=15, gt=0, le=24 * 60)
    sweep_seconds: float = Field(default=5, gt=0, le=3600)
    # Addresses of reverse proxies whose X-Forwarded-For is believed; without
    # any, the client IP footprint is the peer address of the connection.
    trusted_proxies: list[str] = Field(default_factory=list)
    tls: TlsSettings | None = None
    identity: IdentitySettings

    @field_validator("listen", mode="before")
    @classmethod
    def _parse_listen(cls, value: Any) -> Any:
        return parse_listen(value) if isinstance(value, str) else value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_addresses(cls, proxies: list[str]) -> list[str]:
        for proxy in proxies:
            ipaddress.ip_network(proxy, strict=False)
        return proxies

    @property
    def url(self) -> str:
        return self.listen.url(self.tls is not None)


# --- loading ------------------------------------------------------------------


def _location(mark: yaml.Mark | None) -> Location | None:
    return Location(mark.line + 1, mark.column + 1) if mark else None


class _Problem(Exception):
    def __init__(self, issue: ConfigIssue) -> None:
        super().__init__(issue.message)
        self.issue = issue


def _convert(
    node: yaml.Node,
    path: ConfigPath,
    loader: yaml.SafeLoader,
    source: SourceMap,
    seen: set[int],
) -> Any:
    """Plain data from a composed node, recording where each value stands and
    refusing duplicate keys and aliases (which could expand without bound)."""
    if id(node) in seen:
        raise _Problem(
            ConfigIssue(
                _location(node.start_mark),
                dotted(path),
                "anchors and aliases are not supported in a gateway.yaml",
                "write the value out",
            )
        )
    seen.add(id(node))
    source.values.setdefault(path, _location(node.start_mark) or Location(1, 1))
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else ""
            if not key:
                raise _Problem(
                    ConfigIssue(
                        _location(key_node.start_mark), dotted(path), "invalid key"
                    )
                )
            if key in result:
                raise _Problem(
                    ConfigIssue(
                        _location(key_node.start_mark),
                        dotted((*path, key)),
                        f"duplicate key '{key}'",
                        "keep one of the two",
                    )
                )
            source.keys[(*path, key)] = _location(key_node.start_mark) or Location(1, 1)
            result[key] = _convert(value_node, (*path, key), loader, source, seen)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _convert(child, (*path, index), loader, source, seen)
            for index, child in enumerate(node.value)
        ]
    return loader.construct_object(node, deep=True)


def _parse_yaml(text: str) -> tuple[Any, SourceMap]:
    try:
        # The reader checks the characters as soon as the loader is made.
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:
        raise _Problem(ConfigIssue(Location(1, 1), "", f"invalid YAML: {exc}")) from exc
    try:
        root = loader.get_single_node()
        if root is None:
            raise _Problem(ConfigIssue(Location(1, 1), "", "the file is empty"))
        source = SourceMap()
        return _convert(root, (), loader, source, set()), source
    except yaml.MarkedYAMLError as exc:
        problem = exc.problem or exc.context or "invalid YAML"
        mark = exc.problem_mark or exc.context_mark
        raise _Problem(
            ConfigIssue(_location(mark), "", f"invalid YAML: {problem}")
        ) from exc
    except yaml.YAMLError as exc:
        raise _Problem(ConfigIssue(Location(1, 1), "", f"invalid YAML: {exc}")) from exc
    except RecursionError as exc:
        raise _Problem(
            ConfigIssue(Location(1, 1), "", "the YAML is nested too deeply")
        ) from exc
    finally:
        loader.dispose()


def _issue_from(error: Any, source: SourceMap) -> ConfigIssue:
    path: ConfigPath = tuple(
        part for part in error["loc"] if isinstance(part, str | int)
    )
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        location = source.keys.get(path) or source.nearest(path)
        return ConfigIssue(location, dotted(path), f"unknown key '{path[-1]}'")
    if error["type"] == "missing":
        return ConfigIssue(
            source.nearest(path), dotted(path), f"missing required key '{path[-1]}'"
        )
    return ConfigIssue(source.nearest(path), dotted(path), message)


def _semantic_issues(
    settings: GatewaySettings, source: SourceMap, base: Path
) -> tuple[GatewaySettings, list[ConfigIssue]]:
    issues: list[ConfigIssue] = []
    tls = settings.tls
    if tls is not None:
        # Relative TLS paths are relative to the configuration file, not to
        # wherever the gateway happens to be started from.
        tls = TlsSettings(
            certificate=base / tls.certificate, private_key=base / tls.private_key
        )
        for name in ("certificate", "private_key"):
            file = getattr(tls, name)
            if not file.is_file():
                issues.append(
                    ConfigIssue(
                        source.nearest(("tls", name)),
                        f"tls.{name}",
                        f"{file} does not exist or is not a file",
                    )
                )
        settings = settings.model_copy(update={"tls": tls})
    elif not settings.listen.is_loopback:
        issues.append(
            ConfigIssue(
                source.nearest(("listen",)),
                "listen",
                f"refusing to listen on {settings.listen.host}, which is not "
                "loopback, without TLS",
                "configure tls.certificate and tls.private_key, or listen on 127.0.0.1",
            )
        )
    return settings, issues


def parse_gateway_config(
    text: str | bytes, filename: str = "gateway.yaml", base: Path | None = None
) -> GatewaySettings:
    """Validate a gateway.yaml's content; raise GatewayConfigError listing every
    problem at its line and column."""
    try:
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise _Problem(
                    ConfigIssue(Location(1, 1), "", "the file is not UTF-8 text")
                ) from exc
        if len(text) > MAX_CONFIG_BYTES:
            raise _Problem(ConfigIssue(Location(1, 1), "", "the file is too large"))
        data, source = _parse_yaml(text)
    except _Problem as problem:
        raise _config_error(filename, [problem.issue]) from None

    if not isinstance(data, dict):
        raise _config_error(
            filename,
            [ConfigIssue(Location(1, 1), "", "expected a mapping of keys at the top")],
        )
    try:
        settings = GatewaySettings.model_validate(data)
    except pydantic.ValidationError as exc:
        issues = [_issue_from(error, source) for error in exc.errors()]
        raise _config_error(filename, issues) from None

    settings, issues = _semantic_issues(settings, source, base or Path.cwd())
    if issues:
        raise _config_error(filename, issues)
    return settings


def load_gateway_config(path: Path) -> GatewaySettings:
    """Read and validate the gateway.yaml at `path`."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise GatewayConfigError(
            f"{path} does not exist",
            hint="write one as docs/gateway.md describes",
        ) from None
    except OSError as exc:
        raise GatewayConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_gateway_config(raw, str(path), path.resolve().parent)


def _config_error(filename: str, issues: list[ConfigIssue]) -> GatewayConfigError:
    issues = sorted(issues, key=lambda issue: issue.location or Location(0, 0))
    count = len(issues)
    return GatewayConfigError(
        f"{filename} is invalid: {count} error{'s' if count != 1 else ''}",
        hint="fix the lines above; docs/gateway.md describes every key",
        details=[issue.render(filename) for issue in issues],
    )
