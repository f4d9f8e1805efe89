"""End to end over TCP: slixmpp logs in with SASL EXTERNAL against the real core, authenticator and DB.

The listener runs on the test session's reactor thread with the real ``transport.stream`` core and
``certauth.authenticator``; the client certificates come from a CA imported into the test database.
"""

from __future__ import annotations

import socket
import ssl

import pytest

from certauth import services
from tests.certs import make_client
from tests.transport.tlsclient import Pki, client_context, make_pki
from tests.transport.xmppclient import slixmpp_login
from transport import tcp
from xmppauth.config import AuthConfig, C2SListener, Config

pytestmark = pytest.mark.django_db(transaction=True)

STREAM_HEADER = (
    b"<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def trusted_ca(pki):
    from certauth import trust

    services.import_ca(pki.ca.pem, name="test client CA")
    trust.invalidate()
    yield
    trust.invalidate()


@pytest.fixture
def c2s(on_reactor, pki, trusted_ca):
    """Start a real c2s listener on 127.0.0.1:0; returns its port."""
    from twisted.internet import reactor

    ports = []

    def start(mode: str = "starttls", *, clock=None, ping_interval: float = 0, **tls_overrides) -> int:
        options = pki.options(mode=mode, **tls_overrides)
        listener = C2SListener(port=0, ip_address="127.0.0.1", tls=options)
        config = Config(hosts=("localhost",), listen_c2s=(listener,), auth=AuthConfig())
        port = on_reactor(
            tcp.listen_c2s,
            listener,
            options,
            [pki.ca.cert],
            reactor,
            core_factory=tcp._default_core_factory(config),
            authenticator_factory=tcp._default_authenticator_factory(config),
            clock=clock,
            ping_interval=ping_interval,
        )
        ports.append(port)
        return port.getHost().port

    yield start
    for port in ports:
        on_reactor(port.stopListening)


MODES = [("starttls", False), ("tls", True)]
MODE_IDS = ["starttls", "direct_tls"]


@pytest.mark.parametrize(("mode", "direct"), MODES, ids=MODE_IDS)
def test_one_xmppaddr_without_authzid_binds_that_jid(c2s, tmp_path, pki, mode, direct):
    port = c2s(mode)
    outcome = slixmpp_login(port, tmp_path, pki.valid, direct_tls=direct)
    assert outcome.bound_jid is not None, outcome
    assert outcome.bound_jid.split("/")[0] == "alice@localhost"


@pytest.mark.parametrize(("mode", "direct"), MODES, ids=MODE_IDS)
def test_one_xmppaddr_with_equal_authzid_binds_that_jid(c2s, tmp_path, pki, mode, direct):
    port = c2s(mode)
    outcome = slixmpp_login(port, tmp_path, pki.valid, authzid="alice@localhost", direct_tls=direct)
    assert outcome.bound_jid is not None, outcome
    assert outcome.bound_jid.split("/")[0] == "alice@localhost"


def test_registry_knows_the_bound_session_by_bare_jid_and_certificate(c2s, tmp_path, pki, on_reactor):
    port = c2s("starttls")
    session = raw_session(port, client_context(tmp_path, pki.valid))
    try:
        by_jid = on_reactor(tcp.registry.by_jid, "alice@localhost")
        assert len(by_jid) == 1
        assert by_jid[0].jid.startswith("alice@localhost/")
        assert on_reactor(tcp.registry.by_fingerprint, pki.valid.facts.fingerprint_sha256) == by_jid
    finally:
        session.close()


def test_authzid_not_in_the_certificate_is_invalid_authzid(c2s, tmp_path, pki):
    port = c2s("starttls")
    outcome = slixmpp_login(port, tmp_path, pki.valid, jid="bob@localhost", authzid="bob@localhost")
    assert outcome.bound_jid is None
    assert "invalid-authzid" in outcome.sasl_failures, outcome


BAD = ["none", "expired", "untrusted", "self_signed", "revoked"]


@pytest.fixture
def revoked(pki):
    cert = make_client(pki.ca, jids=["alice@localhost"])
    services.revoke(services.import_certificate(cert.pem))
    return cert


def _bad(pki, revoked, kind):
    if kind == "none":
        return None
    return revoked if kind == "revoked" else getattr(pki, kind)


@pytest.mark.parametrize("kind", BAD)
@pytest.mark.parametrize(("mode", "direct"), MODES, ids=MODE_IDS)
@pytest.mark.parametrize("disconnect", [True, False], ids=["disconnect", "keep"])
@pytest.mark.parametrize("verify_mode", ["peer", "selfsigned_peer"])
def test_bad_certificates_never_log_in(
    c2s, tmp_path, pki, revoked, kind, mode, direct, disconnect, verify_mode
):
    if verify_mode == "selfsigned_peer" and kind == "self_signed":
        pytest.skip("selfsigned_peer accepts it: test_self_signed_certificate_logs_in_with_selfsigned_peer")
    port = c2s(mode, disconnect_on_failure=disconnect, verify_mode=verify_mode)
    outcome = slixmpp_login(port, tmp_path, _bad(pki, revoked, kind), direct_tls=direct)
    assert outcome.bound_jid is None
    assert outcome.disconnected or outcome.no_usable_mechanism, outcome
    if not disconnect:
        assert outcome.no_usable_mechanism, "the connection stays; the certificate counts as none"


def test_self_signed_certificate_logs_in_with_selfsigned_peer(c2s, tmp_path, pki):
    port = c2s("starttls", verify_mode="selfsigned_peer")
    outcome = slixmpp_login(port, tmp_path, pki.self_signed, jid="carol@localhost")
    assert outcome.bound_jid is not None, outcome
    assert outcome.bound_jid.split("/")[0] == "carol@localhost"


@pytest.mark.parametrize("kind", ["untrusted", "self_signed", "expired"])
def test_verify_mode_none_lets_any_certificate_in_as_mongooseim_does(c2s, tmp_path, pki, kind):
    port = c2s("starttls", verify_mode="none")
    client = getattr(pki, kind)
    jid = client.facts.xmpp_addrs[0]
    outcome = slixmpp_login(port, tmp_path, client, jid=jid)
    assert outcome.bound_jid is not None, outcome
    assert outcome.bound_jid.split("/")[0] == jid


def test_verify_mode_none_still_refuses_a_revoked_certificate(c2s, tmp_path, revoked):
    port = c2s("starttls", verify_mode="none", disconnect_on_failure=False)
    outcome = slixmpp_login(port, tmp_path, revoked)
    assert outcome.bound_jid is None
    assert outcome.no_usable_mechanism, outcome


def read_until(sock, *markers: bytes) -> bytes:
    data = b""
    while not any(marker in data for marker in markers):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


FEATURES_END = (b"</stream:features>", b"<stream:features/>")


def features_after_starttls(port: int, context: ssl.SSLContext) -> bytes:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.sendall(STREAM_HEADER)
    assert b"<starttls" in read_until(raw, *FEATURES_END)
    raw.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    assert b"<proceed" in read_until(raw, b"/>")
    with context.wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall(STREAM_HEADER)
        return read_until(sock, *FEATURES_END)


def test_no_certificate_means_external_is_not_advertised(c2s, tmp_path, pki):
    port = c2s("starttls", disconnect_on_failure=False)
    assert b"EXTERNAL" not in features_after_starttls(port, client_context(tmp_path, None))


def test_valid_certificate_means_external_is_advertised(c2s, tmp_path, pki):
    port = c2s("starttls", disconnect_on_failure=False)
    assert b"<mechanism>EXTERNAL</mechanism>" in features_after_starttls(
        port, client_context(tmp_path, pki.valid)
    )


def raw_session(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    """A hand-driven login: STARTTLS, SASL EXTERNAL with '=', resource binding (RFC 6120 §5, §6, §7)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.sendall(STREAM_HEADER)
    read_until(raw, *FEATURES_END)
    raw.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    read_until(raw, b"/>")
    sock = context.wrap_socket(raw, server_hostname="localhost")
    sock.sendall(STREAM_HEADER)
    assert b"EXTERNAL" in read_until(sock, *FEATURES_END)
    sock.sendall(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>")
    assert b"<success" in read_until(sock, b"/>", b"</success>", b"</failure>")
    sock.sendall(STREAM_HEADER)
    read_until(sock, *FEATURES_END)
    sock.sendall(b"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    assert b"alice@localhost/" in read_until(sock, b"</iq>")
    return sock


def ping(sock: ssl.SSLSocket, stanza_id: str) -> bytes:
    """XEP-0199 ping to the server; the reply stanza."""
    ping_iq = f"<iq type='get' id='{stanza_id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
    sock.sendall(ping_iq.encode())
    data = read_until(sock, stanza_id.encode())
    while not data.rstrip().endswith(b">"):  # the rest of the reply's start tag, should it come split
        data += sock.recv(4096)
    return data


HOSTILE = [
    b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaaaaaa'>]><stream:stream>",  # DTD: RFC 6120 §11.1
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # TLS on the STARTTLS port
    b"<stream:stream " + b"a" * 200_000,  # an endless start tag
    b"\xff\xfe\x00garbage\x00\x00",
]


@pytest.mark.parametrize("payload", HOSTILE, ids=["dtd", "tls_hello", "huge_tag", "binary"])
def test_hostile_input_ends_only_that_connection(c2s, tmp_path, pki, payload):
    port = c2s("starttls")
    session = raw_session(port, client_context(tmp_path, pki.valid))
    assert b"result" in ping(session, "before")
    hostile = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        hostile.sendall(payload)
        try:
            while hostile.recv(4096):
                pass
        except OSError:
            pass
    finally:
        hostile.close()
    assert b"result" in ping(session, "after")  # the session that was up keeps working
    session.close()
    outcome = slixmpp_login(port, tmp_path, pki.valid)  # and new clients still get in
    assert outcome.bound_jid is not None, outcome


def test_idle_session_gets_a_server_ping_it_can_answer(c2s, tmp_path, pki, on_reactor):
    import re

    from twisted.internet.task import Clock

    clock = Clock()
    port = c2s("starttls", clock=clock, ping_interval=60)
    session = raw_session(port, client_context(tmp_path, pki.valid))
    try:
        on_reactor(clock.advance, 60)
        ping_stanza = read_until(session, b"</iq>", b"/></iq>")
        assert b"urn:xmpp:ping" in ping_stanza and b"alice@localhost/" in ping_stanza
        stanza_id = re.search(rb"id=[\"']([^\"']+)", ping_stanza).group(1)
        session.sendall(b"<iq type='result' id='" + stanza_id + b"' to='localhost'/>")  # XEP-0199 §4.2 pong
        assert b"result" in ping(session, "client-ping")  # the pong is swallowed; the session goes on
    finally:
        session.close()
