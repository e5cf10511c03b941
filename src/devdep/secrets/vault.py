"""The `hashicorp-vault` provider: reads KV secrets from Vault or OpenBao with hvac.

One provider serves one run. Opening it logs in, in this order:

1. a token from DEVDEP_VAULT_TOKEN, else VAULT_TOKEN;
2. AppRole, with DEVDEP_VAULT_ROLE_ID and DEVDEP_VAULT_SECRET_ID (mount
   DEVDEP_VAULT_APPROLE_MOUNT, default `approle`);
3. JWT auth with the run's OIDC token (role DEVDEP_VAULT_JWT_ROLE, else the
   mount's default role; mount DEVDEP_VAULT_JWT_MOUNT, default `jwt`).

It then creates a child token for the run, whose TTL is at most the run's, and
reads every secret with that token alone. `close()` revokes the child token,
and the login token too when the provider made it.

The child token's policies are, in order of preference: those named in
DEVDEP_VAULT_RUN_POLICIES; for a root login token, a policy made for the run
that allows reading exactly the mapped secrets, deleted at close; otherwise the
login token's own policies, the narrowest set Vault lets a non-root token hand
down.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import logging
import os
import re
import socket
import ssl
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn, TypeVar
from urllib.parse import urlsplit

import hvac
import hvac.exceptions
import requests

from devdep.config.schema import SecretMapping, Secrets
from devdep.secrets.errors import (
    SecretKeyMissing,
    SecretPathMissing,
    VaultAuthFailed,
    VaultDnsFailure,
    VaultForbidden,
    VaultProtocolError,
    VaultTlsFailure,
    VaultUnreachable,
)
from devdep.secrets.provider import FetchedSecret

logger = logging.getLogger(__name__)

_E = TypeVar("_E", bound=BaseException)
_ERRORS_OCCURRED = re.compile(r"^\d+ errors? occurred:?$")

DEFAULT_TIMEOUT = 10
DEFAULT_APPROLE_MOUNT = "approle"
DEFAULT_JWT_MOUNT = "jwt"

# Characters that are literal in an ACL policy path; '*' and '+' are globs there,
# and a path holding them could not be granted alone.
_LITERAL_POLICY_PATH = re.compile(r"^[A-Za-z0-9._@:=,~-]+(/[A-Za-z0-9._@:=,~-]+)*$")


@dataclass(frozen=True)
class VaultSettings:
    """Where Vault is, how to log in, and what to give the run's token; read from
    devdep.yaml and the environment."""

    address: str
    mount: str
    token: str | None = None
    token_variable: str | None = None
    role_id: str | None = None
    secret_id: str | None = None
    approle_mount: str = DEFAULT_APPROLE_MOUNT
    jwt_role: str | None = None
    jwt_mount: str = DEFAULT_JWT_MOUNT
    run_policies: tuple[str, ...] | None = None
    ca_bundle: str | None = None
    timeout: int = DEFAULT_TIMEOUT  # seconds, for each request

    def __repr__(self) -> str:
        # The dataclass repr would print the token and the secret ID.
        return f"VaultSettings(address={self.address!r}, mount={self.mount!r})"

    @classmethod
    def from_config(cls, secrets: Secrets, env: Mapping[str, str]) -> VaultSettings:
        assert secrets.address is not None  # the schema requires it for this provider
        token, token_variable = None, None
        for variable in ("DEVDEP_VAULT_TOKEN", "VAULT_TOKEN"):
            if env.get(variable):
                token, token_variable = env[variable], variable
                break
        policies = env.get("DEVDEP_VAULT_RUN_POLICIES", "")
        return cls(
            address=secrets.address.rstrip("/"),
            mount=secrets.mount,
            token=token,
            token_variable=token_variable,
            role_id=env.get("DEVDEP_VAULT_ROLE_ID") or None,
            secret_id=env.get("DEVDEP_VAULT_SECRET_ID") or None,
            approle_mount=env.get("DEVDEP_VAULT_APPROLE_MOUNT")
            or DEFAULT_APPROLE_MOUNT,
            jwt_role=env.get("DEVDEP_VAULT_JWT_ROLE") or None,
            jwt_mount=env.get("DEVDEP_VAULT_JWT_MOUNT") or DEFAULT_JWT_MOUNT,
            run_policies=tuple(p.strip() for p in policies.split(",") if p.strip())
            or None,
            ca_bundle=env.get("DEVDEP_VAULT_CACERT") or env.get("VAULT_CACERT") or None,
            timeout=_timeout(env.get("DEVDEP_VAULT_TIMEOUT", "")),
        )


def _timeout(text: str) -> int:
    if not text:
        return DEFAULT_TIMEOUT
    if text.isdigit() and int(text) > 0:
        return int(text)
    logger.warning(
        "DEVDEP_VAULT_TIMEOUT=%r is not a whole number of seconds; using %ds",
        text,
        DEFAULT_TIMEOUT,
    )
    return DEFAULT_TIMEOUT


@dataclass(frozen=True)
class KvMount:
    path: str
    version: int


class VaultProvider:
    """A logged-in connection to Vault for one run; see the module docstring."""

    def __init__(self, settings: VaultSettings, mappings: Sequence[SecretMapping]):
        self.settings = settings
        self.mappings = list(mappings)
        verify: bool | str = settings.ca_bundle or True
        # hvac takes `verify` from a session it is given and ignores its own
        # argument (hvac 2.x), so the session must carry it.
        self._session = requests.Session()
        self._session.verify = verify
        # An empty token keeps hvac from picking up VAULT_TOKEN or ~/.vault-token
        # behind our back: which credential is used is decided here.
        self._login = hvac.Client(
            url=settings.address,
            token="",
            verify=verify,
            timeout=settings.timeout,
            session=self._session,
        )
        self._run = hvac.Client(
            url=settings.address,
            token="",
            verify=verify,
            timeout=settings.timeout,
            session=self._session,
        )
        self._login_is_ours = False
        self._run_token_accessor: str | None = None
        self._run_policy: str | None = None
        self._kv_mounts: dict[str, KvMount] = {}
        self.auth_method = "none"

    @classmethod
    def open(
        cls,
        secrets: Secrets,
        *,
        run_id: str,
        run_ttl: timedelta,
        oidc_token: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> VaultProvider:
        """Log in and create the run's child token; on failure nothing is left."""
        settings = VaultSettings.from_config(
            secrets, os.environ if env is None else env
        )
        _warn_if_cleartext(settings.address)
        provider = cls(settings, secrets.mappings)
        try:
            provider._authenticate(oidc_token)
            provider._create_run_token(run_id, run_ttl)
        except BaseException:
            provider.close()
            raise
        return provider

    @property
    def run_token_accessor(self) -> str | None:
        """The accessor of the run's child token: names it in Vault's audit log
        and lets an operator revoke it, without being the token."""
        return self._run_token_accessor

    # --- logging in ----------------------------------------------------------

    def _authenticate(self, oidc_token: str | None) -> None:
        settings = self.settings
        if settings.token:
            self.auth_method = f"token from {settings.token_variable}"
            self._login.token = settings.token
        elif settings.role_id and settings.secret_id:
            self.auth_method = f"AppRole at auth/{settings.approle_mount}"
            with self._translate(self.mappings, "logging in", auth=True):
                self._login.auth.approle.login(
                    role_id=settings.role_id,
                    secret_id=settings.secret_id,
                    mount_point=settings.approle_mount,
                )
            self._login_is_ours = True
        elif oidc_token:
            self.auth_method = f"JWT at auth/{settings.jwt_mount}"
            with self._translate(self.mappings, "logging in", auth=True):
                self._login.auth.jwt.jwt_login(
                    role=settings.jwt_role, jwt=oidc_token, path=settings.jwt_mount
                )
            self._login_is_ours = True
        else:
            raise VaultAuthFailed(
                self.mappings,
                f"no credentials for {settings.address}: neither DEVDEP_VAULT_TOKEN "
                f"nor VAULT_TOKEN is set, nor DEVDEP_VAULT_ROLE_ID and "
                f"DEVDEP_VAULT_SECRET_ID, and the run has no OIDC token for JWT auth",
            )
        logger.debug("credentials for %s: %s", settings.address, self.auth_method)

    def _create_run_token(self, run_id: str, run_ttl: timedelta) -> None:
        seconds = int(run_ttl.total_seconds())
        if seconds < 1:
            raise ValueError(f"a run's TTL must be at least one second, not {run_ttl}")

        with self._translate(self.mappings, "looking up the login token", auth=True):
            login = self._login.auth.token.lookup_self()["data"]
        policies = self._run_token_policies(run_id, list(login.get("policies") or []))

        with self._translate(
            self.mappings,
            "creating the run's token",
            auth=True,
            hint="the login token's policies must allow 'update' on "
            "auth/token/create, so that each run gets a child token of its own",
        ):
            created = self._login.auth.token.create(
                policies=policies,
                ttl=f"{seconds}s",
                explicit_max_ttl=f"{seconds}s",
                renewable=False,
                display_name=f"devdep-{run_id}",
                meta={"devdep_run": run_id},
            )
        self._run.token = created["auth"]["client_token"]
        self._run_token_accessor = created["auth"]["accessor"]
        logger.debug(
            "run token %s created for run %s: ttl %ds, policies %s",
            self._run_token_accessor,
            run_id,
            seconds,
            ",".join(created["auth"].get("policies") or []),
        )

    def _run_token_policies(self, run_id: str, login_policies: list[str]) -> list[str]:
        if self.settings.run_policies:
            return list(self.settings.run_policies)
        if "root" not in login_policies:
            return [policy for policy in login_policies if policy != "default"]

        paths = [self._policy_paths(mapping) for mapping in self.mappings]
        if not all(paths):
            logger.warning(
                "a secret path holds policy glob characters; the run's token keeps "
                "the root policy of the login token"
            )
            return ["root"]
        rules = "\n".join(
            f'path "{path}" {{ capabilities = ["read"] }}'
            for mapping_paths in paths
            for path in mapping_paths
        )
        name = f"devdep-run-{run_id}"
        with self._translate(self.mappings, "creating the run's policy", auth=True):
            self._login.sys.create_or_update_acl_policy(name=name, policy=rules)
        self._run_policy = name
        return [name]

    def _policy_paths(self, mapping: SecretMapping) -> list[str]:
        """What reading one mapping needs: its KV v2 data and metadata (for the
        rotation watch), or its KV v1 path; the mount's version is not known yet."""
        mount, path = self.settings.mount, mapping.path
        if not _LITERAL_POLICY_PATH.match(f"{mount}/{path}"):
            return []
        return [f"{mount}/data/{path}", f"{mount}/metadata/{path}", f"{mount}/{path}"]

    # --- reading -------------------------------------------------------------

    def fetch(
        self, mapping: SecretMapping, version: int | None = None
    ) -> FetchedSecret:
        """The value of one mapping (a given KV v2 version, or the latest)."""
        mount = self._kv_mount(mapping)
        location = f"{mount.path}/{mapping.path}"
        with self._translate([mapping], f"reading {location}"):
            if mount.version == 2:
                answer = self._run.secrets.kv.v2.read_secret_version(
                    path=mapping.path,
                    version=version,
                    mount_point=mount.path,
                    raise_on_deleted_version=True,
                )
                data = answer["data"]["data"] or {}
                found_version: int | None = int(answer["data"]["metadata"]["version"])
            else:
                answer = self._run.secrets.kv.v1.read_secret(
                    path=mapping.path, mount_point=mount.path
                )
                data = answer["data"] or {}
                found_version = None

        if mapping.key not in data:
            keys = ", ".join(sorted(data)) or "no keys"
            raise SecretKeyMissing(
                [mapping],
                f"secret {location} has no key {mapping.key!r} (it has: {keys})",
            )
        return FetchedSecret(_as_bytes(data[mapping.key]), found_version)

    def current_version(self, mapping: SecretMapping) -> int | None:
        """The latest version of a KV v2 secret; None on a KV v1 mount."""
        mount = self._kv_mount(mapping)
        if mount.version != 2:
            return None
        location = f"{mount.path}/metadata/{mapping.path}"
        with self._translate([mapping], f"reading {location}"):
            answer = self._run.secrets.kv.v2.read_secret_metadata(
                path=mapping.path, mount_point=mount.path
            )
        return int(answer["data"]["current_version"])

    def _kv_mount(self, mapping: SecretMapping) -> KvMount:
        """Which KV version the configured mount runs, asked once per provider.

        `sys/internal/ui/mounts/<mount>/<path>` is the endpoint Vault's own CLI
        asks before `kv get`: any token that may read the secret may ask it.
        """
        mount = self.settings.mount
        known = self._kv_mounts.get(mount)
        if known is not None:
            return known
        with self._translate([mapping], f"reading {mount}/{mapping.path}"):
            answer = self._run.read(f"sys/internal/ui/mounts/{mount}/{mapping.path}")
        data = (answer.get("data") if isinstance(answer, dict) else None) or {}
        engine = data.get("type")
        mounted_at = str(data.get("path", "")).rstrip("/")
        if engine not in ("kv", "generic") or mounted_at != mount:
            where = f"{mounted_at}/ ({engine})" if mounted_at else "no mount"
            raise SecretPathMissing(
                [mapping],
                f"{mount}/ is not a KV mount on {self.settings.address}: the path "
                f"lies in {where}",
            )
        version = int((data.get("options") or {}).get("version") or 1)
        found = KvMount(mount, version)
        self._kv_mounts[mount] = found
        logger.debug("mount %s/ is KV version %d", mount, version)
        return found

    # --- closing -------------------------------------------------------------

    def close(self) -> None:
        """Revoke the run's token, delete the run's policy, and revoke the login
        token if this provider made it. Never raises: a failure is logged, and
        the tokens' TTLs still bound what is left."""
        if self._run.token:
            self._best_effort(
                "revoking the run's token", self._run.auth.token.revoke_self
            )
            self._run.token = ""
        if self._run_policy is not None:
            policy, self._run_policy = self._run_policy, None
            self._best_effort(
                "deleting the run's policy",
                lambda: self._login.adapter.delete(f"/v1/sys/policies/acl/{policy}"),
            )
        if self._login_is_ours and self._login.token:
            self._best_effort(
                "revoking the login token", self._login.auth.token.revoke_self
            )
        self._login.token = ""
        self._login_is_ours = False
        self._session.close()

    def _best_effort(self, action: str, call: Callable[[], object]) -> None:
        try:
            call()
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            logger.warning(
                "%s at %s failed: %s", action, self.settings.address, _short(exc)
            )
        else:
            logger.debug("%s at %s: done", action, self.settings.address)

    # --- errors --------------------------------------------------------------

    @contextlib.contextmanager
    def _translate(
        self,
        mappings: Sequence[SecretMapping],
        action: str,
        *,
        auth: bool = False,
        hint: str | None = None,
    ) -> Iterator[None]:
        """Turn hvac's and requests' exceptions into our errors, naming the
        mappings and what was being done."""
        try:
            yield
        except (requests.exceptions.InvalidJSONError, KeyError, TypeError) as exc:
            # Not JSON, or JSON without the fields every Vault answer has: hvac
            # hands back the bare response for a body that is not JSON.
            raise VaultProtocolError(
                mappings,
                f"{action}: {self.settings.address} did not answer like Vault",
                hint="check that the secrets address is the Vault server's",
            ) from exc
        except requests.RequestException as exc:
            self._raise_transport(mappings, exc)
        except hvac.exceptions.VaultError as exc:
            self._raise_answer(mappings, action, exc, auth=auth, hint=hint)

    def _raise_transport(
        self, mappings: Sequence[SecretMapping], exc: requests.RequestException
    ) -> NoReturn:
        address = self.settings.address
        host = urlsplit(address).hostname or address
        tls = _find(exc, ssl.SSLError)
        if isinstance(exc, requests.exceptions.SSLError) or tls is not None:
            detail = _tls_reason(tls) if tls is not None else _short(exc)
            raise VaultTlsFailure(
                mappings, f"TLS with {address} failed: {detail}"
            ) from exc
        if _find(exc, socket.gaierror) is not None or _names_resolution(exc):
            raise VaultDnsFailure(
                mappings, f"the host name {host} of {address} does not resolve"
            ) from exc
        if isinstance(exc, requests.exceptions.Timeout):
            raise VaultUnreachable(
                mappings,
                f"{address} did not answer within {self.settings.timeout}s",
            ) from exc
        refused = _find(exc, ConnectionRefusedError)
        if refused is not None or _has_errno(exc, errno.ECONNREFUSED):
            raise VaultUnreachable(
                mappings, f"{address} is unreachable: connection refused"
            ) from exc
        raise VaultUnreachable(
            mappings, f"{address} is unreachable: {_short(exc)}"
        ) from exc

    def _raise_answer(
        self,
        mappings: Sequence[SecretMapping],
        action: str,
        exc: hvac.exceptions.VaultError,
        *,
        auth: bool,
        hint: str | None,
    ) -> NoReturn:
        address = self.settings.address
        said = _vault_said(exc)
        if isinstance(exc, hvac.exceptions.VaultDown):
            raise VaultUnreachable(
                mappings, f"{address} is sealed or unavailable (503): {said}"
            ) from exc
        if auth and isinstance(
            exc,
            hvac.exceptions.Forbidden
            | hvac.exceptions.Unauthorized
            | hvac.exceptions.InvalidRequest
            | hvac.exceptions.InvalidPath,
        ):
            raise VaultAuthFailed(
                mappings,
                f"{address} refused the {self.auth_method} while {action}: {said}",
                hint=hint,
            ) from exc
        if isinstance(exc, hvac.exceptions.Forbidden | hvac.exceptions.Unauthorized):
            raise VaultForbidden(
                mappings, f"{address} refused {action} (403: {said})"
            ) from exc
        if isinstance(exc, hvac.exceptions.InvalidPath):
            raise SecretPathMissing(
                mappings, f"{action}: {address} has no secret at that path (404)"
            ) from exc
        status = getattr(exc, "status_code", None) or type(exc).__name__
        raise VaultProtocolError(
            mappings, f"{action}: {address} answered {status}: {said}"
        ) from exc


def _warn_if_cleartext(address: str) -> None:
    parts = urlsplit(address)
    if parts.scheme != "http":
        return
    host = parts.hostname or ""
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return
    if host == "localhost":
        return
    logger.warning(
        "the secrets address %s is plain http: the token and the secret values "
        "cross the network unencrypted",
        address,
    )


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and everything it wraps: causes, contexts, urllib3's `reason`, and
    the exceptions requests keeps in its args."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [
            current.__cause__,
            current.__context__,
            getattr(current, "reason", None),
        ]
        linked.extend(current.args)
        pending.extend(item for item in linked if isinstance(item, BaseException))


def _find(exc: BaseException, kind: type[_E]) -> _E | None:
    for cause in _causes(exc):
        if isinstance(cause, kind):
            return cause
    return None


def _names_resolution(exc: BaseException) -> bool:
    return any(type(c).__name__ == "NameResolutionError" for c in _causes(exc))


def _has_errno(exc: BaseException, code: int) -> bool:
    return any(isinstance(c, OSError) and c.errno == code for c in _causes(exc))


def _tls_reason(error: ssl.SSLError) -> str:
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return f"certificate verify failed: {error.verify_message}"
    return str(error.reason or error.strerror or error).lower().replace("_", " ")


def _vault_said(exc: hvac.exceptions.VaultError) -> str:
    """Vault's error list on one line, without its "N errors occurred" framing."""
    lines: list[str] = []
    for error in getattr(exc, "errors", None) or [str(exc)]:
        for line in str(error).splitlines():
            text = line.strip().lstrip("*").strip()
            if text and not _ERRORS_OCCURRED.match(text):
                lines.append(text)
    return "; ".join(lines) or type(exc).__name__


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _as_bytes(value: object) -> bytes:
    """A KV value as bytes: strings as UTF-8, anything else as compact JSON."""
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode("utf-8")
