"""OpenBao as a real OIDC identity provider, for integration tests.

The session fixture `oidc_provider` configures the identity secrets engine of the
`openbao` dev server: a named RS256 signing key, a role whose template puts the
entity's `email` and `email_verified: true` into every ID token, and one entity
per email address, reached through a userpass login. Tokens are then minted by
OpenBao itself through `identity/oidc/token/<role>`, signed with its own key and
published through its own discovery document and JWKS.

    def test_something(oidc_provider: OidcProvider) -> None:
        token = oidc_provider.issue_id_token("alice@acme.corp")
        oidc_provider.issuer      # http://127.0.0.1:PORT/v1/identity/oidc
        oidc_provider.audience    # "devdep-cli", the role's client_id
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.support.openbao import OpenBaoServer

KEY_NAME = "devdep-test-idp"
ROLE_NAME = "devdep-cli"
CLIENT_ID = "devdep-cli"
USERS_MOUNT = "devdep-oidc-users"
TOKEN_POLICY = "devdep-oidc-token"

# The role's template: OpenBao substitutes `{{identity.entity.metadata.email}}`
# with a JSON string, so the value is not quoted here.
ID_TOKEN_TEMPLATE = (
    '{"email": {{identity.entity.metadata.email}}, "email_verified": true}'
)

# Long enough that no rotation happens during a test session, so a key fetched
# at the start of the session still verifies tokens minted at its end.
KEY_ROTATION_PERIOD = "24h"
KEY_VERIFICATION_TTL = "24h"
ID_TOKEN_TTL = "1h"


@dataclass
class OidcProvider:
    """The OpenBao dev server configured as an OIDC identity provider."""

    server: OpenBaoServer
    issuer: str
    audience: str
    role: str = ROLE_NAME
    key_name: str = KEY_NAME
    _login_tokens: dict[str, str] = field(default_factory=dict, repr=False)
    _last_issued_at: dict[str, int] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/.well-known/keys"

    def issuer_config(self, name: str = "corp") -> dict[str, str]:
        """The `identity.issuers[]` entry that trusts this provider."""
        return {"name": name, "issuer": self.issuer, "audience": self.audience}

    def issue_id_token(self, email: str) -> str:
        """An ID token signed by OpenBao for an entity whose email is `email`.

        Two calls for the same email always return different tokens: OpenBao
        puts no `jti` in its tokens and stamps `iat` in whole seconds, so a
        second call within the same second waits for the next one rather than
        hand back a byte-identical token that a verifier would call a replay.
        """
        with self._lock:
            client_token = self._login_tokens.get(email)
            if client_token is None:
                client_token = self._create_user(email)
                self._login_tokens[email] = client_token

            while True:
                token = self._mint(client_token)
                issued_at = int(_claims(token)["iat"])
                if issued_at != self._last_issued_at.get(email):
                    self._last_issued_at[email] = issued_at
                    return token
                time.sleep(0.2)

    def _mint(self, client_token: str) -> str:
        answer = httpx.get(
            f"{self.server.address}/v1/identity/oidc/token/{self.role}",
            headers={"X-Vault-Token": client_token},
            timeout=10,
        )
        _expect_ok(answer)
        return str(answer.json()["data"]["token"])

    def _create_user(self, email: str) -> str:
        """Create an entity carrying `email`, a userpass user aliased to it, and
        log in as that user; returns the user's OpenBao token."""
        username = "u" + hashlib.sha256(email.encode()).hexdigest()[:16]
        password = secrets.token_urlsafe(16)
        with self.server.client() as admin:
            # Create-or-update by name, so that a second provider object on the
            # same server (or a retried test) finds the entity it made before.
            entity_path = f"/v1/identity/entity/name/oidc-{username}"
            _expect_ok(admin.post(entity_path, json={"metadata": {"email": email}}))
            entity = admin.get(entity_path)
            _expect_ok(entity)
            entity_id = entity.json()["data"]["id"]

            mounts = admin.get("/v1/sys/auth")
            _expect_ok(mounts)
            accessor = mounts.json()["data"][f"{USERS_MOUNT}/"]["accessor"]
            if not entity.json()["data"]["aliases"]:
                _expect_ok(
                    admin.post(
                        "/v1/identity/entity-alias",
                        json={
                            "name": username,
                            "canonical_id": entity_id,
                            "mount_accessor": accessor,
                        },
                    )
                )
            _expect_ok(
                admin.post(
                    f"/v1/auth/{USERS_MOUNT}/users/{username}",
                    json={"password": password, "token_policies": [TOKEN_POLICY]},
                )
            )

        login = httpx.post(
            f"{self.server.address}/v1/auth/{USERS_MOUNT}/login/{username}",
            json={"password": password},
            timeout=10,
        )
        _expect_ok(login)
        return str(login.json()["auth"]["client_token"])


def _expect_ok(answer: httpx.Response) -> None:
    if answer.status_code >= 300:
        pytest.fail(
            f"OpenBao {answer.request.method} {answer.request.url.path} answered "
            f"{answer.status_code}: {answer.text}"
        )


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def configure_identity_provider(server: OpenBaoServer) -> OidcProvider:
    """Turn the OpenBao server into an OIDC identity provider; idempotent."""
    with server.client() as admin:
        # Pin the issuer rather than rely on the dev server's api_addr default.
        _expect_ok(
            admin.post("/v1/identity/oidc/config", json={"issuer": server.address})
        )
        _expect_ok(
            admin.post(
                f"/v1/identity/oidc/key/{KEY_NAME}",
                json={
                    "algorithm": "RS256",
                    "rotation_period": KEY_ROTATION_PERIOD,
                    "verification_ttl": KEY_VERIFICATION_TTL,
                    "allowed_client_ids": [CLIENT_ID],
                },
            )
        )
        _expect_ok(
            admin.post(
                f"/v1/identity/oidc/role/{ROLE_NAME}",
                json={
                    "key": KEY_NAME,
                    "client_id": CLIENT_ID,
                    "template": ID_TOKEN_TEMPLATE,
                    "ttl": ID_TOKEN_TTL,
                },
            )
        )
        _expect_ok(
            admin.put(
                f"/v1/sys/policies/acl/{TOKEN_POLICY}",
                json={
                    "policy": f'path "identity/oidc/token/{ROLE_NAME}" '
                    '{ capabilities = ["read"] }'
                },
            )
        )
        mounts = admin.get("/v1/sys/auth")
        _expect_ok(mounts)
        if f"{USERS_MOUNT}/" not in mounts.json()["data"]:
            _expect_ok(
                admin.post(f"/v1/sys/auth/{USERS_MOUNT}", json={"type": "userpass"})
            )

        role = admin.get(f"/v1/identity/oidc/role/{ROLE_NAME}")
        _expect_ok(role)
        audience = str(role.json()["data"]["client_id"])

        discovery = httpx.get(
            f"{server.address}/v1/identity/oidc/.well-known/openid-configuration",
            timeout=10,
        )
        _expect_ok(discovery)
        issuer = str(discovery.json()["issuer"])

    return OidcProvider(server=server, issuer=issuer, audience=audience)


@pytest.fixture(scope="session")
def oidc_provider(openbao: OpenBaoServer) -> Iterator[OidcProvider]:
    """The `openbao` dev server as an OIDC identity provider.

    Yields an `OidcProvider` with `issue_id_token(email) -> str`, `issuer`,
    `audience`, `discovery_url`, `jwks_url` and `issuer_config(name)`.
    Everything lives in the dev server's memory and goes with it at the end of
    the session.
    """
    yield configure_identity_provider(openbao)
