"""A test double for an OIDC identity provider, at the HTTP seam: keys the
tests generate, a discovery document and JWKS served through an
httpx.MockTransport, and a token minter. The real thing over HTTP is covered
by the OpenBao integration tests."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)
CORP_ISSUER = "https://idp.acme.corp"
CORP_AUDIENCE = "devdep-cli"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Key:
    kid: str
    algorithm: str
    private_key: Any

    @property
    def public_jwk(self) -> dict[str, Any]:
        public = self.private_key.public_key()
        if self.algorithm == "RS256":
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
        elif self.algorithm == "ES256":
            jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))
        else:
            jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(public))
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.algorithm}

    @property
    def public_pem(self) -> bytes:
        pem: bytes = self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        return pem


def new_key(algorithm: str = "RS256", kid: str | None = None, bits: int = 2048) -> Key:
    kid = kid or f"{algorithm.lower()}-{secrets.token_hex(4)}"
    private: Any
    if algorithm == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    elif algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(algorithm)
    return Key(kid, algorithm, private)


@functools.cache
def _default_private_key() -> rsa.RSAPrivateKey:
    # RSA key generation is the slowest part of these tests; most of them can
    # share one key, since each builds its own verifier.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class FakeIdentityProvider:
    """Serves discovery and JWKS for `issuer`; counts requests; can go down."""

    issuer: str = CORP_ISSUER
    keys: list[Key] = field(default_factory=list)
    down: bool = False
    discovery_issuer: str | None = None  # to serve a mismatching document
    jwks_fetches: int = 0
    discovery_fetches: int = 0

    def __post_init__(self) -> None:
        if not self.keys:
            self.keys.append(Key("default-rs256", "RS256", _default_private_key()))

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer.rstrip('/')}/keys"

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        url = str(request.url)
        if url == f"{self.issuer.rstrip('/')}/.well-known/openid-configuration":
            self.discovery_fetches += 1
            return httpx.Response(
                200,
                json={
                    "issuer": self.discovery_issuer or self.issuer,
                    "jwks_uri": self.jwks_uri,
                    "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                },
            )
        if url == self.jwks_uri:
            self.jwks_fetches += 1
            return httpx.Response(200, json={"keys": [k.public_jwk for k in self.keys]})
        return httpx.Response(404)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handle))

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(NOW.timestamp())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": CORP_AUDIENCE,
            "sub": "00u1a2b3c4",
            "email": "alice@acme.corp",
            "email_verified": True,
            "iat": now,
            "exp": now + 300,
            "jti": secrets.token_hex(8),
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def token(
        self,
        key: Key | None = None,
        *,
        headers: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> str:
        key = key or self.keys[0]
        return jwt.encode(
            self.claims(**overrides),
            key.private_key,
            algorithm=key.algorithm,
            headers={"kid": key.kid, **(headers or {})},
        )


def unsigned_token(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A token with `alg: none` and an empty signature, as an attacker would
    write it by hand."""
    return ".".join(
        [b64url(json.dumps(header).encode()), b64url(json.dumps(claims).encode()), ""]
    )


def hmac_token(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """An HS256 token keyed with `secret`, such as the issuer's public key."""
    signing_input = (
        b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    )
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(signature)


class FakeMonotonic:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
