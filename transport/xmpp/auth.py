"""SASL mechanism names and the interface between the core and whatever decides who a client is.

Specs: RFC 4422 §3.1 and the IANA SASL mechanism registry (names), RFC 6120 §6.5 (failure conditions),
DESIGN §2 (one small interface between the core and whatever needs a database). The verdict type is
:class:`~transport.xmpp.decisions.IdentityDecision`.
"""

from __future__ import annotations

from typing import Any, Protocol

from .decisions import IdentityDecision

# MongooseIM's auth.sasl_mechanisms names -> SASL mechanism names (RFC 4422 §3.1, IANA registry).
MECHANISM_NAMES: dict[str, str] = {
    "external": "EXTERNAL",
    "plain": "PLAIN",
    **{
        f"scram_sha{bits}{plus}": f"SCRAM-SHA-{bits}{plus.replace('_plus', '-PLUS')}"
        for bits in ("1", "224", "256", "384", "512")
        for plus in ("", "_plus")
    },
}
PASSWORD_MECHANISMS = frozenset(name for key, name in MECHANISM_NAMES.items() if key != "external")


class Authenticator(Protocol):
    """Given by the adapter; may use the database, so adapters call it outside the event loop."""

    def authenticate_external(self, facts: Any, authzid: str | None, domain: str) -> IdentityDecision: ...

    def authenticate_password(self, request: Any) -> IdentityDecision:
        """One step of a password mechanism (a :class:`~transport.xmpp.events.PasswordStepRequest`)."""
        ...
