"""SASL EXTERNAL in the c2s core (RFC 6120 §6, XEP-0178, DESIGN §4), with bytes."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest

from certauth import userstatus
from transport.xmpp import (
    Authenticated,
    AuthenticateRequest,
    AuthRefused,
    C2SConnection,
    IdentityDecision,
    LocalProtocolError,
    State,
    settings_from_config,
)
from transport.xmpp import namespaces as ns
from transport.xmpp.errors import SASL_CONDITIONS, SASL_FAILURE_TEXT, sasl_failure_element
from xmppauth.config import Config, HttpListener, TlsOptions

from .streamkit import (
    AUTH_EXTERNAL,
    DOMAIN,
    HEADER,
    JULIET,
    RESPONSE,
    STARTTLS,
    Client,
    Facts,
    authenticate,
    b64,
    condition_of,
    stream_settings,
    tls_client,
)

SUCCESS = ns.qname(ns.SASL, "success")
FAILURE = ns.qname(ns.SASL, "failure")
CHALLENGE = ns.qname(ns.SASL, "challenge")


def mechanisms(client) -> list[str]:
    listing = client.features[0].find(ns.qname(ns.SASL, "mechanisms"))
    return [] if listing is None else [m.text for m in listing]


def sasl_condition(element) -> str | None:
    assert element.tag == FAILURE, element.tag
    return condition_of(element, ns.SASL)


@pytest.fixture
def core_log(caplog):
    """The core's log, where a SASL failure's reason goes (the client reads only a generic text)."""
    caplog.set_level(logging.INFO, logger="transport.xmpp.connection")
    return caplog


def assert_generic_failure(failure, condition: str, detail: str, core_log) -> None:
    """``condition`` with the generic text only; ``detail`` (the reason) is in the log, not sent."""
    assert sasl_condition(failure) == condition
    assert failure.findtext(ns.qname(ns.SASL, "text")) == SASL_FAILURE_TEXT[condition]
    assert detail not in ET.tostring(failure, encoding="unicode")
    assert f"SASL failure {condition}" in core_log.text and detail in core_log.text


# --- advertising EXTERNAL (DESIGN §4) -------------------------------------------------------------------


def test_external_is_advertised_over_tls_with_a_verified_certificate():
    assert mechanisms(tls_client()) == ["EXTERNAL"]


def test_external_is_not_advertised_without_a_certificate():
    assert mechanisms(tls_client(facts=None)) == []


def test_external_is_not_advertised_with_an_unverified_certificate():
    assert mechanisms(tls_client(verified=False)) == []


def test_external_is_not_advertised_when_not_configured():
    assert mechanisms(tls_client(sasl_mechanisms=("plain",))) == []


def test_listener_without_client_certificates_never_offers_external_even_for_verified_facts(core_log):
    # Issue 12 point 2: tls.verify_mode none; whatever an adapter reports, EXTERNAL stays off there.
    client = tls_client(client_certificates=False)
    assert mechanisms(client) == []
    client.send(AUTH_EXTERNAL.format("="))
    why = "this listener requests no client certificate (tls.verify_mode none)"
    assert_generic_failure(client.read_one(), "not-authorized", why, core_log)
    assert client.auth_requests() == []


@pytest.mark.parametrize(
    ("tls", "expected"),
    [
        (TlsOptions(verify_mode="none"), False),
        (TlsOptions(verify_mode="peer"), True),
        (TlsOptions(verify_mode="selfsigned_peer"), True),
        (None, True),  # plain listener: a trusted proxy may still hand over a verified chain
    ],
    ids=["none", "peer", "selfsigned_peer", "no_tls"],
)
def test_settings_from_config_takes_client_certificates_from_verify_mode(tls, expected):
    listener = HttpListener(tls=tls)
    settings = settings_from_config(Config(hosts=("example.org",)), listener, framing="websocket")
    assert settings.client_certificates is expected


def test_external_without_a_certificate_is_refused_with_not_authorized():
    client = tls_client(facts=None)
    client.send(AUTH_EXTERNAL.format("="))
    assert sasl_condition(client.read_one()) == "not-authorized"
    assert client.auth_requests() == []


def test_external_with_an_unverified_certificate_is_refused_with_not_authorized(core_log):
    client = tls_client(verified=False)
    client.send(AUTH_EXTERNAL.format("="))
    assert_generic_failure(client.read_one(), "not-authorized", "unknown issuer", core_log)


def test_external_when_not_configured_is_invalid_mechanism():
    client = tls_client(sasl_mechanisms=("plain",))
    client.send(AUTH_EXTERNAL.format("="))
    assert sasl_condition(client.read_one()) == "invalid-mechanism"


def test_unknown_mechanism_is_invalid_mechanism():
    client = tls_client()
    client.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='X-MAGIC'>=</auth>")
    assert sasl_condition(client.read_one()) == "invalid-mechanism"


# --- the initial response --------------------------------------------------------------------------------


def test_equals_sign_means_no_authzid():
    client = tls_client()
    events = client.send(AUTH_EXTERNAL.format("="))
    assert events == [AuthenticateRequest(client.conn.peer_facts, None, DOMAIN)]
    assert client.conn.state is State.SASL_PENDING and client.read() == []


def test_base64_authzid_is_decoded():
    client = tls_client()
    (request,) = client.send(AUTH_EXTERNAL.format(b64(JULIET)))
    assert request.authzid == JULIET


def test_invalid_base64_is_incorrect_encoding():
    client = tls_client()
    client.send(AUTH_EXTERNAL.format("not*base64!"))
    assert sasl_condition(client.read_one()) == "incorrect-encoding"
    assert client.auth_requests() == []


def test_base64_with_bad_padding_is_incorrect_encoding():
    client = tls_client()
    client.send(AUTH_EXTERNAL.format(b64(JULIET).rstrip("=") + "A"))
    assert sasl_condition(client.read_one()) == "incorrect-encoding"


def test_authzid_that_is_not_a_jid_is_invalid_authzid(core_log):
    client = tls_client()
    client.send(AUTH_EXTERNAL.format(b64("not a jid")))
    assert_generic_failure(client.read_one(), "invalid-authzid", "'not a jid' is not a JID", core_log)
    assert client.auth_requests() == []


def test_authzid_that_is_not_utf8_is_invalid_authzid():
    client = tls_client()
    client.send(AUTH_EXTERNAL.format("/w=="))
    assert sasl_condition(client.read_one()) == "invalid-authzid"


# --- empty <auth/>, challenge, response, abort (RFC 6120 §6.4.2-6.4.4) -------------------------------------


def test_empty_auth_gets_an_empty_challenge():
    client = tls_client()
    assert client.send(AUTH_EXTERNAL.format("")) == []
    challenge = client.read_one()
    assert challenge.tag == CHALLENGE and not challenge.text and len(challenge) == 0
    assert client.conn.state is State.SASL_CHALLENGE


@pytest.mark.parametrize("response", ["", "="])
def test_empty_or_equals_response_after_the_challenge_means_no_authzid(response):
    client = tls_client()
    client.send(AUTH_EXTERNAL.format(""))
    client.read()
    (request,) = client.send(RESPONSE.format(response))
    assert request.authzid is None


def test_response_with_an_authzid_after_the_challenge():
    client = tls_client()
    client.send(AUTH_EXTERNAL.format(""))
    (request,) = client.send(RESPONSE.format(b64(JULIET)))
    assert request.authzid == JULIET


def test_invalid_base64_response_is_incorrect_encoding():
    client = tls_client()
    client.send(AUTH_EXTERNAL.format(""))
    client.read()
    client.send(RESPONSE.format("%%%"))
    assert sasl_condition(client.read_one()) == "incorrect-encoding"


def test_abort_during_the_exchange_is_aborted():
    client = tls_client()
    client.send(AUTH_EXTERNAL.format(""))
    client.read()
    client.send("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
    assert sasl_condition(client.read_one()) == "aborted"
    assert client.conn.state is State.WAIT_AUTH


def test_response_without_a_challenge_is_unsupported_stanza_type():
    client = tls_client()
    client.send(RESPONSE.format("="))
    client.read()
    assert client.conn.closed and client.closes()[0].condition == "unsupported-stanza-type"


# --- verdicts -------------------------------------------------------------------------------------------


def test_accepted_certificate_gets_success_and_the_stream_restarts():
    client = tls_client()
    assert authenticate(client).tag == SUCCESS
    assert Authenticated(JULIET) in client.events
    assert client.conn.state is State.WAIT_STREAM and client.conn.jid == JULIET
    (features,) = client.open()
    assert features.find(ns.qname(ns.BIND, "bind")) is not None
    assert features.find(ns.qname(ns.SASL, "mechanisms")) is None


def test_two_xmppaddrs_without_authzid_is_invalid_authzid(core_log):
    client = tls_client(facts=Facts(xmpp_addrs=(JULIET, "romeo@example.org")))
    failure = authenticate(client)
    assert_generic_failure(
        failure, "invalid-authzid", "certificate has 2 xmppAddrs and no authzid was given", core_log
    )


def test_two_xmppaddrs_with_authzid_is_that_jid():
    client = tls_client(facts=Facts(xmpp_addrs=(JULIET, "romeo@example.org")))
    assert authenticate(client, b64("romeo@example.org")).tag == SUCCESS
    assert client.conn.jid == "romeo@example.org"


def test_refusal_keeps_the_stream_open_for_a_retry():
    client = tls_client(facts=Facts(xmpp_addrs=(JULIET, "romeo@example.org")))
    assert authenticate(client).tag == FAILURE
    assert client.conn.state is State.WAIT_AUTH
    assert authenticate(client, b64(JULIET)).tag == SUCCESS


def test_adapter_refusal_condition_reaches_the_client_and_its_reason_only_the_log(core_log):
    client = tls_client()
    client.send(AUTH_EXTERNAL.format("="))
    client.conn.auth_result(IdentityDecision.refuse("account-disabled", "account juliet is disabled"))
    assert_generic_failure(client.read_one(), "account-disabled", "account juliet is disabled", core_log)


@pytest.mark.parametrize(
    "reason",
    [
        "http: auth service http://auth.internal:8000 unreachable: [Errno 111] Connection refused",
        "db: registered certificate belongs to romeo@example.org, not juliet@example.org",
        "certificate refused: issuer not trusted (CN=Corp Internal Root)",
    ],
    ids=["auth_service_url", "account_state", "ca_name"],
)
def test_internal_detail_in_the_reason_never_reaches_the_client(core_log, reason):
    client = tls_client()
    client.send(AUTH_EXTERNAL.format("="))
    client.conn.auth_result(IdentityDecision.refuse("not-authorized", reason))
    sent = client.conn.data_to_send()
    assert b"<not-authorized/>" in sent
    for secret in ("auth.internal", "Errno", "romeo", "Corp Internal Root", "http:", "db:"):
        assert secret.encode() not in sent
    assert reason in core_log.text


@pytest.mark.parametrize("condition", sorted(SASL_CONDITIONS))
def test_every_sasl_condition_has_a_generic_text(condition):

    element = sasl_failure_element(condition)
    assert condition_of(element, ns.SASL) == condition
    assert element.findtext(ns.qname(ns.SASL, "text")) == SASL_FAILURE_TEXT[condition]


def test_adapter_acceptance_in_another_domain_is_not_authorized():
    client = tls_client()
    client.send(AUTH_EXTERNAL.format("="))
    client.conn.auth_result(IdentityDecision.accept("juliet@other.example"))
    assert sasl_condition(client.read_one()) == "not-authorized"
    assert client.conn.jid is None


def test_unknown_condition_from_the_adapter_becomes_not_authorized():
    client = tls_client()
    client.send(AUTH_EXTERNAL.format("="))
    client.conn.auth_result(IdentityDecision.refuse("nope", "whatever"))
    assert sasl_condition(client.read_one()) == "not-authorized"


def test_auth_result_without_a_request_is_a_local_protocol_error():
    with pytest.raises(LocalProtocolError):
        tls_client().conn.auth_result(IdentityDecision.accept(JULIET))


def test_three_failures_close_the_stream_with_policy_violation():
    client = tls_client(facts=None)
    for attempt in range(3):
        client.send(AUTH_EXTERNAL.format("="))
        elements = client.read()
        assert sasl_condition(elements[0]) == "not-authorized"
        if attempt < 2:
            assert not client.conn.closed
    assert condition_of(elements[-1], ns.STREAM_ERRORS) == "policy-violation"
    assert client.server_closed and client.closes()[0].condition == "policy-violation"


def test_two_failures_leave_the_stream_open():
    client = tls_client(facts=None)
    for _ in range(2):
        client.send(AUTH_EXTERNAL.format("="))
    assert not client.conn.closed


def test_stanza_during_the_exchange_is_not_authorized():
    client = tls_client()
    client.send(AUTH_EXTERNAL.format(""))
    client.send("<message to='romeo@example.org'/>")
    client.read()
    assert client.closes()[0].condition == "not-authorized"


def test_input_while_the_verdict_is_pending_waits_and_pipelines_into_the_new_stream():
    client = tls_client()
    events = client.send(AUTH_EXTERNAL.format("=") + HEADER.format(to=DOMAIN))
    assert len(events) == 1 and client.conn.state is State.SASL_PENDING
    assert client.conn.data_to_send() == b""
    client.conn.auth_result(IdentityDecision.accept(JULIET))
    sent = client.conn.data_to_send()
    assert sent.startswith(b'<success xmlns="urn:ietf:params:xml:ns:xmpp-sasl"/><?xml')
    assert b'<bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"/>' in sent
    assert client.conn.state is State.WAIT_BIND


def test_flood_while_the_verdict_is_pending_is_policy_violation():
    client = tls_client()
    client.send(AUTH_EXTERNAL.format("="))
    client.send(" " * 70000)
    assert client.conn.closed and client.closes()[0].condition == "policy-violation"


def test_without_a_usable_mechanism_an_empty_mechanisms_list_tells_the_client_to_give_up():
    listing = tls_client(facts=None).features[0].find(ns.qname(ns.SASL, "mechanisms"))
    assert listing is not None and len(listing) == 0


def test_common_name_verifier_from_the_settings_is_used():
    client = tls_client(
        facts=Facts(xmpp_addrs=(), common_name="Nurse"), sasl_external=("standard", "common_name")
    )
    assert authenticate(client).tag == SUCCESS
    assert client.conn.jid == "nurse@example.org"


# --- issue 18: the core's own refusals are events; the client's certificate status is its text --------------


PASSWORDS = {"sasl_mechanisms": ("scram_sha256", "plain", "external"), "password_auth": True}
STATUS_TEXTS = [
    userstatus.TEXT_REVOKED,
    userstatus.TEXT_ON_HOLD,
    userstatus.TEXT_EXPIRED,
    userstatus.TEXT_NOT_YET_VALID,
    userstatus.TEXT_UNTRUSTED,
]


def refused_check(user_text: str, *, certificate: bool = True) -> SimpleNamespace:
    """A certificate check that refused, as ``certauth.authenticator.check_certificate`` returns it."""
    facts = Facts() if certificate else None
    return SimpleNamespace(facts=facts, verified=False, reason="revoked 2026-11-02", user_text=user_text)


def refused_client(user_text: str, **overrides: object) -> Client:
    """Direct TLS with a certificate the check refused, handed over as the driver does (a check object)."""
    conn = C2SConnection(stream_settings(tls_mode="tls", **overrides))
    conn.tls_established(refused_check(user_text))
    client = Client(conn)
    client.features = client.open()  # type: ignore[attr-defined]
    return client


def stream_error(client: Client) -> tuple[str | None, str | None]:
    """(condition, text) of the one stream error the client read, the stream closed after it."""
    (error,) = client.features  # type: ignore[attr-defined]
    assert error.tag == ns.STREAM_ERROR and client.server_closed and client.conn.closed, error.tag
    text = error.find(ns.qname(ns.STREAM_ERRORS, "text"))
    assert text is None or text.get(ns.XML_LANG) == "en"
    return condition_of(error, ns.STREAM_ERRORS), None if text is None else text.text


@pytest.mark.parametrize("text", STATUS_TEXTS)
def test_refused_certificate_with_nothing_to_offer_reads_its_status_in_a_stream_error(text):
    # RFC 6120 §4.9.3.12: not authorized for stream negotiation, instead of an empty <mechanisms/>.
    client = refused_client(text)
    assert stream_error(client) == ("not-authorized", text)
    (close,) = client.closes()
    assert close.condition == "not-authorized"
    assert not [event for event in client.events if isinstance(event, AuthRefused)]  # the check recorded it


def test_refused_certificate_after_starttls_reads_its_status_on_the_restarted_stream():
    client = Client(C2SConnection(stream_settings(tls_mode="starttls_required")))
    client.open()
    client.send(STARTTLS)
    client.read()
    client.conn.tls_established(refused_check(userstatus.TEXT_REVOKED))
    client.features = client.open()  # type: ignore[attr-defined]
    assert stream_error(client) == ("not-authorized", userstatus.TEXT_REVOKED)


@pytest.mark.parametrize("text", STATUS_TEXTS)
def test_refused_certificate_with_password_mechanisms_gets_the_features_and_no_stream_error(text):
    client = refused_client(text, **PASSWORDS)
    assert not client.conn.closed and not client.closes()
    assert mechanisms(client) == ["SCRAM-SHA-256", "PLAIN"]  # the user may log in with a password


def test_refused_certificate_with_password_mechanisms_reads_its_status_when_it_tries_external():
    client = refused_client(userstatus.TEXT_REVOKED, **PASSWORDS)
    events = client.send(AUTH_EXTERNAL.format("="))
    failure = client.read_one()
    assert sasl_condition(failure) == "not-authorized"
    assert failure.find(ns.qname(ns.SASL, "text")).text == userstatus.TEXT_REVOKED
    (refused,) = [event for event in events if isinstance(event, AuthRefused)]
    assert (refused.condition, refused.mechanism) == ("not-authorized", "EXTERNAL")
    assert refused.reason.startswith("SASL EXTERNAL needs a verified client certificate")


def test_refused_certificate_without_user_text_gets_the_empty_mechanisms_and_nothing_else():
    client = refused_client("")  # e.g. an intermediate CA revoked, or our CRL stale: nothing to tell
    assert not client.conn.closed and mechanisms(client) == []
    assert client.features[0].find(ns.qname(ns.SASL, "mechanisms")) is not None
    assert b"<text" not in ET.tostring(client.features[0])


def test_no_certificate_gets_the_empty_mechanisms_whatever_the_check_says():
    conn = C2SConnection(stream_settings(tls_mode="tls"))
    conn.tls_established(refused_check(userstatus.TEXT_REVOKED, certificate=False))
    client = Client(conn)
    (features,) = client.open()
    assert features.tag == ns.FEATURES and not conn.closed
    listing = features.find(ns.qname(ns.SASL, "mechanisms"))
    assert listing is not None and len(listing) == 0


def test_refused_certificate_where_external_is_not_configured_says_nothing_of_it():
    # Nothing is offered, but not because of the certificate: its status is not the reason, so no text.
    client = refused_client(userstatus.TEXT_REVOKED, sasl_mechanisms=("plain",))
    assert not client.conn.closed and mechanisms(client) == []


def test_refused_certificate_on_a_listener_without_client_certificates_says_nothing_of_it():
    client = refused_client(userstatus.TEXT_REVOKED, client_certificates=False)
    assert not client.conn.closed and mechanisms(client) == []


def test_verified_certificate_after_the_check_is_offered_external_and_no_stream_error():
    conn = C2SConnection(stream_settings(tls_mode="tls"))
    conn.tls_established(SimpleNamespace(facts=Facts(), verified=True, reason="ok", user_text=""))
    client = Client(conn)
    client.features = client.open()  # type: ignore[attr-defined]
    assert mechanisms(client) == ["EXTERNAL"] and not conn.closed


def test_the_authenticators_user_text_replaces_the_generic_one_and_is_no_core_event():
    client = tls_client()
    client.send(AUTH_EXTERNAL.format("="))
    verdict = IdentityDecision.refuse("not-authorized", "certificate revoked 2026-11-02", "Revoked.")
    events = client.conn.auth_result(verdict)
    failure = client.read_one()
    assert failure.find(ns.qname(ns.SASL, "text")).text == "Revoked."
    assert not [event for event in events if isinstance(event, AuthRefused)]  # the authenticator recorded it


@pytest.mark.parametrize(
    ("auth", "condition"),
    [
        ("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='X-MAGIC'>=</auth>", "invalid-mechanism"),
        (AUTH_EXTERNAL.format("not base64!"), "incorrect-encoding"),
        (AUTH_EXTERNAL.format("QEA="), "invalid-authzid"),  # "@@" is no JID
    ],
)
def test_refusals_the_core_decides_alone_are_auth_refused_events(auth, condition):
    client = tls_client()
    events = client.send(auth)
    assert sasl_condition(client.read_one()) == condition
    assert [event.condition for event in events if isinstance(event, AuthRefused)] == [condition]


def test_a_listeners_settings_are_made_once_and_follow_a_new_config():
    """new_c2s_stream keeps one StreamSettings per config and listener (issue 17): a connection of the same
    listener shares it; a config replaced at reload, or another listener, gets its own."""
    import dataclasses

    from transport.xmpp import new_c2s_stream
    from xmppauth.config import C2SListener

    listener, other = C2SListener(port=5222), C2SListener(port=5223, max_stanza_size=4096)
    config = Config(hosts=("example.org",))
    first, second = new_c2s_stream(config, listener), new_c2s_stream(config, listener)
    assert first.settings is second.settings and first is not second
    assert new_c2s_stream(config, other).settings.max_stanza_size == 4096
    reloaded = dataclasses.replace(config, hosts=("example.net",))
    assert new_c2s_stream(reloaded, listener).settings.hosted_domains == ("example.net",)
    assert new_c2s_stream(config, listener).settings.hosted_domains == ("example.org",)
