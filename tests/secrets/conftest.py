"""Fixtures for the secrets tests: an OpenBao admin, secrets written into it, and
mappings that point at them."""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from devdep.config.schema import Secrets
from tests.support.openbao import OpenBaoServer

CANARY_ALPHABET = (
    string.ascii_letters + string.digits + '!#$%&()+,-.:;<=>?@[]^_{|}~"\\/ '
)


def canary() -> bytes:
    """32 random printable bytes, with the characters that URL and JSON escape."""
    return "".join(secrets.choice(CANARY_ALPHABET) for _ in range(32)).encode()


@dataclass
class Bao:
    """The OpenBao dev server, driven with its root token."""

    server: OpenBaoServer
    admin: httpx.Client

    @property
    def address(self) -> str:
        return self.server.address

    def request(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        answer = self.admin.request(method, f"/v1/{path}", **kwargs)  # type: ignore[arg-type]
        if answer.status_code >= 300:
            raise AssertionError(
                f"{method} {path} answered {answer.status_code}: {answer.text}"
            )
        return answer

    def write_kv2(self, path: str, data: dict[str, str], mount: str = "secret") -> int:
        answer = self.request("POST", f"{mount}/data/{path}", json={"data": data})
        return int(answer.json()["data"]["version"])

    def policy(self, name: str, rules: str) -> None:
        self.request("PUT", f"sys/policies/acl/{name}", json={"policy": rules})

    def token(self, *policies: str) -> str:
        answer = self.request(
            "POST",
            "auth/token/create",
            json={"policies": list(policies), "ttl": "10m", "no_parent": True},
        )
        return str(answer.json()["auth"]["client_token"])

    def vault_secrets(self, *sources: str, **settings: object) -> Secrets:
        names = settings.pop("names", None) or [
            f"SECRET_{i}" for i in range(len(sources))
        ]
        return Secrets.model_validate(
            {
                "provider": "hashicorp-vault",
                "address": settings.pop("address", self.address),
                "mappings": [
                    {"env": name, "source": source}
                    for name, source in zip(names, sources, strict=True)  # type: ignore[call-overload]
                ],
                **settings,
            }
        )


# A token may create its run's child token only with this.
CREATE_CHILD_POLICY = 'path "auth/token/create" { capabilities = ["update"] }'


@pytest.fixture
def bao(openbao: OpenBaoServer) -> Iterator[Bao]:
    with openbao.client() as admin:
        yield Bao(openbao, admin)


@pytest.fixture
def secret_path() -> str:
    """A secret path no other test uses."""
    return f"devdep-tests/{secrets.token_hex(6)}/database"
