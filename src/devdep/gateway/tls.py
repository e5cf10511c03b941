"""The gateway's TLS: version 1.3 only, with X25519 the preferred key exchange.

Python 3.11, which devdep supports, has no `SSLContext.set_groups`, only
`set_ecdh_curve`, which with OpenSSL 3 sets the supported groups to exactly the
one named. On such a Python the gateway offers X25519 alone; a TLS 1.3 client
that cannot do X25519 then fails the handshake rather than silently falling
back. Where `set_groups` exists the list is X25519 first, then P-256 and P-384.
"""

from __future__ import annotations

import logging
import ssl

from devdep.gateway.config import TlsSettings
from devdep.gateway.errors import TlsError

logger = logging.getLogger(__name__)

PREFERRED_GROUPS = "X25519:secp256r1:secp384r1"


def _prefer_x25519(context: ssl.SSLContext) -> None:
    set_groups = getattr(context, "set_groups", None)
    if callable(set_groups):
        set_groups(PREFERRED_GROUPS)
        return
    context.set_ecdh_curve("X25519")


def server_context(tls: TlsSettings) -> ssl.SSLContext:
    """A server SSLContext for the configured certificate: TLS 1.3 only."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    try:
        context.load_cert_chain(str(tls.certificate), str(tls.private_key))
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(
            f"cannot load the TLS certificate {tls.certificate} with its key "
            f"{tls.private_key}: {exc}",
            hint="give a PEM certificate chain and its unencrypted PEM private key",
        ) from exc
    _prefer_x25519(context)
    context.set_alpn_protocols(["http/1.1"])
    return context
