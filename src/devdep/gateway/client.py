"""The CLI's side of the gateway: an HTTP client for its API, and the `auth`
and `status` flows that use it with the session cache.

Answers are mapped to devdep's errors here, once: an expired or revoked
session and a rejected token become 101, a refused domain 102, and a gateway
that cannot be reached a usage error (2) naming the URL tried.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import httpx

from devdep.auth import providers
from devdep.auth.errors import ProviderNotConfigured
from devdep.gateway.errors import (
    REAUTHENTICATE_HINT,
    EntityDomainRefused,
    GatewayRequestFailed,
    GatewayUnreachable,
    NotAuthenticated,
    SessionEnded,
    TokenRefused,
)
from devdep.gateway.session_cache import (
    CachedSession,
    clear_session,
    load_session,
    save_session,
)
from devdep.store.tickets import parse_ticket

logger = logging.getLogger(__name__)

Provider = Literal["oidc", "github-oidc", "gitlab-jwt"]
PROVIDERS: tuple[Provider, ...] = ("oidc", "github-oidc", "gitlab-jwt")

DEFAULT_GATEWAY = "http://127.0.0.1:8443"
GATEWAY_VARIABLE = "DEVDEP_GATEWAY"
# A PEM bundle to verify the gateway's certificate with, for a private CA.
GATEWAY_CA_VARIABLE = "DEVDEP_GATEWAY_CA"
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
GITHUB_TOKEN_VARIABLES = (
    "ACTIONS_ID_TOKEN_REQUEST_URL",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
)
DEFAULT_GITHUB_AUDIENCE = "devdep-github-actions"
DOMAIN_REFUSED = "CRITICAL ERROR: INVALID_ENTITY_DOMAIN"
_UNREACHABLE_HINT = (
    f"check --gateway (or ${GATEWAY_VARIABLE}) and that the gateway is running"
)


def resolve_gateway(
    option: str | None,
    cached: CachedSession | None = None,
    env: Mapping[str, str] = os.environ,
) -> str:
    """The gateway URL: --gateway, then $DEVDEP_GATEWAY, then the cached
    session's, then the local default."""
    url = option or env.get(GATEWAY_VARIABLE) or (cached.gateway if cached else None)
    return (url or DEFAULT_GATEWAY).rstrip("/")


def _tls_verification(env: Mapping[str, str]) -> ssl.SSLContext | bool:
    bundle = env.get(GATEWAY_CA_VARIABLE)
    if not bundle:
        return True
    try:
        return ssl.create_default_context(cafile=bundle)
    except (OSError, ssl.SSLError) as exc:
        raise GatewayRequestFailed(
            f"cannot load the CA bundle ${GATEWAY_CA_VARIABLE}={bundle}: {exc}",
            hint="point it at a PEM file of CA certificates",
        ) from exc


class GatewayClient:
    """Speaks the gateway's JSON API and raises devdep errors for its failures."""

    def __init__(
        self,
        url: str,
        *,
        http: httpx.Client | None = None,
        env: Mapping[str, str] = os.environ,
        timeout: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        if http is None:
            http = httpx.Client(timeout=timeout, verify=_tls_verification(env))
        self._http = http

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def issuers(self) -> list[dict[str, Any]]:
        document = self._request("GET", "/v1/issuers")
        issuers = document.get("issuers")
        return (
            [i for i in issuers if isinstance(i, dict)]
            if isinstance(issuers, list)
            else []
        )

    def open_session(self, token: str, provider: Provider) -> dict[str, Any]:
        return self._request(
            "POST", "/v1/sessions", json={"token": token, "provider": provider}
        )

    def session(self, credential: str, ticket: str | None = None) -> dict[str, Any]:
        path = f"/v1/sessions/{ticket}" if ticket else "/v1/sessions/current"
        return self._request("GET", path, credential=credential)

    def revoke(self, credential: str) -> dict[str, Any]:
        return self._request("DELETE", "/v1/sessions/current", credential=credential)

    def _request(
        self,
        method: str,
        path: str,
        *,
        credential: str | None = None,
        json: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if credential:
            headers["Authorization"] = f"Bearer {credential}"
        try:
            answer = self._http.request(
                method, self.url + path, headers=headers, json=json
            )
        except httpx.TransportError as exc:
            raise GatewayUnreachable(
                f"cannot reach the gateway at {self.url}: {exc or type(exc).__name__}",
                hint=_UNREACHABLE_HINT,
            ) from exc
        except httpx.InvalidURL as exc:
            raise GatewayUnreachable(
                f"{self.url} is not a usable gateway URL: {exc}", hint=_UNREACHABLE_HINT
            ) from exc

        try:
            document = answer.json()
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise GatewayUnreachable(
                f"{self.url} answered {answer.status_code} without the JSON a devdep "
                "gateway sends",
                hint=_UNREACHABLE_HINT,
            )
        if answer.is_success:
            return document
        raise _error_for(answer.status_code, document)


def _error_for(status: int, document: dict[str, Any]) -> Exception:
    code = str(document.get("error", ""))
    message = str(document.get("message") or code or f"HTTP {status}")
    if code in ("expired", "revoked"):
        return SessionEnded(str(document.get("ticket", "")), code)
    if code == "unauthenticated":
        return NotAuthenticated(f"the gateway does not know this session: {message}")
    if code == "token_rejected":
        return TokenRefused(
            f"the gateway rejected the token: {message}", hint=REAUTHENTICATE_HINT
        )
    if code == "idp_unavailable":
        return TokenRefused(
            message, hint="try again later; the identity provider did not answer"
        )
    if code == DOMAIN_REFUSED or (status == 403 and DOMAIN_REFUSED in message):
        return EntityDomainRefused(
            message
            if message.startswith(DOMAIN_REFUSED)
            else f"{DOMAIN_REFUSED}: {message}",
            hint="sign in with your corporate identity",
        )
    return GatewayRequestFailed(f"the gateway answered {status} ({code}): {message}")


def obtain_token(
    provider: Provider,
    token: str | None,
    client: GatewayClient,
    *,
    audience: str | None,
    client_id: str | None,
    on_prompt: Callable[[str, str], None],
    env: Mapping[str, str] = os.environ,
) -> str:
    """The ID token to present: the one given, or one from the provider."""
    if token:
        return token.strip()
    if provider == "gitlab-jwt":
        return providers.gitlab_ci_token(env)
    if provider == "github-oidc":
        # Outside a job there is nothing to ask the gateway about the audience.
        if not all(env.get(name) for name in GITHUB_TOKEN_VARIABLES):
            raise ProviderNotConfigured(
                f"{' or '.join(GITHUB_TOKEN_VARIABLES)} is unset",
                hint="run inside a GitHub Actions job with "
                "'permissions: id-token: write'",
            )
        return providers.github_actions_token(
            audience or _github_audience(client), env=env
        )

    corporate = [i for i in client.issuers() if i.get("kind") == "corporate"]
    if not corporate:
        raise GatewayRequestFailed(
            f"the gateway at {client.url} trusts no corporate issuer to sign in with",
            hint="pass an ID token with --token",
        )
    issuer = corporate[0]
    return providers.device_authorization(
        str(issuer["issuer"]),
        client_id or str(issuer["audience"]),
        on_prompt=on_prompt,
    )


def _github_audience(client: GatewayClient) -> str:
    for issuer in client.issuers():
        if issuer.get("issuer") == GITHUB_ISSUER:
            return str(issuer["audience"])
    return DEFAULT_GITHUB_AUDIENCE


def authenticate(
    provider: Provider,
    *,
    token: str | None,
    gateway: str | None,
    audience: str | None,
    client_id: str | None,
    on_prompt: Callable[[str, str], None],
    cache: Path,
    env: Mapping[str, str] = os.environ,
) -> dict[str, Any]:
    """Exchange an ID token for a session and cache it; returns the gateway's
    answer without the credential, which only the cache keeps."""
    url = resolve_gateway(gateway, None, env)
    with GatewayClient(url, env=env) as client:
        id_token = obtain_token(
            provider,
            token,
            client,
            audience=audience,
            client_id=client_id,
            on_prompt=on_prompt,
            env=env,
        )
        opened = client.open_session(id_token, provider)

    credential = str(opened.pop("credential", ""))
    save_session(
        CachedSession(
            gateway=url,
            ticket=str(opened["ticket"]),
            credential=credential,
            subject=str(opened.get("subject", "")),
            issuer_name=str(opened.get("issuer_name", "")),
            expires_at=str(opened["expires_at"]),
        ),
        cache,
    )
    logger.info("cached session %s in %s", opened["ticket"], cache)
    return {**opened, "gateway": url, "cache": str(cache)}


def session_status(
    ticket: str | None,
    *,
    gateway: str | None,
    cache: Path,
    env: Mapping[str, str] = os.environ,
) -> dict[str, Any]:
    """The gateway's view of the cached session (or of `ticket`, which must be
    it). An ended session clears the cache and raises SessionEnded."""
    if ticket is not None and parse_ticket(ticket) is None:
        raise GatewayRequestFailed(
            f"{ticket!r} is not a ticket", hint="tickets look like DEP-42"
        )
    cached = load_session(cache)
    if cached is None:
        raise NotAuthenticated(f"no session is cached in {cache}")

    url = resolve_gateway(gateway, cached, env)
    try:
        with GatewayClient(url, env=env) as client:
            document = client.session(
                cached.credential, ticket.strip() if ticket else None
            )
    except (SessionEnded, NotAuthenticated) as ended:
        clear_session(cache)
        ended.details.append(f"cleared the cached session {cache}")
        raise
    return {**document, "gateway": url}
