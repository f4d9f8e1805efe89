"""The one verdict on "who is this client?": what the identity rules, the auth methods and the password
mechanisms return, and what the core's ``auth_result`` takes.

Specs: RFC 6120 §6.5 (SASL failure conditions), §6.4.3 (challenges), §6.4.6 (additional data with success);
XEP-0178 §3 (the certificate's identity, ``certauth.identity``). It lives in the core so that ``certauth``
(which decides) and the adapters (which pass the verdict on) share it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IdentityDecision:
    """Accepted: ``jid`` (bare). Refused: ``condition`` (RFC 6120 §6.5) and a ``reason`` an operator can read.

    ``verifier`` names the ``auth.sasl_external`` verifier that decided (XEP-0178 rules), if one did.
    A multi-step mechanism (SCRAM) may instead answer with a ``challenge`` (RFC 6120 §6.4.3); on success
    ``additional_data`` goes into ``<success/>`` (RFC 6120 §6.4.6: SCRAM's server signature).
    ``user_text``: what the client may read in the failure's ``<text/>`` (RFC 6120 §6.4.5), only ever the
    status of its own presented certificate (``certauth.userstatus``); empty: the generic text.
    """

    jid: str | None = None
    condition: str | None = None
    reason: str = ""
    verifier: str | None = None
    challenge: bytes | None = None
    additional_data: bytes | None = None
    user_text: str = ""

    @property
    def accepted(self) -> bool:
        return self.jid is not None

    @classmethod
    def accept(cls, jid: str) -> IdentityDecision:
        return cls(jid=jid)

    @classmethod
    def refuse(cls, condition: str, reason: str, user_text: str = "") -> IdentityDecision:
        return cls(condition=condition, reason=reason, user_text=user_text)
