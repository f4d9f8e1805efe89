"""BOSH (XEP-0124, XEP-0206) request by request against our server, with Python's http.client over mutual TLS.

Session creation attributes (§7), repeated ``rid`` (§14.3), ``rid`` beyond the window (§14.3), unknown
``sid`` (§17.2 item-not-found), ``type="terminate"`` (§13), ``xmpp:restart`` (XEP-0206 §5), the held
request answered when the next one comes (§10), and the session bound to the certificate that created it.
"""

from __future__ import annotations

import http.client
import ssl
import threading
from xml.etree.ElementTree import Element, fromstring

import pytest

from tests.certs import make_client
from tests.processes import SAME_ON_BOTH_LEGS
from tests.transport.tlsclient import client_context
from tests.transport.xmpphttp import start_server
from transport.xmpp import namespaces as ns

pytestmark = SAME_ON_BOTH_LEGS

HTTPBIND = "http://jabber.org/protocol/httpbind"
XBOSH = "urn:xmpp:xbosh"
BODY = (
    "<body xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh' {attrs}>{children}</body>"
)
AUTH = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from start_server(tmp_path_factory.mktemp("bosh-protocol"))


class Client:
    """One keep-alive HTTPS connection presenting one client certificate (or none)."""

    def __init__(self, server, directory, issued, listener: str = "peer", context=None) -> None:
        """``context``: the client's TLS context (default: one presenting ``issued``)."""
        context = context or client_context(directory, issued)
        self.connection = http.client.HTTPSConnection(
            "127.0.0.1", server.ports[listener], context=context, timeout=30
        )

    def post(
        self, children: str = "", *, headers: dict[str, str] | None = None, **attrs: str | int
    ) -> tuple[int, bytes, Element]:
        """One body; ``headers``: HTTP headers besides the content type."""
        rendered = " ".join(
            f"{key.replace('_', ':', 1) if key.startswith('xmpp_') else key}='{value}'"
            for key, value in attrs.items()
        )
        data = BODY.format(attrs=rendered, children=children).encode()
        headers = {"Content-Type": "text/xml; charset=utf-8", **(headers or {})}
        self.connection.request("POST", "/http-bind", data, headers)
        response = self.connection.getresponse()
        raw = response.read()
        return response.status, raw, fromstring(raw)

    def create(self, rid: int = 1000, **attrs: str | int) -> tuple[str, Element]:
        status, _, body = self.post(
            rid=rid, to="localhost", wait=30, hold=1, ver="1.6", xmpp_version="1.0", **attrs
        )
        assert status == 200 and body.get("type") is None, body.attrib
        return body.get("sid"), body


@pytest.fixture
def alice(server, tmp_path):
    return Client(server, tmp_path, server.pki.valid)


def test_session_creation_response_carries_the_session_attributes_and_features(alice):
    sid, body = alice.create()
    assert len(sid) >= 16
    assert body.get("hold") == "1" and body.get("requests") == "2" and body.get("wait") == "30"
    assert (
        body.get("from") == "localhost" and body.get("ver") and body.get("inactivity") and body.get("polling")
    )
    assert body.get(f"{{{XBOSH}}}version") == "1.0"
    (features,) = body
    assert features.tag == ns.FEATURES
    assert [m.text for m in features.iter(ns.qname(ns.SASL, "mechanism"))] == ["EXTERNAL"]


def test_hold_and_wait_are_capped(alice):
    status, _, body = alice.post(rid=1, to="localhost", wait=3600, hold=5, ver="1.6", xmpp_version="1.0")
    assert status == 200 and body.get("hold") == "1" and body.get("wait") == "60"


def test_login_restart_and_bind_over_bosh(alice):
    sid, _ = alice.create(rid=10)
    _, _, body = alice.post(AUTH, rid=11, sid=sid)
    assert [child.tag for child in body] == [ns.qname(ns.SASL, "success")]
    _, _, body = alice.post(rid=12, sid=sid, to="localhost", xmpp_restart="true")  # XEP-0206 §5
    (features,) = body
    assert features.find(ns.qname(ns.BIND, "bind")) is not None


def test_a_child_over_the_stanza_limit_ends_the_stream_with_policy_violation(alice):
    """RFC 6120 §13.12 per child, as on TCP: the core holds each child the body parser read against the
    listener's max_stanza_size (64 KiB), though the body itself may be larger."""
    sid, _ = alice.create(rid=60)
    alice.post(AUTH, rid=61, sid=sid)
    alice.post(rid=62, sid=sid, to="localhost", xmpp_restart="true")
    bind = "<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"
    _, _, body = alice.post(bind, rid=63, sid=sid)
    assert body.find(f"{ns.IQ}/{ns.qname(ns.BIND, 'bind')}") is not None
    ping = "<iq xmlns='jabber:client' type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>"
    big = f"<message xmlns='jabber:client' to='bob@localhost'><body>{'x' * 70_000}</body></message>"
    status, _, body = alice.post(ping + big, rid=64, sid=sid)
    assert (
        status == 200 and body.get("type") == "terminate" and body.get("condition") == "remote-stream-error"
    )
    (pong, error) = body
    assert pong.tag == ns.IQ and pong.get("id") == "p" and pong.get("type") == "result"  # the child before it
    assert error.find(f"{{{ns.STREAM_ERRORS}}}policy-violation") is not None


def test_a_repeated_rid_gets_the_same_response_again(alice):
    sid, _ = alice.create(rid=20)
    status, first, _ = alice.post(AUTH, rid=21, sid=sid)
    again_status, again, _ = alice.post(AUTH, rid=21, sid=sid)
    assert (status, again_status) == (200, 200)
    assert again == first and b"success" in first


def test_an_unknown_sid_is_item_not_found(alice):
    status, _, body = alice.post(rid=5, sid="no-such-session")
    assert status == 200
    assert body.get("type") == "terminate" and body.get("condition") == "item-not-found"


def test_a_rid_beyond_the_window_ends_the_session_with_item_not_found(alice):
    sid, _ = alice.create(rid=30)
    _, _, body = alice.post(rid=33, sid=sid)  # window: rid 31 and 32 ('requests' = 2)
    assert body.get("type") == "terminate" and body.get("condition") == "item-not-found"
    _, _, body = alice.post(rid=31, sid=sid)
    assert body.get("condition") == "item-not-found"  # the session is gone


def test_terminate_ends_the_session(alice):
    sid, _ = alice.create(rid=40)
    status, _, body = alice.post(rid=41, sid=sid, type="terminate")
    assert status == 200 and body.get("type") == "terminate" and body.get("condition") is None
    _, _, body = alice.post(rid=42, sid=sid)
    assert body.get("condition") == "item-not-found"


def test_a_held_request_is_answered_when_the_next_one_comes(server, alice, tmp_path):
    sid, _ = alice.create(rid=50)
    held: list = []
    other = Client(server, tmp_path, server.pki.valid)  # same certificate, second connection
    thread = threading.Thread(target=lambda: held.append(other.post(rid=51, sid=sid)))
    thread.start()
    thread.join(0.5)
    assert thread.is_alive()  # nothing to say: the server holds it (wait=30)
    status, _, body = alice.post(AUTH, rid=52, sid=sid)
    thread.join(20)
    assert not thread.is_alive() and held[0][0] == 200 and held[0][2].get("type") is None
    assert len(held[0][2]) == 0  # answered empty: the <success/> belongs to the request that caused it
    assert status == 200 and [child.tag for child in body] == [ns.qname(ns.SASL, "success")]
    alice.post(rid=53, sid=sid, type="terminate")


def test_another_certificate_is_refused_and_the_session_stays(server, alice, tmp_path):
    sid, _ = alice.create(rid=60)
    bob = Client(server, tmp_path, make_client(server.pki.ca, jids=["bob@localhost"]))
    status, _, body = bob.post(AUTH, rid=61, sid=sid)
    assert status == 403
    assert body.get("type") == "terminate" and body.get("condition") == "policy-violation"
    _, _, body = alice.post(AUTH, rid=61, sid=sid)  # rid 61 was not used up by the refused request
    assert [child.tag for child in body] == [ns.qname(ns.SASL, "success")]


def test_no_certificate_is_refused_on_a_session_created_with_one(server, alice, tmp_path):
    sid, _ = alice.create(rid=70)
    anonymous = Client(server, tmp_path, None)
    status, _, body = anonymous.post(rid=71, sid=sid, type="terminate")
    assert status == 403 and body.get("condition") == "policy-violation"
    _, _, body = alice.post(AUTH, rid=71, sid=sid)
    assert [child.tag for child in body] == [ns.qname(ns.SASL, "success")]  # alive for its own certificate


def test_a_certificate_is_refused_on_a_session_created_without_one(server, alice, tmp_path):
    anonymous = Client(server, tmp_path, None)
    sid, _ = anonymous.create(rid=80)
    status, _, body = alice.post(rid=81, sid=sid)
    assert status == 403 and body.get("condition") == "policy-violation"


def test_a_body_that_is_not_xml_is_a_bad_request(alice):
    alice.connection.request("POST", "/http-bind", b"<body xmlns='http://jabber.org/protocol/httpbind'")
    response = alice.connection.getresponse()
    assert response.status == 400
    assert fromstring(response.read()).get("condition") == "bad-request"


def test_a_body_with_a_dtd_is_a_bad_request(alice):
    data = b"<!DOCTYPE body [<!ENTITY a 'x'>]><body xmlns='http://jabber.org/protocol/httpbind' rid='1'/>"
    alice.connection.request("POST", "/http-bind", data)
    response = alice.connection.getresponse()
    assert response.status == 400


def test_get_is_not_allowed(alice):
    alice.connection.request("GET", "/http-bind")
    response = alice.connection.getresponse()
    response.read()
    assert response.status == 405


def test_disconnect_on_failure_drops_a_certificate_of_an_unknown_ca(server, tmp_path):
    mallory = Client(server, tmp_path, server.pki.untrusted, "strict")
    with pytest.raises((ssl.SSLError, OSError, http.client.HTTPException)):  # ended in the TLS handshake
        mallory.post(rid=1, to="localhost", wait=30, hold=1, ver="1.6", xmpp_version="1.0")


def test_disconnect_on_failure_creates_a_session_for_a_trusted_certificate(server, tmp_path):
    alice = Client(server, tmp_path, server.pki.valid, "strict")
    sid, body = alice.create(rid=1)
    assert sid and [m.text for m in body.iter(ns.qname(ns.SASL, "mechanism"))] == ["EXTERNAL"]


def test_a_domain_not_served_here_is_host_unknown(alice):
    status, _, body = alice.post(rid=1, to="elsewhere.example", wait=30, hold=1, xmpp_version="1.0")
    assert status == 200 and body.get("type") == "terminate" and body.get("condition") == "host-unknown"
