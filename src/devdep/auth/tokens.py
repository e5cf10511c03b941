"""Verifying ID tokens from the trusted issuers, rule by rule.

`TokenVerifier.verify` takes a compact JWS and either returns the verified
identity or raises TokenRejected naming the rule that failed (or DomainRefused
for an email domain the policy keeps out). The rules, in the order applied:

1. the token is a compact JWS of at most 16 KiB, with no `crit` header;
2. `alg` is RS256, ES256 or EdDSA; `none` and every HS* are refused before any
   key is looked at, so a public key can never be used as an HMAC secret;
3. `iss` equals a configured issuer exactly (no trailing-slash or scheme
   leniency), and `aud` contains that issuer's audience;
4. the signing key comes from the issuer's JWKS, found through its discovery
   document and cached. An unknown `kid` refreshes the cache at most once per
   cooldown; when the issuer cannot be reached the last good keys stay in use.
   The key's type must fit `alg` (RSA of 2048 bits or more, EC P-256, or
   Ed25519/Ed448), and the signature must verify with it;
5. `exp`, `iat` and `sub` are required, `exp` and `nbf` are honoured and `iat`
   may not lie in the future, each with a leeway of at most 60 seconds;
6. corporate identities carry an `email` with `email_verified: true`, and that
   email's domain passes the domain policy;
7. every bound claim matches exactly, compared as whole strings (a GitHub
   `sub` such as `repo:acme/api:ref:refs/heads/main` is never split on ':');
8. the token is used once: its `jti` (or, when it has none, its SHA-256) is
   handed to the replay guard, which refuses a second use before expiry.

Headers naming their own keys (`jwk`, `jku`, `x5u`, `x5c`) are ignored: keys
only ever come from the issuer's published JWKS.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.api_jws import PyJWS

from devdep.auth.discovery import (
    ProviderMetadata,
    fetch_provider_metadata,
    get_json_object,
    new_http_client,
)
from devdep.auth.domains import check_email_domain
from devdep.auth.errors import (
    IdentityConfigError,
    IdentityProviderUnavailable,
    TokenRejected,
)
from devdep.auth.settings import IdentitySettings, IssuerSettings, claim_as_text

log = logging.getLogger(__name__)

# The algorithm each pinned `alg` needs its key to be, by JWK key type.
PINNED_ALGORITHMS: dict[str, str] = {"RS256": "RSA", "ES256": "EC", "EdDSA": "OKP"}
MIN_RSA_KEY_BITS = 2048
MAX_TOKEN_LENGTH = 16 * 1024
MAX_LEEWAY = timedelta(seconds=60)

ReplayGuard = Callable[[str, str, datetime], bool]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class VerifiedIdentity:
    """Who a verified token says the caller is, and how that was checked."""

    issuer_name: str
    issuer: str
    subject: str
    email: str | None
    algorithm: str
    key_type: str
    key_size: int | None
    key_id: str | None
    token_id: str | None
    expires_at: datetime
    claims: dict[str, Any]


@dataclass(frozen=True)
class SigningKey:
    """One usable public key from an issuer's JWKS."""

    key_id: str | None
    algorithm: str
    key_type: str
    key_size: int | None
    public_key: Any


def signing_keys_from_jwks(document: dict[str, Any]) -> list[SigningKey]:
    """The keys in a JWKS that can verify a pinned algorithm; others (HMAC
    secrets, encryption keys, small RSA keys, other curves) are skipped."""
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise ValueError("the JWKS has no 'keys' list")

    keys = []
    for entry in entries:
        try:
            keys.append(_signing_key(entry))
        except (ValueError, jwt.PyJWTError) as error:
            log.debug("skipped JWKS entry: %s", error)
    return keys


def _signing_key(entry: Any) -> SigningKey:
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    if entry.get("use", "sig") != "sig":
        raise ValueError(f"key use {entry.get('use')!r} is not sig")
    key_id = entry.get("kid")
    if key_id is not None and not isinstance(key_id, str):
        raise ValueError("kid is not a string")

    key_type = entry.get("kty")
    algorithm = next(
        (alg for alg, kty in PINNED_ALGORITHMS.items() if kty == key_type), None
    )
    if algorithm is None:
        raise ValueError(f"key type {key_type!r} is not usable")
    declared = entry.get("alg")
    if declared is not None and declared != algorithm:
        raise ValueError(f"{key_type} key declares alg {declared!r}")

    public_key = jwt.PyJWK(entry, algorithm).key
    key_size: int | None
    if isinstance(public_key, rsa.RSAPublicKey):
        key_size = public_key.key_size
        if key_size < MIN_RSA_KEY_BITS:
            raise ValueError(f"RSA key of {key_size} bits is too small")
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise ValueError(f"curve {public_key.curve.name} is not P-256")
        key_size = public_key.curve.key_size
    elif isinstance(public_key, ed25519.Ed25519PublicKey):
        key_size = 256
    elif isinstance(public_key, ed448.Ed448PublicKey):
        key_size = 456
    else:
        raise ValueError(f"unsupported public key {type(public_key).__name__}")

    return SigningKey(key_id, algorithm, str(key_type), key_size, public_key)


class MemoryReplayGuard:
    """Remembers each token id until its token expires; one process only.

    A gateway with several replicas needs a guard backed by its shared store.
    """

    def __init__(self, clock: Callable[[], datetime] = _utc_now) -> None:
        self._clock = clock
        self._seen: set[tuple[str, str]] = set()
        self._expiries: list[tuple[datetime, str, str]] = []  # a heap
        self._lock = threading.Lock()

    def __call__(self, issuer: str, token_id: str, expires_at: datetime) -> bool:
        now = self._clock()
        with self._lock:
            # A token past its expiry (and the leeway) fails the expiry rule
            # anyway, so its id need not be remembered any longer.
            while self._expiries and self._expiries[0][0] + MAX_LEEWAY < now:
                _, old_issuer, old_id = heapq.heappop(self._expiries)
                self._seen.discard((old_issuer, old_id))

            if (issuer, token_id) in self._seen:
                return False
            self._seen.add((issuer, token_id))
            heapq.heappush(self._expiries, (expires_at, issuer, token_id))
            return True


@dataclass
class _IssuerKeys:
    """The cached discovery document and keys of one issuer."""

    metadata: ProviderMetadata | None = None
    keys: list[SigningKey] = field(default_factory=list)
    fetched_at: float | None = None  # monotonic time of the last good fetch
    attempted_at: float | None = None  # monotonic time of the last attempt
    fetched_at_utc: datetime | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class TokenVerifier:
    """Verifies ID tokens against the issuers in the identity settings."""

    def __init__(
        self,
        settings: IdentitySettings,
        *,
        http: httpx.Client | None = None,
        clock: Callable[[], datetime] = _utc_now,
        jwks_refresh_cooldown: float = 60.0,
        replay_guard: ReplayGuard | None = None,
        leeway: timedelta = MAX_LEEWAY,
        jwks_max_age: float = 3600.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not timedelta(0) <= leeway <= MAX_LEEWAY:
            raise IdentityConfigError(
                f"the clock leeway must be between 0 and {MAX_LEEWAY.seconds} seconds"
            )
        self.settings = settings
        self._owns_http = http is None
        self._http = http or new_http_client()
        self._clock = clock
        self._monotonic = monotonic
        self._cooldown = jwks_refresh_cooldown
        self._max_age = jwks_max_age
        self._leeway = leeway
        self._replay_guard = replay_guard or MemoryReplayGuard(clock)
        self._cache = {issuer.name: _IssuerKeys() for issuer in settings.issuers}

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> TokenVerifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def verify(self, token: str) -> VerifiedIdentity:
        """The identity `token` proves, or TokenRejected / DomainRefused."""
        try:
            return self._verify(token)
        except TokenRejected as error:
            log.info("rejected token: %s", error.message)
            raise

    def _verify(self, token: str) -> VerifiedIdentity:
        header, unverified = self._parse(token)
        algorithm = header["alg"]
        issuer = self._select_issuer(unverified)
        key = self._signing_key(issuer, header.get("kid"), algorithm)

        try:
            verified = PyJWS().decode_complete(
                token, key.public_key, algorithms=[algorithm]
            )
        except jwt.InvalidSignatureError as error:
            raise TokenRejected("signature", "the signature does not verify") from error
        except jwt.PyJWTError as error:
            raise TokenRejected("malformed", str(error)) from error
        # The same bytes the issuer and audience were read from above, now
        # known to be signed by that issuer.
        claims = _json_object(verified["payload"])

        expires_at = self._check_times(claims)
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise TokenRejected("subject", "the token has no sub claim")

        email = None
        if issuer.kind == "corporate":
            email = self._check_email(claims)
        self._check_bound_claims(issuer, claims)

        # An issuer that puts no jti in its tokens (OpenBao, for one) still
        # gets each token used once: the token's own digest stands in for it.
        token_id = claims.get("jti") if isinstance(claims.get("jti"), str) else None
        replay_key = token_id or "sha256:" + hashlib.sha256(token.encode()).hexdigest()
        if not self._replay_guard(issuer.issuer, replay_key, expires_at):
            raise TokenRejected("replay", "this token has been used already")

        log.info(
            "verified %s token for %s (alg %s, kid %s)",
            issuer.name,
            email or subject,
            algorithm,
            key.key_id,
        )
        return VerifiedIdentity(
            issuer_name=issuer.name,
            issuer=issuer.issuer,
            subject=subject,
            email=email,
            algorithm=algorithm,
            key_type=key.key_type,
            key_size=key.key_size,
            key_id=key.key_id,
            token_id=token_id,
            expires_at=expires_at,
            claims=claims,
        )

    def metadata_summary(self, issuer_name: str) -> dict[str, str]:
        """What is known of an issuer's metadata and keys, fetching them first if
        they never were; for the handshake log."""
        issuer = self.settings.issuer_named(issuer_name)
        cache = self._cache[issuer.name]
        with cache.lock:
            if cache.metadata is None:
                self._refresh(issuer, cache, must_succeed=True)
            if cache.metadata is None:
                raise IdentityProviderUnavailable(issuer.issuer, "no metadata yet")
            return {
                "name": issuer.name,
                "kind": issuer.kind,
                "issuer": issuer.issuer,
                "audience": issuer.audience,
                "discovery_url": cache.metadata.discovery_url,
                "jwks_uri": cache.metadata.jwks_uri,
                "keys": str(len(cache.keys)),
                "algorithms": ",".join(sorted({k.algorithm for k in cache.keys})),
                "keys_fetched_at": cache.fetched_at_utc.isoformat()
                if cache.fetched_at_utc
                else "",
            }

    def _parse(self, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The header and the (not yet verified) claims of `token`."""
        if not isinstance(token, str) or not token:
            raise TokenRejected("malformed", "no token given")
        if len(token) > MAX_TOKEN_LENGTH:
            raise TokenRejected("malformed", f"longer than {MAX_TOKEN_LENGTH} bytes")
        try:
            unverified = PyJWS().decode_complete(
                token, options={"verify_signature": False}
            )
        except jwt.PyJWTError as error:
            raise TokenRejected("malformed", f"not a compact JWS: {error}") from error

        header: dict[str, Any] = unverified["header"]
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in PINNED_ALGORITHMS:
            raise TokenRejected(
                "algorithm",
                f"alg {algorithm!r} is not one of {', '.join(PINNED_ALGORITHMS)}",
            )
        if "crit" in header or "b64" in header:
            raise TokenRejected("malformed", "critical header extensions are refused")
        return header, _json_object(unverified["payload"])

    def _select_issuer(self, claims: dict[str, Any]) -> IssuerSettings:
        issuer_claim = claims.get("iss")
        candidates = [i for i in self.settings.issuers if i.issuer == issuer_claim]
        if not candidates:
            raise TokenRejected("issuer", f"issuer {issuer_claim!r} is not trusted")

        audience = claims.get("aud")
        if isinstance(audience, str):
            audiences = [audience]
        elif isinstance(audience, list) and all(isinstance(a, str) for a in audience):
            audiences = audience
        else:
            raise TokenRejected("audience", "the token has no valid aud claim")
        for issuer in candidates:
            if issuer.audience in audiences:
                return issuer
        raise TokenRejected(
            "audience", f"aud {audience!r} does not contain the configured audience"
        )

    def _signing_key(
        self, issuer: IssuerSettings, key_id: str | None, algorithm: str
    ) -> SigningKey:
        cache = self._cache[issuer.name]
        with cache.lock:
            if cache.fetched_at is None:
                self._refresh(issuer, cache, must_succeed=True)
            elif self._monotonic() - cache.fetched_at > self._max_age:
                self._refresh(issuer, cache, must_succeed=False)

            key = _find_key(cache.keys, key_id, algorithm)
            if key is None:
                # A new kid usually means the issuer rotated its keys. Re-read
                # them, but at most once per cooldown, so a stream of tokens
                # with made-up kids cannot make us hammer the issuer.
                self._refresh(issuer, cache, must_succeed=False)
                key = _find_key(cache.keys, key_id, algorithm)
        if key is None:
            raise TokenRejected(
                "unknown-key",
                f"{issuer.name} publishes no {algorithm} key with kid {key_id!r}",
            )
        return key

    def _refresh(
        self, issuer: IssuerSettings, cache: _IssuerKeys, *, must_succeed: bool
    ) -> None:
        """Re-read discovery and JWKS unless attempted within the cooldown.

        On failure the keys fetched before stay in use; with none fetched yet
        (`must_succeed`) the failure is raised as IdentityProviderUnavailable.
        """
        now = self._monotonic()
        if cache.attempted_at is not None and now - cache.attempted_at < self._cooldown:
            if must_succeed and cache.fetched_at is None:
                raise IdentityProviderUnavailable(
                    issuer.issuer, "the last attempt failed; waiting before retrying"
                )
            return
        cache.attempted_at = now

        try:
            metadata = fetch_provider_metadata(self._http, issuer.issuer)
            document = get_json_object(self._http, metadata.jwks_uri, issuer.issuer)
            keys = signing_keys_from_jwks(document)
        except (IdentityProviderUnavailable, ValueError) as error:
            log.warning("cannot refresh the keys of %s: %s", issuer.name, error)
            if must_succeed and cache.fetched_at is None:
                if isinstance(error, IdentityProviderUnavailable):
                    raise
                raise IdentityProviderUnavailable(issuer.issuer, str(error)) from error
            return

        cache.metadata = metadata
        cache.keys = keys
        cache.fetched_at = now
        cache.fetched_at_utc = self._clock()
        log.info(
            "fetched %d signing key(s) of %s from %s",
            len(keys),
            issuer.name,
            metadata.jwks_uri,
        )

    def _check_times(self, claims: dict[str, Any]) -> datetime:
        now = self._clock()
        expires = _timestamp(claims, "exp")
        issued = _timestamp(claims, "iat")
        if expires is None:
            raise TokenRejected("expiry", "the token has no exp claim")
        if issued is None:
            raise TokenRejected("issued-at", "the token has no iat claim")
        if now > expires + self._leeway:
            raise TokenRejected("expiry", f"the token expired at {expires.isoformat()}")
        if issued > now + self._leeway:
            raise TokenRejected(
                "issued-at", f"the token is issued in the future ({issued.isoformat()})"
            )
        if "nbf" in claims:
            not_before = _timestamp(claims, "nbf")
            if not_before is None or not_before > now + self._leeway:
                raise TokenRejected("not-before", "the token is not valid yet")
        return expires

    def _check_email(self, claims: dict[str, Any]) -> str:
        email = claims.get("email")
        if not isinstance(email, str) or not email:
            raise TokenRejected("email", "a corporate identity needs an email claim")
        if claims.get("email_verified") is not True:
            raise TokenRejected(
                "email-verified", f"the issuer has not verified {email!r}"
            )
        check_email_domain(email, self.settings)
        return email

    def _check_bound_claims(
        self, issuer: IssuerSettings, claims: dict[str, Any]
    ) -> None:
        for name, expected in issuer.bound_claims.items():
            actual = claim_as_text(claims.get(name))
            if actual != expected:
                raise TokenRejected(
                    "bound-claims",
                    f"claim {name!r} is {actual!r}; {issuer.name} needs {expected!r}",
                )


def _find_key(
    keys: list[SigningKey], key_id: str | None, algorithm: str
) -> SigningKey | None:
    if key_id is not None:
        matches = [k for k in keys if k.key_id == key_id and k.algorithm == algorithm]
    else:
        # Without a kid, only an unambiguous key is acceptable.
        matches = [k for k in keys if k.algorithm == algorithm]
    return matches[0] if len(matches) == 1 else None


def _timestamp(claims: dict[str, Any], name: str) -> datetime | None:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _json_object(payload: bytes) -> dict[str, Any]:
    try:
        claims = json.loads(payload)
    except ValueError as error:
        raise TokenRejected("malformed", "the payload is not JSON") from error
    if not isinstance(claims, dict):
        raise TokenRejected("malformed", "the payload is not a JSON object")
    return claims


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims of `token` without any check, for display only (the CLI shows
    the identity it is about to assert)."""
    try:
        payload = token.split(".")[1]
        return _json_object(
            base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        )
    except (IndexError, ValueError) as error:
        raise TokenRejected("malformed", "not a compact JWS") from error
