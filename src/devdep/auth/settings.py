"""The identity settings: which issuers are trusted, for which audience, with
which bound claims, and which email domains may hold a session.

These pydantic models are embedded in the gateway's configuration file under
`identity:`. Everything that can be checked without the network is checked
when they load, so a mistake such as a wildcard in a bound claim or a public
email domain in `allowed_domains` stops the gateway from starting rather than
weakening it.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Mapping
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from devdep.auth.domains import PUBLIC_EMAIL_DOMAINS, domain_within, normalise_domain
from devdep.auth.errors import IdentityConfigError

WILDCARD_CHARACTERS = frozenset("*?")

# A CI issuer such as GitHub's signs tokens for every repository on the
# service. Unless one of these claims is bound, any repository anywhere could
# obtain a session by matching the remaining claims (a branch name, say).
OWNER_PINNING_CLAIMS = frozenset(
    {
        "sub",
        # GitHub Actions
        "repository",
        "repository_id",
        "repository_owner",
        "repository_owner_id",
        "job_workflow_ref",
        # GitLab CI
        "project_id",
        "project_path",
        "namespace_id",
        "namespace_path",
    }
)

LOOPBACK_HOSTS = frozenset({"localhost"})


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_issuer_url(url: str) -> str:
    """`url` unchanged when it can name an OIDC issuer, else ValueError.

    HTTPS is required, except on a loopback host, where a local identity
    provider may speak plain HTTP.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        raise ValueError(f"{url!r} is not an https URL")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(f"{url!r} must use https (plain http only on loopback)")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{url!r} must not carry a query, fragment or user info")
    return url


def claim_as_text(value: object) -> str | None:
    """A claim value in the exact text form bound claims are compared in.

    Strings are themselves; booleans are `true`/`false` and integers their
    decimal digits, as JSON writes them. Anything else (lists, objects, null,
    floats) has no exact text form and matches no bound claim.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return None


class IssuerSettings(BaseModel):
    """One trusted token issuer: a corporate IdP or a CI service."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    issuer: str
    audience: str = Field(min_length=1)
    bound_claims: dict[str, str] = Field(default_factory=dict)
    kind: Literal["corporate", "ci"] = "corporate"

    @model_validator(mode="before")
    @classmethod
    def _derive_kind(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "kind" not in data:
            return {**data, "kind": "ci" if data.get("bound_claims") else "corporate"}
        return data

    @field_validator("issuer")
    @classmethod
    def _issuer_is_a_url(cls, issuer: str) -> str:
        return check_issuer_url(issuer)

    @field_validator("bound_claims", mode="before")
    @classmethod
    def _values_are_quoted(cls, claims: Any) -> Any:
        # YAML reads `ref_protected: true` as a boolean and `id: 0123` as the
        # octal 83. Turning either back into text could bind a different value
        # than the one written, so an unquoted scalar is refused instead.
        if isinstance(claims, Mapping):
            for name, value in claims.items():
                if isinstance(value, bool | int | float):
                    raise ValueError(
                        f"bound claim {name!r} must be a quoted string, "
                        f'for example "{claim_as_text(value) or value}"'
                    )
        return claims

    @field_validator("bound_claims")
    @classmethod
    def _exact_values_only(cls, claims: dict[str, str]) -> dict[str, str]:
        for name, value in claims.items():
            if not name:
                raise ValueError("a bound claim needs a name")
            if not value:
                raise ValueError(f"bound claim {name!r} has an empty value")
            if WILDCARD_CHARACTERS & set(value):
                raise ValueError(
                    f"bound claim {name!r} = {value!r} contains a wildcard; "
                    "bound claims match exactly, list the exact value"
                )
        return claims

    @model_validator(mode="after")
    def _ci_issuers_are_bound(self) -> IssuerSettings:
        if self.kind == "ci" and not self.bound_claims:
            raise ValueError(
                f"issuer {self.name!r} is a CI issuer without bound_claims: "
                "it would trust every pipeline on that service"
            )
        if self.kind == "ci" and not OWNER_PINNING_CLAIMS & self.bound_claims.keys():
            pinning = ", ".join(sorted(OWNER_PINNING_CLAIMS))
            raise ValueError(
                f"issuer {self.name!r}: bound_claims pin no repository or project, "
                f"so any pipeline on that service could match; bind one of {pinning}"
            )
        return self


class IdentitySettings(BaseModel):
    """Who may hold a session: the trusted issuers and the domain policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_domains: list[str] = Field(default_factory=list)
    blocked_domains: list[str] = Field(default_factory=list)
    issuers: list[IssuerSettings] = Field(min_length=1)

    @field_validator("allowed_domains")
    @classmethod
    def _allowed_domains_are_corporate(cls, domains: list[str]) -> list[str]:
        normalised = [_normalise_listed_domain(domain) for domain in domains]
        for domain in normalised:
            if "." not in domain:
                raise ValueError(
                    f"allowed domain {domain!r} is a top-level domain; "
                    "list your organisation's own domains"
                )
            public = domain_within(domain, PUBLIC_EMAIL_DOMAINS)
            if public is not None:
                raise ValueError(
                    f"allowed domain {domain!r} is a public email domain "
                    f"({public}) and can never be allowed"
                )
        return normalised

    @field_validator("blocked_domains")
    @classmethod
    def _normalise_blocked(cls, domains: list[str]) -> list[str]:
        return [_normalise_listed_domain(domain) for domain in domains]

    @model_validator(mode="after")
    def _issuers_are_distinct(self) -> IdentitySettings:
        names = [issuer.name for issuer in self.issuers]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"issuer names must be unique: {', '.join(duplicates)}")

        # The verifier picks the issuer entry by the token's iss and aud, so
        # two entries with both equal would make that choice ambiguous.
        pairs = [(issuer.issuer, issuer.audience) for issuer in self.issuers]
        for pair in pairs:
            if pairs.count(pair) > 1:
                raise ValueError(
                    f"two issuers share issuer {pair[0]!r} and audience {pair[1]!r}; "
                    "give each a distinct audience"
                )

        corporate = [i.name for i in self.issuers if i.kind == "corporate"]
        if corporate and not self.allowed_domains:
            raise ValueError(
                f"corporate issuer {corporate[0]!r} needs allowed_domains: "
                "without them no email identity can pass"
            )
        return self

    def issuer_named(self, name: str) -> IssuerSettings:
        for issuer in self.issuers:
            if issuer.name == name:
                return issuer
        raise KeyError(name)


def _normalise_listed_domain(domain: str) -> str:
    if WILDCARD_CHARACTERS & set(domain):
        raise ValueError(
            f"domain {domain!r} contains a wildcard; subdomains of a listed "
            "domain are covered already"
        )
    return normalise_domain(domain)


def parse_identity_settings(data: Mapping[str, Any]) -> IdentitySettings:
    """IdentitySettings from plain data, raising IdentityConfigError listing
    every problem by its path."""
    try:
        return IdentitySettings.model_validate(data)
    except pydantic.ValidationError as error:
        details = []
        for problem in error.errors():
            path = ".".join(str(part) for part in problem["loc"]) or "identity"
            details.append(f"{path}: {problem['msg']}")
        raise IdentityConfigError(
            f"the identity settings are invalid: {len(details)} error(s)",
            hint="fix the identity section of the gateway configuration",
            details=details,
        ) from error
