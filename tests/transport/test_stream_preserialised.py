"""What the core serialises once and reuses (issue 17 §6): the features of each variant, ``<success/>``, and
the bind result from a template. Each must be exactly what building and serialising the element gives, and the
features must follow every input they depend on (listener, state, offer, channel binding, framing): a
connection never gets another variant's features.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element, SubElement

import pytest

from transport.xmpp import C2SConnection
from transport.xmpp import connection as core
from transport.xmpp import namespaces as ns
from transport.xmpp.xml import serialize

from .streamkit import Facts, authenticate, stream_settings, tls_client

WS_OPEN = "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.org' version='1.0'/>"


def opened(conn: C2SConnection, framed: bool = False) -> bytes:
    """Open a stream on ``conn``; the features bytes it queued (the last thing queued, after our header)."""
    if framed:
        conn.receive_data(WS_OPEN.encode())
    else:
        conn.receive_data(
            b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
            b"to='example.org' version='1.0'>"
        )
    features = conn._out[-1]
    conn.data_to_send()
    return features


def tls_conn(verified=True, *, framed=False, bindings=None, **settings) -> C2SConnection:
    if framed:
        settings["framing"] = "websocket"
    conn = C2SConnection(stream_settings(tls_mode="tls", **settings))
    conn.tls_established(Facts(), verified, None if verified else "unknown issuer", channel_bindings=bindings)
    return conn


def rebuilt(conn: C2SConnection) -> bytes:
    """The features of ``conn``'s current key, built and serialised afresh (no cache)."""
    return core._serialize_out(core._features_element(conn._features_key()), conn._framed)


@pytest.fixture(autouse=True)
def empty_cache():
    core._FEATURES.clear()
    yield
    core._FEATURES.clear()


def test_the_same_offer_reuses_one_serialisation_equal_to_a_fresh_build():
    first, second = tls_conn(), tls_conn()
    data = opened(first)
    assert opened(second) is data  # the second login builds nothing
    assert data == rebuilt(second)
    assert b"<mechanism>EXTERNAL</mechanism>" in data


def test_a_verified_and_a_refused_certificate_get_different_features():
    verified = opened(tls_conn())
    refused = opened(tls_conn(verified=False))
    assert b"EXTERNAL" in verified and b"EXTERNAL" not in refused
    assert refused.endswith(b'<mechanisms xmlns="urn:ietf:params:xml:ns:xmpp-sasl"/></stream:features>')


def test_another_listeners_mechanisms_are_its_own():
    external = opened(tls_conn())
    passwords = opened(tls_conn(sasl_mechanisms=("external", "scram_sha256", "plain"), password_auth=True))
    assert b"SCRAM-SHA-256" in passwords and b"SCRAM-SHA-256" not in external
    assert passwords == rebuilt(
        tls_conn(sasl_mechanisms=("external", "scram_sha256", "plain"), password_auth=True)
    )


def test_channel_binding_types_follow_the_connection():
    settings = {"sasl_mechanisms": ("scram_sha256_plus",), "password_auth": True}
    exporter = opened(tls_conn(bindings={"tls-exporter": b"x"}, **settings))
    endpoint = opened(tls_conn(bindings={"tls-server-end-point": b"y"}, **settings))
    assert b'type="tls-exporter"' in exporter and b"tls-server-end-point" not in exporter
    assert b'type="tls-server-end-point"' in endpoint and b"tls-exporter" not in endpoint
    unbound = opened(tls_conn(**settings))  # no channel binding: no -PLUS, no listing of types
    assert b"PLUS" not in unbound and b"sasl-channel-binding" not in unbound


def test_starttls_optional_and_required_differ():
    optional = C2SConnection(stream_settings(tls_mode="starttls"))
    required = C2SConnection(stream_settings(tls_mode="starttls_required"))
    optional_data, required_data = opened(optional), opened(required)
    assert b"<required/>" in required_data and b"required" not in optional_data
    assert optional_data == rebuilt(optional) and required_data == rebuilt(required)


def test_binding_features_follow_legacy_session():
    for legacy_session in (True, False):
        client = tls_client(legacy_session=legacy_session)
        authenticate(client)
        client.open()
    binds = [data for key, data in core._FEATURES.items() if key.bound]  # the variants after SASL
    assert len(binds) == 2
    assert sum(b"urn:ietf:params:xml:ns:xmpp-session" in data for data in binds) == 1
    assert all(b'<bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"/>' in data for data in binds)


def test_websocket_features_declare_the_stream_prefix_and_differ_from_tcp():
    tcp = opened(tls_conn())
    ws_conn = tls_conn(framed=True)
    ws = opened(ws_conn, framed=True)
    assert ws != tcp
    assert ws.startswith(b'<stream:features xmlns:stream="http://etherx.jabber.org/streams"')
    assert ws == rebuilt(ws_conn)


@pytest.mark.parametrize("framed", [False, True])
def test_success_without_additional_data_is_the_serialised_element(framed):
    expected = serialize(
        Element(ns.qname(ns.SASL, "success")), default_ns=None if framed else ns.CLIENT, declare_stream=framed
    )
    assert core._SUCCESS[framed] == expected


@pytest.mark.parametrize("framed", [False, True])
@pytest.mark.parametrize(
    ("iq_id", "full"), [("bind_1", "juliet@example.org/balcony"), ("a&b\"<'>\t\n", "j@example.org/r&<>\r")]
)
def test_bind_result_template_is_what_serialising_the_element_gives(framed, iq_id, full):
    reply = Element(ns.IQ, {"type": "result", "id": iq_id})
    SubElement(SubElement(reply, ns.qname(ns.BIND, "bind")), ns.qname(ns.BIND, "jid")).text = full
    expected = serialize(reply, default_ns=None if framed else ns.CLIENT, declare_stream=framed)
    assert core._bind_result(iq_id, full, framed) == expected
