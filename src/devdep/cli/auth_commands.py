"""`auth` and `status`: open a session with the gateway, and look at it."""

from __future__ import annotations

import math
from typing import Any

import click

from devdep.cli.output import (
    OutputFormat,
    output_option,
    print_json,
    stderr_console,
    stdout_console,
)
from devdep.gateway.client import PROVIDERS, Provider, authenticate, session_status
from devdep.gateway.session_cache import cache_path

gateway_option = click.option(
    "--gateway",
    metavar="URL",
    help="The gateway's URL [default: $DEVDEP_GATEWAY, the cached session's, "
    "or http://127.0.0.1:8443].",
)


def countdown(seconds: float) -> str:
    """Remaining time as minutes:seconds, rounded up, e.g. 15:00."""
    whole = max(math.ceil(seconds), 0)
    return f"{whole // 60:02d}:{whole % 60:02d}"


def _key_description(signature: dict[str, Any]) -> str:
    key = str(signature.get("key_type") or "key")
    if signature.get("key_size"):
        key = f"{key}-{signature['key_size']}"
    return f"{key}, {signature.get('algorithm', '?')}"


def _show_device_prompt(verification_uri: str, user_code: str) -> None:
    # On stderr, so that stdout holds only the result, JSON or text.
    console = stderr_console()
    console.print(f"To sign in, open {verification_uri}", markup=False)
    console.print(f"and enter the code: {user_code}", markup=False)
    console.print("Waiting for the sign-in to be approved...", markup=False)


@click.command()
@click.option(
    "--provider",
    type=click.Choice(PROVIDERS),
    default="oidc",
    show_default=True,
    help="oidc: a corporate ID token, or the device sign-in without --token; "
    "github-oidc: the GitHub Actions job's token; gitlab-jwt: GitLab's.",
)
@click.option(
    "--token",
    metavar="TOKEN",
    help="The ID token to present (gitlab-jwt defaults to $DEVDEP_JWT).",
)
@gateway_option
@click.option(
    "--audience",
    help="The audience to ask GitHub Actions for [default: the gateway's].",
)
@click.option(
    "--client-id",
    help="The OAuth client id for the device sign-in [default: the issuer's audience].",
)
@output_option
def auth(
    provider: Provider,
    token: str | None,
    gateway: str | None,
    audience: str | None,
    client_id: str | None,
    output: OutputFormat,
) -> None:
    """Authenticate with the gateway and cache the session ticket.

    Exits 101 when the token is rejected, 102 when its email domain is refused.
    """
    result = authenticate(
        provider,
        token=token,
        gateway=gateway,
        audience=audience,
        client_id=client_id,
        on_prompt=_show_device_prompt,
        cache=cache_path(),
    )
    if output is OutputFormat.JSON:
        print_json({"ok": True, **result})
        return

    handshake = result["handshake"]
    metadata = handshake.get("metadata", {})
    window = countdown(float(result["remaining_seconds"]))
    signature = handshake["signature"]
    console = stdout_console()
    lines = [
        "[OIDC Handshake initiated]",
        f"  1. Ingress detects client IP footprint: {handshake['client_ip']}",
        f"  2. Client asserts identity scope: {handshake['identity']}",
        "  3. IdP Gateway query: resolving metadata "
        f"{metadata.get('discovery_url') or result['issuer']}... done",
        "  4. Cryptographic assertion: signature check "
        f"{signature['result']} ({_key_description(signature)})",
        f"  5. Session Token issued: #{result['ticket']} {result['state']} "
        f"(compliance window: {window})",
    ]
    for line in lines:
        console.print(line, markup=False)


@click.command()
@click.option(
    "--ticket",
    metavar="DEP-N",
    help="The session to show; it must be the cached one [default: the cached "
    "session].",
)
@gateway_option
@output_option
def status(ticket: str | None, gateway: str | None, output: OutputFormat) -> None:
    """Show a session's remaining lifetime, subject, IP footprints and runs.

    Exits 101, clearing the cached session, when it has expired.
    """
    document = session_status(ticket, gateway=gateway, cache=cache_path())
    if output is OutputFormat.JSON:
        print_json({"ok": True, **document})
        return

    console = stdout_console()
    remaining = countdown(float(document["remaining_seconds"]))
    console.print(
        f"Session #{document['ticket']} {document['state']} "
        f"(compliance window: {remaining} remaining)",
        markup=False,
    )
    rows = [
        ("subject", document["subject"]),
        ("identity", document.get("email") or document["subject"]),
        ("issuer", f"{document['issuer_name']} ({document['issuer']})"),
        ("created at", document["created_at"]),
        ("expires at", document["expires_at"]),
    ]
    for name, value in rows:
        console.print(f"  {name + ':':<12} {value}", markup=False)
    console.print("  IP footprints:", markup=False)
    for footprint in document["footprints"]:
        console.print(
            f"    {footprint['address']:<16} {footprint['requests']} request(s), "
            f"first {footprint['first_seen']}, last {footprint['last_seen']}",
            markup=False,
        )
    runs = document.get("runs") or []
    console.print(f"  runs: {len(runs) if runs else 'none yet'}", markup=False)
