"""The corporate-domain policy: which email domains may hold a devdep session.

An identity passes only when its email domain, once normalised (lower case, no
trailing dot, IDNA A-labels), is one of `allowed_domains` or a subdomain of
one, and is neither a public email provider nor one of `blocked_domains`, nor a
subdomain of either. A block always wins over an allow. Domains are compared
label by label, so `acme.corp.gmail.com` is a subdomain of `gmail.com` and
`evilacme.corp` is no subdomain of `acme.corp`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

import idna

from devdep.auth.errors import DomainRefused

if TYPE_CHECKING:
    from devdep.auth.settings import IdentitySettings

log = logging.getLogger(__name__)

MAX_DOMAIN_LENGTH = 253

# Mailbox providers anyone can sign up to, and disposable-address services. A
# subdomain of one of these is refused too. Country variants are listed one by
# one: a pattern such as gmx.* would also match a company's own gmx.example.
PUBLIC_EMAIL_DOMAINS: frozenset[str] = frozenset(
    {
        # Google
        "gmail.com",
        "googlemail.com",
        # Microsoft
        "outlook.com",
        "outlook.de",
        "outlook.fr",
        "hotmail.com",
        "hotmail.co.uk",
        "hotmail.de",
        "hotmail.fr",
        "hotmail.it",
        "hotmail.es",
        "live.com",
        "live.co.uk",
        "live.de",
        "live.fr",
        "msn.com",
        "passport.com",
        # Yahoo and AOL
        "yahoo.com",
        "yahoo.co.uk",
        "yahoo.co.jp",
        "yahoo.de",
        "yahoo.fr",
        "yahoo.es",
        "yahoo.it",
        "yahoo.ca",
        "yahoo.com.au",
        "yahoo.com.br",
        "yahoo.co.in",
        "ymail.com",
        "rocketmail.com",
        "aol.com",
        "aim.com",
        # Apple
        "icloud.com",
        "me.com",
        "mac.com",
        # Proton, Tuta, Fastmail and other privacy-minded providers
        "proton.me",
        "protonmail.com",
        "protonmail.ch",
        "pm.me",
        "tutanota.com",
        "tutanota.de",
        "tuta.io",
        "tuta.com",
        "fastmail.com",
        "fastmail.fm",
        "hey.com",
        "posteo.de",
        "mailbox.org",
        "disroot.org",
        "riseup.net",
        # GMX, WEB.DE, mail.com (United Internet)
        "gmx.de",
        "gmx.net",
        "gmx.com",
        "gmx.at",
        "gmx.ch",
        "gmx.fr",
        "gmx.us",
        "gmx.co.uk",
        "gmx.es",
        "gmx.it",
        "web.de",
        "mail.com",
        # Russia and neighbours
        "mail.ru",
        "bk.ru",
        "inbox.ru",
        "list.ru",
        "internet.ru",
        "rambler.ru",
        "yandex.ru",
        "yandex.com",
        "yandex.by",
        "yandex.kz",
        "yandex.ua",
        "yandex.com.tr",
        "ya.ru",
        # Asia
        "qq.com",
        "163.com",
        "126.com",
        "yeah.net",
        "sina.com",
        "naver.com",
        "daum.net",
        "hanmail.net",
        "rediffmail.com",
        # Zoho and European ISPs' free mail
        "zoho.com",
        "zohomail.com",
        "t-online.de",
        "freenet.de",
        "orange.fr",
        "wanadoo.fr",
        "free.fr",
        "laposte.net",
        "sfr.fr",
        "libero.it",
        "virgilio.it",
        "seznam.cz",
        "wp.pl",
        "o2.pl",
        "interia.pl",
        # Disposable addresses
        "mailinator.com",
        "guerrillamail.com",
        "sharklasers.com",
        "10minutemail.com",
        "yopmail.com",
        "temp-mail.org",
        "trashmail.com",
        "dispostable.com",
        "getnada.com",
    }
)


def normalise_domain(domain: str) -> str:
    """`domain` in the one form the policy compares: IDNA A-labels (UTS #46
    mapping, which also lower-cases), without the trailing root dot.

    Raises ValueError when it is not a valid host name.
    """
    if not domain or any(character.isspace() for character in domain):
        raise ValueError(f"{domain!r} is not a domain name")

    try:
        ascii_form = idna.encode(domain, uts46=True, std3_rules=True).decode("ascii")
    except (idna.IDNAError, UnicodeError) as error:
        raise ValueError(f"{domain!r} is not a valid domain name: {error}") from error

    # One trailing dot names the DNS root and changes nothing (IDNA keeps it,
    # and maps the ideographic and full-width dots to it first); two would be
    # an empty label, which IDNA has refused already.
    ascii_form = ascii_form.removesuffix(".")
    if not ascii_form:
        raise ValueError(f"{domain!r} is not a domain name")
    if len(ascii_form) > MAX_DOMAIN_LENGTH:
        raise ValueError(f"{domain!r} is longer than {MAX_DOMAIN_LENGTH} characters")
    return ascii_form


def domain_within(domain: str, parents: Iterable[str]) -> str | None:
    """The first of `parents` that `domain` equals or is a subdomain of, or None.

    Both sides must already be normalised. The comparison is by whole labels:
    `x.acme.corp` is within `acme.corp`, `evilacme.corp` is not.
    """
    for parent in parents:
        if domain == parent or domain.endswith("." + parent):
            return parent
    return None


def check_email_domain(email: str, settings: IdentitySettings) -> str:
    """The normalised domain of `email` when the policy lets it in.

    Raises DomainRefused naming the reason otherwise: a malformed address, a
    public or blocked domain, or one that no allowed domain covers.
    """
    local_part, at, domain = email.rpartition("@")
    if not at or not local_part:
        raise DomainRefused("", f"{email!r} is not an email address")

    try:
        normalised = normalise_domain(domain)
    except ValueError as error:
        raise DomainRefused(domain, str(error)) from error

    public = domain_within(normalised, PUBLIC_EMAIL_DOMAINS)
    if public is not None:
        log.info("refused domain %s: public email provider %s", normalised, public)
        raise DomainRefused(normalised, f"{normalised} is a public email domain")

    blocked = domain_within(normalised, settings.blocked_domains)
    if blocked is not None:
        log.info("refused domain %s: blocked by %s", normalised, blocked)
        raise DomainRefused(normalised, f"{normalised} is a blocked domain")

    if domain_within(normalised, settings.allowed_domains) is None:
        log.info("refused domain %s: not in the allowed domains", normalised)
        raise DomainRefused(
            normalised, f"{normalised} is not one of the allowed corporate domains"
        )
    return normalised
