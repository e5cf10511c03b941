"""OpenID Connect discovery: an issuer's metadata document and its JWKS.

Both documents come from the network and are read defensively: a size limit,
JSON objects only, and the metadata's `issuer` must equal the configured issuer
exactly (OpenID Connect Discovery 1.0, section 4.3), so a document served for
one issuer can never vouch for another.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import httpx

from devdep.auth.errors import IdentityProviderUnavailable
from devdep.auth.settings import check_issuer_url

log = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES = 1024 * 1024
DEFAULT_TIMEOUT = httpx.Timeout(5.0)


@dataclass(frozen=True)
class ProviderMetadata:
    """The parts of an issuer's discovery document that devdep uses."""

    issuer: str
    discovery_url: str
    jwks_uri: str
    token_endpoint: str | None
    device_authorization_endpoint: str | None
    signing_algorithms: tuple[str, ...]


def discovery_url(issuer: str) -> str:
    """Where `issuer` publishes its metadata: the issuer, less a trailing slash,
    followed by /.well-known/openid-configuration."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def new_http_client() -> httpx.Client:
    """The client used when the caller gives none: short timeouts, and no
    redirects, so a document is only ever read from the URL that was named."""
    return httpx.Client(timeout=DEFAULT_TIMEOUT, follow_redirects=False)


def get_json_object(http: httpx.Client, url: str, issuer: str) -> dict[str, Any]:
    """GET `url` and return its JSON object body, or raise
    IdentityProviderUnavailable naming `issuer`."""
    try:
        with http.stream("GET", url, headers={"Accept": "application/json"}) as answer:
            if answer.status_code != 200:
                raise IdentityProviderUnavailable(
                    issuer, f"GET {url} answered {answer.status_code}"
                )
            body = bytearray()
            for chunk in answer.iter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise IdentityProviderUnavailable(
                        issuer,
                        f"GET {url} returned more than {MAX_DOCUMENT_BYTES} bytes",
                    )
    except httpx.HTTPError as error:
        raise IdentityProviderUnavailable(
            issuer, f"GET {url} failed: {error}"
        ) from error

    try:
        document = json.loads(bytes(body))
    except ValueError as error:
        raise IdentityProviderUnavailable(issuer, f"{url} is not JSON") from error
    if not isinstance(document, dict):
        raise IdentityProviderUnavailable(issuer, f"{url} is not a JSON object")
    return document


def fetch_provider_metadata(http: httpx.Client, issuer: str) -> ProviderMetadata:
    """Fetch and check the discovery document of `issuer`."""
    url = discovery_url(issuer)
    document = get_json_object(http, url, issuer)

    if document.get("issuer") != issuer:
        raise IdentityProviderUnavailable(
            issuer, f"{url} names issuer {document.get('issuer')!r}, not {issuer!r}"
        )

    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str):
        raise IdentityProviderUnavailable(issuer, f"{url} names no jwks_uri")
    try:
        check_issuer_url(jwks_uri)
    except ValueError as error:
        raise IdentityProviderUnavailable(issuer, f"jwks_uri: {error}") from error

    algorithms = document.get("id_token_signing_alg_values_supported", [])
    metadata = ProviderMetadata(
        issuer=issuer,
        discovery_url=url,
        jwks_uri=jwks_uri,
        token_endpoint=_optional_endpoint(document, "token_endpoint", issuer),
        device_authorization_endpoint=_optional_endpoint(
            document, "device_authorization_endpoint", issuer
        ),
        signing_algorithms=tuple(
            str(algorithm) for algorithm in algorithms if isinstance(algorithm, str)
        )
        if isinstance(algorithms, list)
        else (),
    )
    log.debug("discovered %s: jwks_uri %s", issuer, jwks_uri)
    return metadata


def _optional_endpoint(document: dict[str, Any], field: str, issuer: str) -> str | None:
    value = document.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise IdentityProviderUnavailable(issuer, f"{field} is not a URL")
    try:
        return check_issuer_url(value)
    except ValueError as error:
        raise IdentityProviderUnavailable(issuer, f"{field}: {error}") from error
