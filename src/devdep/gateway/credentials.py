"""Session credentials: opaque bearer strings handed to the client once, of
which the store keeps only a SHA-256 digest.

A credential carries 256 random bits, so an unsalted fast hash is enough: it
cannot be guessed, and a leaked store gives nothing to present.
"""

from __future__ import annotations

import hashlib
import re
import secrets

CREDENTIAL_BYTES = 32
# token_urlsafe(32) is 43 characters of the URL-safe base64 alphabet.
_CREDENTIAL_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")


def new_credential() -> str:
    """A fresh random bearer credential."""
    return secrets.token_urlsafe(CREDENTIAL_BYTES)


def hash_credential(credential: str) -> str:
    """The hex SHA-256 digest under which a credential's session is stored."""
    return hashlib.sha256(credential.encode("ascii")).hexdigest()


def looks_like_credential(value: str) -> bool:
    """Whether `value` has the shape of a credential `new_credential` makes."""
    return _CREDENTIAL_PATTERN.fullmatch(value) is not None
