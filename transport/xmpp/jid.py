"""The JID grammar: parsing and normalising XMPP addresses.

Spec: RFC 7622 (XMPP Address Format) §3: the parts of a JID and their normalisation, through the PRECIS
profiles of RFC 8265 (``precis_i18n``: UsernameCaseMapped for localparts, OpaqueString for resourceparts)
and IDNA2008 with the UTS #46 mapping (``idna``) for domainparts. RFC 6120 §6.3.8: an authzid is a bare JID.

Part of the pure core: besides the standard library it imports exactly ``precis_i18n`` and ``idna``, two
pure-Python libraries without I/O (the core's documented allow-list, tests/transport/test_core_imports.py).
Every name is normalised here and nowhere else (DESIGN §0 "Names").
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass

import idna
from precis_i18n import get_profile

_MAX_PART_BYTES = 1023  # RFC 7622 §3.2, §3.3, §3.4
_LOCALPART_FORBIDDEN = frozenset("\"&'/:<>@")  # RFC 7622 §3.3.1
_USERNAME = get_profile("UsernameCaseMapped")  # RFC 7622 §3.3.2, RFC 8265 §3.3
_OPAQUE = get_profile("OpaqueString")  # RFC 7622 §3.4.2, RFC 8265 §4.2


class InvalidJid(ValueError):
    """A string that is not a valid JID; the message says why."""


@dataclass(frozen=True)
class Jid:
    """A normalised JID: ``localpart@domainpart/resourcepart``, each part optional but the domain."""

    local: str | None
    domain: str
    resource: str | None = None

    @property
    def bare(self) -> str:
        return f"{self.local}@{self.domain}" if self.local is not None else self.domain

    @property
    def is_bare(self) -> bool:
        return self.resource is None

    def __str__(self) -> str:
        return self.bare if self.resource is None else f"{self.bare}/{self.resource}"


def _check_length(part: str, name: str) -> None:
    if not part:
        raise InvalidJid(f"empty {name}")
    if len(part.encode("utf-8")) > _MAX_PART_BYTES:
        raise InvalidJid(f"{name} longer than {_MAX_PART_BYTES} bytes")


def _has_control(text: str) -> bool:
    return any(unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn") for char in text)


@functools.lru_cache(maxsize=1024)  # twice a login (the xmppAddr, the verdict); pure (issue 17 §6)
def normalise_localpart(local: str) -> str:
    """RFC 7622 §3.3: the PRECIS UsernameCaseMapped profile (RFC 8265 §3.3: width mapping, case mapping,
    NFC, the IdentifierClass), then the characters §3.3.1 forbids on top of it.

    A look-alike that only compatibility mapping would fold (``ﬁona``, fullwidth letters are mapped, the
    ligature is not) is refused rather than merged into another account's name.
    """
    try:
        enforced = _USERNAME.enforce(local)
    except UnicodeError as exc:
        raise InvalidJid(f"localpart {local!r} is not a PRECIS username: {exc.reason}") from None
    _check_length(enforced, "localpart")
    bad = sorted({char for char in enforced if char in _LOCALPART_FORBIDDEN})
    if bad:
        raise InvalidJid(f"localpart contains forbidden characters {''.join(bad)!r}")
    return enforced


@functools.lru_cache(maxsize=1024)  # asked for every hosted domain at every login: pure, so once per name
def normalise_domain(domain: str) -> str:
    """RFC 7622 §3.2: IDNA2008 with the UTS #46 mapping (case, width), compared as U-labels; without the
    trailing dot of a fully qualified name. An IP literal in brackets is kept as written, lowered."""
    if domain.endswith("."):
        domain = domain[:-1]  # RFC 7622 §3.2: a trailing dot is stripped before comparison
    _check_length(domain, "domainpart")
    if domain.startswith("[") and domain.endswith("]"):
        literal = domain.lower()
        if any(char.isspace() for char in literal) or _has_control(literal):
            raise InvalidJid(f"domainpart {domain!r} contains forbidden characters")
        return literal
    if any(char.isspace() or char in "@/\"&'<>\\" for char in domain) or _has_control(domain):
        raise InvalidJid(f"domainpart {domain!r} contains forbidden characters")
    if any(not label for label in domain.split(".")):
        raise InvalidJid(f"domainpart {domain!r} has an empty label")
    try:
        ascii_form = idna.encode(domain, uts46=True, transitional=False)
        unicode_form = idna.decode(ascii_form)
    except (idna.IDNAError, UnicodeError) as exc:
        raise InvalidJid(f"domainpart {domain!r} is not a valid IDNA domain name: {exc}") from None
    _check_length(unicode_form, "domainpart")
    return unicode_form


def normalise_resource(resource: str) -> str:
    """RFC 7622 §3.4: the PRECIS OpaqueString profile (RFC 8265 §4.2: non-ASCII spaces to U+0020, NFC,
    the FreeformClass)."""
    try:
        enforced = _OPAQUE.enforce(resource)
    except UnicodeError as exc:
        raise InvalidJid(f"resourcepart is not a PRECIS opaque string: {exc.reason}") from None
    _check_length(enforced, "resourcepart")
    return enforced


def parse_jid(text: str) -> Jid:
    """Split and normalise ``text`` per RFC 7622 §3.1; :class:`InvalidJid` naming the problem otherwise."""
    if not isinstance(text, str):
        raise InvalidJid("a JID must be a string")
    rest, slash, resource = text.partition("/")  # RFC 7622 §3.1: the resource starts at the first '/'
    local, at, domain = rest.partition("@")  # ...and the localpart ends at the first '@' before it
    if not at:
        local, domain = "", rest
    return Jid(
        local=normalise_localpart(local) if at else None,
        domain=normalise_domain(domain),
        resource=normalise_resource(resource) if slash else None,
    )


def parse_bare_jid(text: str) -> Jid:
    """A ``localpart@domainpart`` JID, as an authzid must be (RFC 6120 §6.3.8)."""
    jid = parse_jid(text)
    if jid.local is None:
        raise InvalidJid(f"{text!r} has no localpart")
    if jid.resource is not None:
        raise InvalidJid(f"{text!r} is a full JID, a bare JID is required")
    return jid
