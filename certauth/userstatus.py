"""What a client that has not logged in may read about why its certificate did not log it in (issue 18 §5).

Spec: RFC 6120 §6.4.5 (a SASL ``<failure/>`` may carry a ``<text/>`` for people), §4.9.3.12 and §4.9.2 (so
may a ``not-authorized`` stream error: what the core sends instead of features that would offer nothing,
``C2SConnection._own_certificate_refusal``). The client presented the certificate, so its own status
(revoked, on hold, expired, not yet valid, not issued by a CA we trust) is nothing it does not hold already;
anything else (accounts, other users, our CAs and CRLs, auth services) stays in the log and the
``AuthEvent``, and the client reads ``transport.xmpp.errors.SASL_FAILURE_TEXT`` (or nothing).

The one place that turns a check's reason (``certauth.verify``, ``certauth.revocation``) into such a sentence;
``tests/certauth/test_userstatus.py`` feeds it the reasons those modules really produce.
"""

from __future__ import annotations

from certauth.verify import REASON_SELF_SIGNED_UNTRUSTED, REASON_UNTRUSTED

TEXT_REVOKED = "Your client certificate was revoked."
TEXT_ON_HOLD = "Your client certificate is on hold (suspended)."
TEXT_EXPIRED = "Your client certificate has expired."
TEXT_NOT_YET_VALID = "Your client certificate is not valid yet."
TEXT_UNTRUSTED = "Your client certificate is not issued by a CA this server trusts."

# Reason prefix (the leaf's own status, as certauth.verify and certauth.revocation word it) -> text. A
# reason about an intermediate CA ("chain through intermediate CA ...") or about our CRLs matches none.
_TEXTS: tuple[tuple[str, str], ...] = (
    ("revoked ", TEXT_REVOKED),  # revocation.revocation_status, RFC 5280 §5.3.1
    ("on hold since ", TEXT_ON_HOLD),  # certificateHold
    ("expired ", TEXT_EXPIRED),  # verify._dates_reason, RFC 5280 §4.1.2.5
    ("not yet valid ", TEXT_NOT_YET_VALID),
    (REASON_SELF_SIGNED_UNTRUSTED, TEXT_UNTRUSTED),
    (REASON_UNTRUSTED, TEXT_UNTRUSTED),
)


def user_text(reason: str) -> str:
    """The sentence the client may read for this refusal of its own certificate; "" (the generic text)
    for any other reason."""
    for prefix, text in _TEXTS:
        if reason.startswith(prefix):
            return text
    return ""
