"""Error conditions of the c2s stream and the elements that carry them, in one place.

Specs: RFC 6120 §4.9 (stream errors), §6.5 (SASL failures), §8.3 (stanza errors).
"""

from __future__ import annotations

from xml.etree.ElementTree import Element, SubElement

from . import namespaces as ns

# RFC 6120 §4.9.3: stream error conditions (those this server sends).
BAD_FORMAT = "bad-format"
BAD_NAMESPACE_PREFIX = "bad-namespace-prefix"
CONFLICT = "conflict"
CONNECTION_TIMEOUT = "connection-timeout"
HOST_UNKNOWN = "host-unknown"
INTERNAL_SERVER_ERROR = "internal-server-error"
INVALID_FROM = "invalid-from"
INVALID_NAMESPACE = "invalid-namespace"
INVALID_XML = "invalid-xml"
NOT_AUTHORIZED = "not-authorized"
NOT_WELL_FORMED = "not-well-formed"
POLICY_VIOLATION = "policy-violation"
RESET = "reset"
RESTRICTED_XML = "restricted-xml"
SEE_OTHER_HOST = "see-other-host"
SYSTEM_SHUTDOWN = "system-shutdown"
UNDEFINED_CONDITION = "undefined-condition"
UNSUPPORTED_ENCODING = "unsupported-encoding"
UNSUPPORTED_FEATURE = "unsupported-feature"
UNSUPPORTED_STANZA_TYPE = "unsupported-stanza-type"
UNSUPPORTED_VERSION = "unsupported-version"

STREAM_CONDITIONS = frozenset(
    {
        BAD_FORMAT, BAD_NAMESPACE_PREFIX, CONFLICT, CONNECTION_TIMEOUT, HOST_UNKNOWN, "host-gone",
        "improper-addressing", INTERNAL_SERVER_ERROR, INVALID_FROM, INVALID_NAMESPACE, INVALID_XML,
        NOT_AUTHORIZED, NOT_WELL_FORMED, POLICY_VIOLATION, "remote-connection-failed", RESET,
        "resource-constraint", RESTRICTED_XML, SEE_OTHER_HOST, SYSTEM_SHUTDOWN, UNDEFINED_CONDITION,
        UNSUPPORTED_ENCODING, UNSUPPORTED_FEATURE, UNSUPPORTED_STANZA_TYPE, UNSUPPORTED_VERSION,
    }
)  # fmt: skip

# RFC 6120 §6.5: SASL failure conditions.
SASL_ABORTED = "aborted"
SASL_ACCOUNT_DISABLED = "account-disabled"
SASL_CREDENTIALS_EXPIRED = "credentials-expired"
SASL_ENCRYPTION_REQUIRED = "encryption-required"
SASL_INCORRECT_ENCODING = "incorrect-encoding"
SASL_INVALID_AUTHZID = "invalid-authzid"
SASL_INVALID_MECHANISM = "invalid-mechanism"
SASL_MALFORMED_REQUEST = "malformed-request"
SASL_MECHANISM_TOO_WEAK = "mechanism-too-weak"
SASL_NOT_AUTHORIZED = "not-authorized"
SASL_TEMPORARY_AUTH_FAILURE = "temporary-auth-failure"

SASL_CONDITIONS = frozenset(
    {
        SASL_ABORTED, SASL_ACCOUNT_DISABLED, SASL_CREDENTIALS_EXPIRED, SASL_ENCRYPTION_REQUIRED,
        SASL_INCORRECT_ENCODING, SASL_INVALID_AUTHZID, SASL_INVALID_MECHANISM, SASL_MALFORMED_REQUEST,
        SASL_MECHANISM_TOO_WEAK, SASL_NOT_AUTHORIZED, SASL_TEMPORARY_AUTH_FAILURE,
    }
)  # fmt: skip

# What an unauthenticated client reads in a SASL <failure><text/> (RFC 6120 §6.4.5: the text is optional
# and for people). Generic on purpose: the reason (auth service URL or error, account state, CA names) is
# for the operator and goes to the log and the AuthEvent, never to a client that has not logged in.
SASL_FAILURE_TEXT: dict[str, str] = {
    SASL_ABORTED: "Authentication aborted.",
    SASL_ACCOUNT_DISABLED: "Authentication failed.",
    SASL_CREDENTIALS_EXPIRED: "Authentication failed.",
    SASL_ENCRYPTION_REQUIRED: "Encryption is required before authentication.",
    SASL_INCORRECT_ENCODING: "The SASL data is not valid base64.",
    SASL_INVALID_AUTHZID: "The authorization identity cannot be used with these credentials.",
    SASL_INVALID_MECHANISM: "This mechanism is not offered.",
    SASL_MALFORMED_REQUEST: "The SASL request is malformed.",
    SASL_MECHANISM_TOO_WEAK: "This mechanism is too weak.",
    SASL_NOT_AUTHORIZED: "Authentication failed.",
    SASL_TEMPORARY_AUTH_FAILURE: "Authentication is temporarily unavailable; try again later.",
}

# RFC 6120 §8.3.3: stanza error conditions with their usual type (§8.3.2).
STANZA_BAD_REQUEST = "bad-request"
STANZA_FEATURE_NOT_IMPLEMENTED = "feature-not-implemented"
STANZA_JID_MALFORMED = "jid-malformed"
STANZA_NOT_ALLOWED = "not-allowed"
STANZA_SERVICE_UNAVAILABLE = "service-unavailable"

STANZA_ERROR_TYPES = {
    STANZA_BAD_REQUEST: "modify",
    "conflict": "cancel",
    STANZA_FEATURE_NOT_IMPLEMENTED: "cancel",
    "forbidden": "auth",
    "internal-server-error": "cancel",
    "item-not-found": "cancel",
    STANZA_JID_MALFORMED: "modify",
    STANZA_NOT_ALLOWED: "cancel",
    "not-acceptable": "modify",
    "not-authorized": "auth",
    "recipient-unavailable": "wait",
    "remote-server-not-found": "cancel",
    "resource-constraint": "wait",
    STANZA_SERVICE_UNAVAILABLE: "cancel",
    "undefined-condition": "cancel",
}


class StreamError(Exception):
    """Raised inside the core when the stream must end with ``condition`` (RFC 6120 §4.9)."""

    def __init__(self, condition: str, text: str = "") -> None:
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text


def _text(parent: Element, namespace: str, text: str) -> None:
    if text:
        SubElement(parent, ns.qname(namespace, "text"), {ns.XML_LANG: "en"}).text = text


def stream_error_element(condition: str, text: str = "") -> Element:
    """``<stream:error><COND xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text/></stream:error>``."""
    if condition not in STREAM_CONDITIONS:
        raise ValueError(f"{condition!r} is not a stream error condition (RFC 6120 §4.9.3)")
    error = Element(ns.STREAM_ERROR)
    SubElement(error, ns.qname(ns.STREAM_ERRORS, condition))
    _text(error, ns.STREAM_ERRORS, text)
    return error


def sasl_failure_element(condition: str, text: str = "") -> Element:
    """``<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><COND/><text/></failure>`` (RFC 6120 §6.4.5).

    The text is :data:`SASL_FAILURE_TEXT`'s, never the reason: the client is not authenticated yet. Only
    ``text`` replaces it: an ``IdentityDecision.user_text``, the status of the client's own certificate
    (``certauth.userstatus``).
    """
    if condition not in SASL_CONDITIONS:
        raise ValueError(f"{condition!r} is not a SASL failure condition (RFC 6120 §6.5)")
    failure = Element(ns.qname(ns.SASL, "failure"))
    SubElement(failure, ns.qname(ns.SASL, condition))
    _text(failure, ns.SASL, text or SASL_FAILURE_TEXT[condition])
    return failure


def stanza_error_reply(
    stanza: Element, condition: str, text: str = "", error_type: str | None = None
) -> Element:
    """The error reply to ``stanza`` (RFC 6120 §8.3.1): same kind and id, addresses swapped, type 'error'."""
    reply = Element(stanza.tag, {"type": "error"})
    if stanza.get("id") is not None:
        reply.set("id", stanza.get("id"))
    if stanza.get("from"):
        reply.set("to", stanza.get("from"))
    if stanza.get("to"):
        reply.set("from", stanza.get("to"))
    error = SubElement(
        reply, ns.qname(ns.CLIENT, "error"), {"type": error_type or STANZA_ERROR_TYPES[condition]}
    )
    SubElement(error, ns.qname(ns.STANZA_ERRORS, condition))
    _text(error, ns.STANZA_ERRORS, text)
    return reply
