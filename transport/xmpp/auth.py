"""The authentication verdict the adapter gives back to the core, and a pure authenticator.

Specs: RFC 6120 §6.5 (SASL failure conditions), XEP-0178 via ``certauth.identity``, DESIGN §2 (one small
interface between the core and whatever needs a database).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from certauth.identity import resolve_identity

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


@dataclass(frozen=True)
class AuthResult:
    """Either ``jid`` (bare) or ``condition`` (RFC 6120 §6.5) with a ``reason`` an operator can read.

    A multi-step mechanism (SCRAM) may instead answer with a ``challenge`` (RFC 6120 §6.4.3); on success
    ``additional_data`` goes into ``<success/>`` (RFC 6120 §6.4.6: SCRAM's server signature).
    """

    jid: str | None = None
    condition: str | None = None
    reason: str = ""
    challenge: bytes | None = None
    additional_data: bytes | None = None

    @property
    def accepted(self) -> bool:
        return self.jid is not None

    @classmethod
    def accept(cls, jid: str) -> AuthResult:
        return cls(jid=jid)

    @classmethod
    def refuse(cls, condition: str, reason: str) -> AuthResult:
        return cls(condition=condition, reason=reason)


class Authenticator(Protocol):
    """Given by the adapter; may use the database, so adapters call it outside the event loop."""

    def authenticate_external(self, facts: Any, authzid: str | None, domain: str) -> AuthResult: ...

    def authenticate_password(self, request: Any) -> AuthResult:
        """One step of a password mechanism (a :class:`~transport.xmpp.events.PasswordStepRequest`)."""
        ...


class IdentityAuthenticator:
    """Only the XEP-0178 identity rules, no database: what the ``pki`` method decides, and what tests use."""

    def __init__(
        self,
        hosted_domains: Iterable[str],
        verifiers: Sequence[str] = ("standard",),
        cn_prefix: str = "",
        cn_suffix: str = "",
    ) -> None:
        self.hosted_domains = tuple(hosted_domains)
        self.verifiers = tuple(verifiers)
        self.cn_prefix = cn_prefix
        self.cn_suffix = cn_suffix

    @classmethod
    def from_settings(cls, settings: Any) -> IdentityAuthenticator:
        """From a :class:`~transport.xmpp.connection.StreamSettings`."""
        return cls(settings.hosted_domains, settings.sasl_external, settings.cn_prefix, settings.cn_suffix)

    def authenticate_external(self, facts: Any, authzid: str | None, domain: str) -> AuthResult:
        decision = resolve_identity(
            facts, authzid, domain, self.hosted_domains, self.verifiers, self.cn_prefix, self.cn_suffix
        )
        return AuthResult(jid=decision.jid, condition=decision.condition, reason=decision.reason)
