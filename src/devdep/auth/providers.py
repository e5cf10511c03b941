"""Client-side ways of obtaining an ID token for `devdep-cli auth`.

- `device_authorization`: the OAuth 2.0 device authorization grant (RFC 8628)
  against the corporate issuer, for a person at a terminal;
- `github_actions_token`: the ID token GitHub Actions hands a job that has the
  `id-token: write` permission;
- `gitlab_ci_token`: the ID token GitLab CI puts in a variable named by the
  job's `id_tokens:` section.

No token is ever logged.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx

from devdep.auth.discovery import fetch_provider_metadata, new_http_client
from devdep.auth.errors import (
    IdentityProviderUnavailable,
    ProviderNotConfigured,
    TokenRequestFailed,
)

log = logging.getLogger(__name__)

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_POLL_INTERVAL = 5.0
# RFC 8628 section 3.5: on slow_down the interval grows by 5 seconds for this
# and every later request.
SLOW_DOWN_STEP = 5.0
GITLAB_TOKEN_VARIABLE = "DEVDEP_JWT"


@contextmanager
def _client(http: httpx.Client | None) -> Iterator[httpx.Client]:
    if http is not None:
        yield http
        return
    with new_http_client() as owned:
        yield owned


def github_actions_token(
    audience: str,
    env: Mapping[str, str] = os.environ,
    http: httpx.Client | None = None,
) -> str:
    """Request an ID token for `audience` from the GitHub Actions runtime."""
    url = env.get("ACTIONS_ID_TOKEN_REQUEST_URL")
    request_token = env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    if not url or not request_token:
        raise ProviderNotConfigured(
            "ACTIONS_ID_TOKEN_REQUEST_URL or ACTIONS_ID_TOKEN_REQUEST_TOKEN is unset",
            hint="run inside a GitHub Actions job with 'permissions: id-token: write'",
        )

    # The URL already carries a query string; the audience joins it.
    request_url = httpx.URL(url).copy_merge_params({"audience": audience})
    with _client(http) as client:
        try:
            answer = client.get(
                request_url,
                headers={
                    "Authorization": f"bearer {request_token}",
                    "Accept": "application/json",
                },
            )
        except httpx.HTTPError as error:
            raise TokenRequestFailed(
                f"cannot reach the GitHub Actions token service: {error}"
            ) from error

    if answer.status_code != 200:
        raise TokenRequestFailed(
            f"the GitHub Actions token service answered {answer.status_code}"
        )
    token = _json_field(answer, "value")
    if token is None:
        raise TokenRequestFailed("the GitHub Actions token service sent no token")
    log.info("obtained a GitHub Actions ID token for audience %s", audience)
    return token


def gitlab_ci_token(
    env: Mapping[str, str] = os.environ, variable: str = GITLAB_TOKEN_VARIABLE
) -> str:
    """The ID token GitLab CI stored in `variable` (see the job's id_tokens)."""
    token = env.get(variable, "").strip()
    if not token:
        raise ProviderNotConfigured(
            f"${variable} is empty",
            hint="declare it under the job's 'id_tokens:' with the gateway's aud",
        )
    return token


def device_authorization(
    issuer: str,
    client_id: str,
    *,
    scope: str = "openid email",
    http: httpx.Client | None = None,
    on_prompt: Callable[[str, str], None],
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> str:
    """Run the device authorization grant and return the ID token.

    `on_prompt(verification_uri, user_code)` is called once, to show the user
    where to go and what to type; then the token endpoint is polled at the
    server's interval until the user approves, denies, or the code expires.
    """
    with _client(http) as client:
        try:
            metadata = fetch_provider_metadata(client, issuer)
        except IdentityProviderUnavailable as error:
            raise TokenRequestFailed(error.message) from error
        if not metadata.device_authorization_endpoint or not metadata.token_endpoint:
            raise TokenRequestFailed(
                f"{issuer} does not offer the device authorization grant",
                hint="pass an ID token with --token instead",
            )

        grant = _post_form(
            client,
            metadata.device_authorization_endpoint,
            {"client_id": client_id, "scope": scope},
        )
        device_code = _text(grant, "device_code")
        user_code = _text(grant, "user_code")
        verification_uri = grant.get("verification_uri_complete") or _text(
            grant, "verification_uri"
        )
        interval = _seconds(grant, "interval", DEFAULT_POLL_INTERVAL)
        deadline = monotonic() + _seconds(grant, "expires_in", 600.0)
        on_prompt(str(verification_uri), user_code)

        while True:
            if monotonic() + interval > deadline:
                raise TokenRequestFailed(
                    "the device code expired before it was approved",
                    hint="run 'devdep-cli auth' again",
                )
            sleep(interval)
            answer = _poll(client, metadata.token_endpoint, client_id, device_code)
            error_code = answer.get("error")
            if error_code is None:
                token = answer.get("id_token")
                if not isinstance(token, str) or not token:
                    raise TokenRequestFailed(f"{issuer} returned no id_token")
                log.info("device authorization approved by %s", issuer)
                return token
            if error_code == "authorization_pending":
                continue
            if error_code == "slow_down":
                interval += SLOW_DOWN_STEP
                log.debug("token endpoint asked to slow down to %.0f s", interval)
                continue
            if error_code == "access_denied":
                raise TokenRequestFailed("the sign-in was denied")
            if error_code == "expired_token":
                raise TokenRequestFailed(
                    "the device code expired before it was approved",
                    hint="run 'devdep-cli auth' again",
                )
            raise TokenRequestFailed(f"{issuer} refused the device code: {error_code}")


def _poll(
    client: httpx.Client, token_endpoint: str, client_id: str, device_code: str
) -> dict[str, Any]:
    """One token request; RFC 8628 errors come back as 400 with an `error`."""
    try:
        answer = client.post(
            token_endpoint,
            data={
                "grant_type": DEVICE_CODE_GRANT,
                "device_code": device_code,
                "client_id": client_id,
            },
            headers={"Accept": "application/json"},
        )
    except httpx.HTTPError as error:
        raise TokenRequestFailed(f"cannot reach {token_endpoint}: {error}") from error
    body = _json_body(answer)
    if answer.status_code == 200 or isinstance(body.get("error"), str):
        return body
    raise TokenRequestFailed(f"{token_endpoint} answered {answer.status_code}")


def _post_form(client: httpx.Client, url: str, form: dict[str, str]) -> dict[str, Any]:
    try:
        answer = client.post(url, data=form, headers={"Accept": "application/json"})
    except httpx.HTTPError as error:
        raise TokenRequestFailed(f"cannot reach {url}: {error}") from error
    body = _json_body(answer)
    if answer.status_code != 200:
        reason = body.get("error") or answer.status_code
        raise TokenRequestFailed(f"{url} refused the request: {reason}")
    return body


def _json_body(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _json_field(answer: httpx.Response, name: str) -> str | None:
    value = _json_body(answer).get(name)
    return value if isinstance(value, str) and value else None


def _text(document: dict[str, Any], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not value:
        raise TokenRequestFailed(f"the device authorization answer lacks {name}")
    return value


def _seconds(document: dict[str, Any], name: str, default: float) -> float:
    value = document.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return default
    return float(value)
