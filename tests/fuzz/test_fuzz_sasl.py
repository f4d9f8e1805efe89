"""Fuzzing the SASL EXTERNAL parsers of the c2s core: the initial response and ``<response/>`` (base64 of the
authzid, or ``=``; RFC 4422 App. A, RFC 6120 §6.4.2) and the authzid as a JID (RFC 6120 §6.3.8, RFC 7622).

Properties: every message ends in a request to the authenticator whose authzid is exactly what the client
encoded and a valid bare JID, or in a SASL failure with ``incorrect-encoding`` / ``invalid-authzid``
(RFC 6120 §6.5); whatever the authzid, a certificate asserting only alice@localhost never authenticates
anyone else (XEP-0178 §3); and the JID parser raises nothing but ``InvalidJid``, and what it accepts it
accepts again unchanged.
"""

from __future__ import annotations

import base64
from xml.sax.saxutils import escape

from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz import harness
from transport.xmpp import Authenticated, AuthenticateRequest
from transport.xmpp import namespaces as ns
from transport.xmpp.jid import InvalidJid, parse_bare_jid, parse_jid

SASL_REFUSALS = {"incorrect-encoding", "invalid-authzid", "not-authorized"}
# Text XML 1.0 §2.2 allows (what a client can put in an element at all).
XML_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, codec="utf-8", exclude_characters="\ufffe\uffff"), max_size=80
)
AUTHZIDS = st.one_of(
    XML_TEXT,
    st.sampled_from(["alice@localhost", "ALICE@LocalHost", "bob@localhost", "alice@localhost/r", "localhost",
                     "@localhost", "alice@", "alice@otherhost", "ALİCE@localhost", "alice@localhost."]),
)  # fmt: skip
MESSAGES = st.one_of(
    XML_TEXT,  # arbitrary text, mostly not base64
    AUTHZIDS.map(lambda authzid: base64.b64encode(authzid.encode()).decode()),
    st.binary(max_size=40).map(lambda raw: base64.b64encode(raw).decode()),
    st.sampled_from(
        ["=", "", " = ", "YWxpY2VAbG9jYWxob3N0", "YWxpY2VAbG9jYWxob3N0=", "YR==", "====", "\u0660"]
    ),
)


def sasl_outcome(message: str, as_response: bool) -> tuple[list[object], list[str]]:
    """Events, and the SASL failure conditions sent, for one EXTERNAL message after a direct-TLS header."""
    text = escape(message).encode()
    if as_response:
        chunks = [harness.HEADER, harness.AUTH.replace(b">=</auth>", b"/>"), b"<response xmlns='"
                  + ns.SASL.encode() + b"'>" + text + b"</response>"]  # fmt: skip
    else:
        chunks = [
            harness.HEADER,
            b"<auth xmlns='" + ns.SASL.encode() + b"' mechanism='EXTERNAL'>" + text + b"</auth>",
        ]
    with harness.bounded():
        conn, transcript = harness.drive(harness.settings_for("tls"), chunks)
        harness.check_transcript(conn, transcript)
    output = b"".join(transcript.output)
    failures = [
        condition
        for condition in ("incorrect-encoding", "invalid-authzid", "not-authorized", "malformed-request")
        if f"<{condition}/>".encode() in output
    ]
    return transcript.events, failures


@given(MESSAGES, st.booleans())
@example("=", False)
@example("YWxpY2VAbG9jYWxob3N0", False)  # alice@localhost
@example("Ym9iQGxvY2FsaG9zdA==", True)  # bob@localhost: not what the certificate asserts
def test_an_external_message_is_a_request_with_exactly_the_encoded_authzid_or_a_sasl_failure(
    message, response
):
    events, failures = sasl_outcome(message, response)
    requests = [event for event in events if isinstance(event, AuthenticateRequest)]
    stripped = message.strip() or ("=" if response else "")
    if requests:
        (request,) = requests
        if stripped == "=":
            assert request.authzid is None
        else:
            assert base64.b64decode(stripped, validate=True) == request.authzid.encode()
            assert str(parse_bare_jid(request.authzid)) == parse_bare_jid(request.authzid).bare
    elif stripped:
        assert failures and set(failures) <= SASL_REFUSALS, (failures, events)
    for event in events:
        if isinstance(event, Authenticated):  # XEP-0178 §3: only what the certificate asserts
            assert event.jid == "alice@localhost"
            if requests[0].authzid is not None:
                assert parse_bare_jid(requests[0].authzid).bare == "alice@localhost"


@given(st.one_of(XML_TEXT, st.text(max_size=60), AUTHZIDS))
@example("a@b/\u0000")
@example("@")
@example("a@" + "b" * 1100)
def test_the_jid_parser_raises_only_invalid_jid_and_is_idempotent(text):
    with harness.bounded():
        try:
            jid = parse_jid(text)
        except InvalidJid:
            return
        again = parse_jid(str(jid))
    assert again == jid, (text, str(jid), str(again))
