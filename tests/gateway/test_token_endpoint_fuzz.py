"""Arbitrary bodies sent to the token endpoint always get a clean 4xx.

The gateway runs with the real TokenVerifier. Its identity provider is an
httpx MockTransport serving a discovery document and a JWKS with a key made
here, so token-shaped input reaches signature checking without any network.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import RSAAlgorithm

from devdep.auth.tokens import TokenVerifier
from devdep.gateway.server import Gateway, build_gateway
from tests.gateway.fakes import ISSUER, gateway_settings, identity_settings


def _identity_provider() -> httpx.MockTransport:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "key-1", "alg": "RS256", "use": "sig"})
    documents = {
        "/.well-known/openid-configuration": {
            "issuer": ISSUER,
            "jwks_uri": f"{ISSUER}/keys",
            "id_token_signing_alg_values_supported": ["RS256"],
        },
        "/keys": {"keys": [jwk]},
    }

    def answer(request: httpx.Request) -> httpx.Response:
        document = documents.get(request.url.path)
        return httpx.Response(200 if document else 404, json=document or {})

    return httpx.MockTransport(answer)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    store = tmp_path_factory.mktemp("fuzz") / "gateway.db"
    http = httpx.Client(transport=_identity_provider())
    verifier = TokenVerifier(identity_settings(), http=http)
    gateway: Gateway = build_gateway(
        gateway_settings(f"sqlite:///{Path(store)}"), verifier=verifier
    )
    yield TestClient(gateway.app, raise_server_exceptions=False)
    gateway.close()
    http.close()


def _segment(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)

header_like = st.fixed_dictionaries(
    {"alg": st.sampled_from(["RS256", "ES256", "EdDSA", "none", "HS256", "RS512"])},
    optional={"kid": st.text(max_size=10), "typ": st.just("JWT"), "crit": json_values},
)

claims_like = st.fixed_dictionaries(
    {},
    optional={
        "iss": st.sampled_from([ISSUER, ISSUER + "/", "http://idp.acme.corp"]),
        "aud": st.sampled_from(["devdep-cli", ["devdep-cli"], "other"]) | json_values,
        "sub": json_values,
        "exp": st.integers() | json_values,
        "iat": st.integers() | json_values,
        "email": st.sampled_from(["a@acme.corp", "b@gmail.com"]) | json_values,
        "email_verified": json_values,
    },
)

token_shaped = st.builds(
    lambda header, claims, signature: ".".join(
        [
            _segment(json.dumps(header).encode()),
            _segment(json.dumps(claims).encode()),
            _segment(signature),
        ]
    ),
    header_like,
    claims_like,
    st.binary(max_size=300),
)


def _assert_clean_client_error(answer: httpx.Response) -> None:
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text)
    assert isinstance(answer.json()["error"], str)


FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@FUZZ
@given(body=st.binary(max_size=2000))
def test_arbitrary_bytes(client: TestClient, body: bytes) -> None:
    answer = client.post(
        "/v1/sessions", content=body, headers={"Content-Type": "application/json"}
    )
    _assert_clean_client_error(answer)


@FUZZ
@given(document=json_values)
def test_arbitrary_json_documents(client: TestClient, document: Any) -> None:
    _assert_clean_client_error(client.post("/v1/sessions", json=document))


@FUZZ
@given(
    token=st.text(max_size=500) | token_shaped,
    provider=st.sampled_from(["oidc", "github-oidc", "gitlab-jwt"]) | json_values,
    extra=st.dictionaries(st.text(max_size=8), json_values, max_size=2),
)
def test_arbitrary_tokens(
    client: TestClient, token: str, provider: Any, extra: dict[str, Any]
) -> None:
    body = {**extra, "token": token, "provider": provider}
    _assert_clean_client_error(client.post("/v1/sessions", json=body))


@FUZZ
@given(token=token_shaped)
def test_token_shaped_strings(client: TestClient, token: str) -> None:
    _assert_clean_client_error(client.post("/v1/sessions", json={"token": token}))
