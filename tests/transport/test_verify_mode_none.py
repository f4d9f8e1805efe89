"""``tls.verify_mode = "none"`` requests no client certificate, so SASL EXTERNAL is never offered there.

Issue 12 point 2, DESIGN §0, as MongooseIM (whose ``none`` never asks for a certificate). Before, ``none``
counted any certificate as verified: a self-made certificate naming alice@localhost logged in as alice. Now,
over TCP (STARTTLS and direct TLS), wss (RFC 7395) and BOSH (XEP-0206): the handshake carries no
CertificateRequest, the features carry an empty ``<mechanisms/>``, and an EXTERNAL sent anyway gets
``not-authorized`` with the generic text. The pass case: the same client on a ``peer`` listener is offered
EXTERNAL and logs in. Real clients throughout: pyOpenSSL (the handshake), Python ``ssl`` sockets, slixmpp,
Strophe.js under Node, ``websockets`` and ``http.client``.
"""

from __future__ import annotations

import logging
from xml.etree.ElementTree import fromstring

import pytest
from websockets.sync.client import connect

from tests.certs import make_self_signed
from tests.transport.rawxmpp import (
    NO_MECHANISMS,
    SUCCESS,
    auth_external,
    direct_tls,
    sasl,
    sasl_failure_condition,
    starttls,
)
from tests.transport.streamkit import condition_of
from tests.transport.test_bosh_protocol import AUTH as BOSH_AUTH
from tests.transport.test_bosh_protocol import Client as BoshClient
from tests.transport.tlsclient import client_context, openssl_handshake, websockets_context
from tests.transport.xmppclient import slixmpp_login
from tests.transport.xmpphttp import start_server, strophe_login
from transport.xmpp import namespaces as ns
from transport.xmpp.errors import SASL_FAILURE_TEXT

pytestmark = pytest.mark.django_db(transaction=True)

MODES = [("starttls", False), ("tls", True)]
MODE_IDS = ["starttls", "direct_tls"]
WHY = "this listener requests no client certificate (tls.verify_mode none)"
GENERIC = f'<text xml:lang="en">{SASL_FAILURE_TEXT["not-authorized"]}</text>'.encode()


@pytest.fixture(scope="module")
def self_made_alice():
    """A certificate anyone can make: self-signed, naming alice@localhost (the attack of issue 12)."""
    return make_self_signed(common_name="alice", jids=["alice@localhost"])


@pytest.fixture
def client_of(pki, self_made_alice):
    def get(kind: str):
        return {"valid": pki.valid, "self_made_alice": self_made_alice, "untrusted": pki.untrusted}[kind]

    return get


KINDS = ["valid", "self_made_alice", "untrusted"]


def open_stream(port: int, tmp_path, client, direct: bool):
    context = client_context(tmp_path, client)
    return direct_tls(port, context) if direct else starttls(port, context)


# --- TCP ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_tcp_handshake_carries_no_certificate_request(c2s, client_of, kind):
    port = c2s("tls", verify_mode="none")
    view = openssl_handshake(port, client_of(kind))
    assert not view.certificate_requested and view.ca_names == ()


def test_tcp_peer_listener_does_request_a_certificate(c2s, pki):
    view = openssl_handshake(c2s("tls", verify_mode="peer"), pki.valid)
    assert view.certificate_requested and view.ca_names == ("xmppauth test client CA",)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("mode", "direct"), MODES, ids=MODE_IDS)
def test_tcp_offers_no_external_and_refuses_a_forced_one(
    c2s, tmp_path, client_of, kind, mode, direct, caplog
):
    port = c2s(mode, verify_mode="none")  # disconnect_on_failure = true: nothing to fail, nothing is cut
    caplog.set_level(logging.INFO, logger="transport.xmpp.connection")
    sock, features = open_stream(port, tmp_path, client_of(kind), direct)
    with sock:
        assert NO_MECHANISMS in features and b"EXTERNAL" not in features, features
        answer = sasl(sock, auth_external("="))
    assert sasl_failure_condition(answer) == "not-authorized", answer  # DESIGN §4
    assert GENERIC in answer and b"verify_mode" not in answer
    assert f"no SASL mechanism offered: {WHY}" in caplog.text
    assert f"SASL failure not-authorized (1/3): SASL EXTERNAL needs a verified client certificate: {WHY}" in (
        caplog.text
    )


@pytest.mark.parametrize(("mode", "direct"), MODES, ids=MODE_IDS)
def test_tcp_slixmpp_with_a_self_made_alice_certificate_finds_no_mechanism(
    c2s, tmp_path, self_made_alice, mode, direct
):
    port = c2s(mode, verify_mode="none")
    outcome = slixmpp_login(port, tmp_path, self_made_alice, direct_tls=direct)
    assert outcome.bound_jid is None, outcome
    assert outcome.sasl_failures == [], outcome  # it never got as far as trying EXTERNAL
    assert outcome.no_usable_mechanism, outcome


@pytest.mark.parametrize(("mode", "direct"), MODES, ids=MODE_IDS)
def test_tcp_same_client_on_a_peer_listener_is_offered_external_and_logs_in(c2s, tmp_path, pki, mode, direct):
    port = c2s(mode, verify_mode="peer")
    sock, features = open_stream(port, tmp_path, pki.valid, direct)
    with sock:
        assert b"<mechanism>EXTERNAL</mechanism>" in features, features
        assert SUCCESS in sasl(sock, auth_external("="))


# --- wss and BOSH (our daphne server, listener "none" of tests/transport/xmpphttp.py) -------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from start_server(tmp_path_factory.mktemp("verify-none"))


@pytest.fixture
def http_client_of(server, self_made_alice):
    def get(kind: str):
        pki = server.pki
        return {"valid": pki.valid, "self_made_alice": self_made_alice, "untrusted": pki.untrusted}[kind]

    return get


@pytest.mark.parametrize("kind", KINDS)
def test_https_handshake_carries_no_certificate_request(server, http_client_of, kind):
    view = openssl_handshake(server.ports["none"], http_client_of(kind))
    assert not view.certificate_requested and view.ca_names == ()
    assert openssl_handshake(server.ports["peer"], server.pki.valid).certificate_requested  # the pass case


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scheme", ["wss", "https"], ids=["wss", "bosh"])
def test_strophe_is_offered_no_mechanism(server, http_client_of, scheme, kind):
    verdict = strophe_login(server, server.url("none", scheme), http_client_of(kind))
    assert verdict["status"] == "no-external", verdict
    assert verdict["mechanisms"] == [], verdict


@pytest.mark.parametrize("scheme", ["wss", "https"], ids=["wss", "bosh"])
def test_strophe_with_the_same_certificate_logs_in_on_the_peer_listener(server, scheme):
    verdict = strophe_login(server, server.url("peer", scheme), server.pki.valid)
    assert verdict["status"] == "connected", verdict
    assert verdict["jid"].split("/")[0] == "alice@localhost"


OPEN = "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>"
WS_AUTH = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>"


def mechanisms(features) -> list[str]:
    listing = features.find(ns.qname(ns.SASL, "mechanisms"))
    assert listing is not None, "an empty <mechanisms/> tells the client to give up (RFC 6120 §6.4.1)"
    return [mechanism.text for mechanism in listing]


def assert_generic_not_authorized(failure) -> None:
    assert failure.tag == ns.qname(ns.SASL, "failure")
    assert condition_of(failure, ns.SASL) == "not-authorized"
    assert failure.findtext(ns.qname(ns.SASL, "text")) == SASL_FAILURE_TEXT["not-authorized"]


@pytest.mark.parametrize("kind", KINDS)
def test_wss_forced_external_is_not_authorized(server, tmp_path, http_client_of, kind):
    context = websockets_context(tmp_path, http_client_of(kind))
    with connect(server.url("none", "wss"), ssl=context, subprotocols=["xmpp"], open_timeout=10) as conn:
        conn.send(OPEN)
        assert fromstring(conn.recv(timeout=10)).tag == ns.WS_OPEN
        assert mechanisms(fromstring(conn.recv(timeout=10))) == []
        conn.send(WS_AUTH)
        assert_generic_not_authorized(fromstring(conn.recv(timeout=10)))


@pytest.mark.parametrize("kind", KINDS)
def test_bosh_forced_external_is_not_authorized(server, tmp_path, http_client_of, kind):
    client = BoshClient(server, tmp_path, http_client_of(kind), listener="none")
    sid, body = client.create(rid=100)
    (features,) = body
    assert mechanisms(features) == []
    status, _, body = client.post(BOSH_AUTH, rid=101, sid=sid)
    assert status == 200
    (failure,) = body
    assert_generic_not_authorized(failure)


def test_the_server_warns_at_start_up_that_nobody_can_log_in_on_that_listener(server):
    log = (server.directory / "server.log").read_text()
    lines = [line for line in log.splitlines() if "nobody can log in on this listener" in line]
    (line,) = lines  # one line, for the one listener that requests no certificate
    assert f'listen.http[3] (127.0.0.1:{server.ports["none"]}): tls.verify_mode = "none"' in line, log
