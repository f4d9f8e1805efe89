"""Resource binding (RFC 6120 §7), stanzas (§8), ping (XEP-0199) and disco#info (XEP-0030) in the c2s core."""

from __future__ import annotations

from xml.etree.ElementTree import Element, SubElement

import pytest

from transport.xmpp import BindRequest, Bound, LocalProtocolError, StanzaReceived, State
from transport.xmpp import namespaces as ns

from .streamkit import BIND, JULIET, Client, authenticate, condition_of, session_client, tls_client

FULL = f"{JULIET}/balcony"


def bind_client() -> Client:
    """Authenticated, stream restarted, waiting for the bind request."""
    client = tls_client()
    authenticate(client)
    client.open()
    return client


def stanza_error(element) -> tuple[str | None, str | None]:
    error = element.find(ns.qname(ns.CLIENT, "error"))
    assert element.get("type") == "error" and error is not None
    return condition_of(error, ns.STANZA_ERRORS), error.get("type")


# --- binding --------------------------------------------------------------------------------------------


def test_bind_with_a_resource_gives_that_full_jid():
    client = bind_client()
    events = client.bind("<resource>balcony</resource>")
    reply = client.read_one()
    assert reply.get("type") == "result" and reply.get("id") == "bind1"
    assert reply.findtext(f"{ns.qname(ns.BIND, 'bind')}/{ns.qname(ns.BIND, 'jid')}") == FULL
    assert events == [BindRequest(FULL, "balcony"), Bound(FULL, "balcony")]
    assert client.conn.state is State.SESSION


def test_bind_without_a_resource_gets_a_generated_one():
    client = bind_client()
    _, event = client.bind("")
    jid = client.read_one().findtext(f"{ns.qname(ns.BIND, 'bind')}/{ns.qname(ns.BIND, 'jid')}")
    assert jid == event.jid and jid.startswith(f"{JULIET}/") and len(event.resource) > 8


def test_generated_resources_differ():
    first, second = bind_client(), bind_client()
    assert first.bind("")[0].resource != second.bind("")[0].resource


def test_bind_with_an_invalid_resource_is_bad_request_and_may_be_retried():
    client = bind_client()
    assert client.send(BIND.format("<resource>private\ue000use</resource>")) == []
    assert stanza_error(client.read_one()) == ("bad-request", "modify")
    assert client.conn.state is State.WAIT_BIND
    assert client.bind("<resource>ok</resource>")[-1].resource == "ok"


# --- the adapter's check before the session exists (issue 11 point 6) ----------------------------------


def test_bind_request_sends_nothing_until_the_adapter_answers():
    client = bind_client()
    (request,) = client.send(BIND.format("<resource>balcony</resource>"))
    assert request == BindRequest(FULL, "balcony")
    assert client.read() == [] and client.conn.state is State.BIND_PENDING


def test_stanzas_sent_while_the_bind_is_checked_wait_for_the_session():
    client = bind_client()
    client.send(BIND.format("<resource>balcony</resource>"))
    assert client.send("<message to='romeo@example.org'><body>hi</body></message>") == []
    bound, received = client.conn.bind_result(None)
    assert isinstance(bound, Bound) and isinstance(received, StanzaReceived)
    assert received.element.get("from") == FULL


def test_refused_bind_ends_the_stream_with_that_condition_and_no_bind_result():
    client = bind_client()
    client.send(BIND.format("<resource>balcony</resource>"))
    client.send("<message to='romeo@example.org'><body>hi</body></message>")
    (close,) = client.conn.bind_result("reset", "certificate revoked (keyCompromise)")
    (error,) = client.read()
    assert error.tag == ns.STREAM_ERROR and condition_of(error, ns.STREAM_ERRORS) == "reset"  # §4.9.3.16
    assert error.findtext(ns.qname(ns.STREAM_ERRORS, "text")) == "certificate revoked (keyCompromise)"
    assert close.condition == "reset" and client.conn.closed and client.server_closed
    assert client.conn.send_stanza(Element(ns.MESSAGE)) is False


def test_bind_result_after_the_stream_closed_meanwhile_does_nothing():
    client = bind_client()
    client.send(BIND.format("<resource>balcony</resource>"))
    client.conn.close_with_error("reset", "certificate revoked")
    client.read()
    assert client.conn.bind_result(None) == [] and client.read() == [] and client.conn.closed


def test_bind_result_without_a_bind_request_is_a_local_protocol_error():
    client = bind_client()
    with pytest.raises(LocalProtocolError):
        client.conn.bind_result(None)


def test_bind_without_an_id_is_bad_request():
    client = bind_client()
    client.send("<iq type='set'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    assert stanza_error(client.read_one())[0] == "bad-request"
    assert client.conn.state is State.WAIT_BIND


def test_stanza_before_binding_is_not_authorized():
    client = bind_client()
    client.send("<message to='romeo@example.org'><body>hi</body></message>")
    client.read()
    assert client.conn.closed and client.closes()[0].condition == "not-authorized"


def test_ping_before_binding_is_not_authorized():
    client = bind_client()
    client.send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert client.conn.closed and client.closes()[0].condition == "not-authorized"


def test_second_bind_is_not_allowed():
    client = session_client()
    client.send(BIND.format("<resource>again</resource>"))
    assert stanza_error(client.read_one())[0] == "not-allowed"
    assert client.conn.full_jid == FULL


def test_legacy_session_is_offered_as_optional_and_answered():
    client = tls_client()
    authenticate(client)
    (features,) = client.open()
    session = features.find(ns.qname(ns.SESSION, "session"))
    assert session is not None and session.find(ns.qname(ns.SESSION, "optional")) is not None
    client.bind("<resource>r</resource>")
    client.read()
    client.send("<iq type='set' id='s'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
    assert client.read_one().get("type") == "result"


def test_legacy_session_is_not_offered_when_disabled():
    client = tls_client(legacy_session=False)
    authenticate(client)
    (features,) = client.open()
    assert features.find(ns.qname(ns.SESSION, "session")) is None


# --- IQs to the server --------------------------------------------------------------------------------------


@pytest.mark.parametrize("to", ["", " to='example.org'", f" to='{JULIET}'"])
def test_ping_to_the_server_is_answered_with_a_result(to):
    client = session_client()
    client.send(f"<iq type='get' id='ping1'{to}><ping xmlns='urn:xmpp:ping'/></iq>")
    reply = client.read_one()
    assert (reply.get("type"), reply.get("id"), reply.get("to")) == ("result", "ping1", FULL)


def test_disco_info_of_the_server_names_an_im_server_and_its_features():
    client = session_client()
    client.send(
        "<iq type='get' id='d1' to='example.org'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
    )
    reply = client.read_one()
    query = reply.find(ns.qname(ns.DISCO_INFO, "query"))
    identity = query.find(ns.qname(ns.DISCO_INFO, "identity"))
    assert (identity.get("category"), identity.get("type")) == ("server", "im")
    features = {f.get("var") for f in query.findall(ns.qname(ns.DISCO_INFO, "feature"))}
    assert {ns.DISCO_INFO, ns.PING} <= features
    assert reply.get("from") == "example.org"


def test_disco_info_of_a_node_is_item_not_found():
    client = session_client()
    client.send("<iq type='get' id='d2'><query xmlns='http://jabber.org/protocol/disco#info' node='x'/></iq>")
    assert stanza_error(client.read_one())[0] == "item-not-found"


def test_unknown_iq_to_the_server_is_service_unavailable():
    client = session_client()
    client.send("<iq type='get' id='r1'><query xmlns='jabber:iq:private'/></iq>")
    reply = client.read_one()
    assert stanza_error(reply) == ("service-unavailable", "cancel")
    assert reply.get("id") == "r1" and reply.get("to") == FULL


@pytest.mark.parametrize("to", ["", " to='juliet@example.org'"])
def test_roster_iq_to_the_own_account_goes_to_the_router(to):
    client = session_client()
    events = client.send(f"<iq type='get' id='r1'{to}><query xmlns='jabber:iq:roster'/></iq>")
    assert client.read() == []
    assert [type(e) for e in events] == [StanzaReceived]
    assert events[0].element.get("from") == FULL


def test_iq_results_and_errors_to_the_server_are_not_answered():
    client = session_client()
    client.send("<iq type='result' id='x1'/><iq type='error' id='x2'/>")
    assert client.read() == [] and not client.conn.closed


def test_iq_get_with_two_children_is_bad_request():
    client = session_client()
    client.send("<iq type='get' id='two'><ping xmlns='urn:xmpp:ping'/><ping xmlns='urn:xmpp:ping'/></iq>")
    assert stanza_error(client.read_one())[0] == "bad-request"


def test_iq_without_id_is_bad_request():
    client = session_client()
    client.send("<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert stanza_error(client.read_one())[0] == "bad-request"


def test_iq_with_an_unknown_type_is_bad_request():
    client = session_client()
    client.send("<iq type='fetch' id='t'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert stanza_error(client.read_one())[0] == "bad-request"


# --- stanzas for the router -------------------------------------------------------------------------------


def test_message_is_handed_to_the_router_with_from_stamped():
    client = session_client()
    (event,) = client.send("<message to='romeo@example.org' type='chat'><body>hi</body></message>")
    assert isinstance(event, StanzaReceived)
    assert event.element.get("from") == FULL and event.element.get("to") == "romeo@example.org"
    assert client.read() == []


def test_presence_is_handed_to_the_router():
    client = session_client()
    (event,) = client.send("<presence/>")
    assert event.element.tag == ns.PRESENCE and event.element.get("from") == FULL


def test_iq_to_another_entity_is_handed_to_the_router():
    client = session_client()
    (event,) = client.send(
        "<iq type='get' id='v' to='romeo@example.org/phone'><ping xmlns='urn:xmpp:ping'/></iq>"
    )
    assert event.element.get("from") == FULL and client.read() == []


def test_from_with_our_own_bare_or_full_jid_is_accepted():
    client = session_client()
    assert client.send(f"<message from='{JULIET}' to='romeo@example.org'/>")[0].element.get("from") == FULL
    assert client.send(f"<message from='{FULL}' to='romeo@example.org'/>")[0].element.get("from") == FULL


def test_forged_from_is_invalid_from():
    client = session_client()
    client.send("<message from='romeo@example.org' to='nurse@example.org'/>")
    client.read()
    assert client.conn.closed and client.closes()[0].condition == "invalid-from"


def test_message_to_a_malformed_jid_is_jid_malformed():
    client = session_client()
    assert client.send("<message to='a b@example.org'><body>x</body></message>") == []
    assert stanza_error(client.read_one())[0] == "jid-malformed"


def test_error_message_to_a_malformed_jid_is_not_answered():
    client = session_client()
    client.send("<message type='error' to='a b@example.org'/>")
    assert client.read() == []


def test_unknown_first_level_element_in_the_session_is_unsupported_stanza_type():
    client = session_client()
    client.send("<enable xmlns='urn:xmpp:sm:3'/>")
    assert client.conn.closed and client.closes()[0].condition == "unsupported-stanza-type"


def test_stanza_in_another_namespace_is_unsupported_stanza_type():
    client = session_client()
    client.send("<message xmlns='jabber:server' to='romeo@example.org'/>")
    assert client.conn.closed and client.closes()[0].condition == "unsupported-stanza-type"


# --- output and close -------------------------------------------------------------------------------------


def test_send_stanza_writes_to_the_client_in_the_session():
    client = session_client()
    message = Element(ns.MESSAGE, {"from": "romeo@example.org/x", "to": FULL})
    SubElement(message, ns.qname(ns.CLIENT, "body")).text = "a < b"
    assert client.conn.send_stanza(message) is True
    assert client.conn.data_to_send() == (
        b'<message from="romeo@example.org/x" to="juliet@example.org/balcony"><body>a &lt; b</body></message>'
    )


def test_send_stanza_before_the_session_is_refused():
    assert bind_client().conn.send_stanza(Element(ns.MESSAGE)) is False


def test_client_close_in_the_session_is_answered_and_closes():
    client = session_client()
    client.send("</stream:stream>")
    assert client.conn.data_to_send() == b"</stream:stream>"
    assert client.conn.closed and client.closes()[0].reason == "the client closed the stream"


def test_server_close_sends_the_closing_tag():
    client = session_client()
    client.events.extend(client.conn.close("shutting down"))
    assert client.conn.data_to_send() == b"</stream:stream>" and client.closes()


def test_conflict_from_the_adapter_ends_the_session():
    client = session_client()
    client.events.extend(client.conn.close_with_error("conflict", "replaced by a new session"))
    (error,) = client.read()
    assert condition_of(error, ns.STREAM_ERRORS) == "conflict" and client.server_closed


def test_connection_lost_stops_everything():
    client = session_client()
    client.conn.connection_lost()
    assert client.conn.closed and client.send("<presence/>") == []
