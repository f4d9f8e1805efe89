"""End to end over TCP: slixmpp logs in with SASL EXTERNAL against the real core, authenticator and DB.

The listener runs on the test session's reactor thread with the real ``transport.stream`` core and
``certauth.authenticator``; the client certificates come from a CA imported into the test database.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl

import pytest

from certauth import services
from tests.certs import SERVER_AUTH, make_client
from tests.transport.rawxmpp import (
    STREAM_HEADER,
    auth_external,
    ping,
    raw_session,
    read_to_eof,
    read_until,
    sasl,
    sasl_failure_condition,
    starttls,
)
from tests.transport.tlsclient import client_context
from tests.transport.xmppclient import slixmpp_login
from transport import tcp
from xmppauth.config import AuthConfig

pytestmark = pytest.mark.django_db(transaction=True)

MODES = [("starttls", False), ("tls", True)]
MODE_IDS = ["starttls", "direct_tls"]


# RFC 6120 §7.6.2.1: without a requested resource the server generates one (ours: "xmppauth-" + 16 hex).
GENERATED_RESOURCE = re.compile(r"xmppauth-[0-9a-f]{16}")


def assert_bound(outcome, bare: str, resource: str | None = None) -> None:
    """The bound JID is exactly ``bare`` plus the requested resource, or a server-generated one."""
    assert outcome.bound_jid is not None, outcome
    bound_bare, slash, bound_resource = outcome.bound_jid.partition("/")
    assert slash and bound_bare == bare, outcome
    if resource is None:
        assert GENERATED_RESOURCE.fullmatch(bound_resource), outcome
    else:
        assert bound_resource == resource, outcome


def assert_refused(outcome, condition: str) -> None:
    """SASL failed with exactly ``condition`` (RFC 6120 §6.5) and nothing was bound."""
    assert outcome.bound_jid is None, outcome
    assert outcome.sasl_failures == [condition], outcome


@pytest.mark.parametrize(("mode", "direct"), MODES, ids=MODE_IDS)
def test_one_xmppaddr_without_authzid_binds_that_jid(c2s, tmp_path, pki, mode, direct):
    port = c2s(mode)
    outcome = slixmpp_login(port, tmp_path, pki.valid, direct_tls=direct)
    assert_bound(outcome, "alice@localhost")


@pytest.mark.parametrize(("mode", "direct"), MODES, ids=MODE_IDS)
def test_one_xmppaddr_with_equal_authzid_binds_that_jid(c2s, tmp_path, pki, mode, direct):
    port = c2s(mode)
    outcome = slixmpp_login(port, tmp_path, pki.valid, authzid="alice@localhost", direct_tls=direct)
    assert_bound(outcome, "alice@localhost")


@pytest.mark.parametrize(("mode", "direct"), MODES, ids=MODE_IDS)
def test_requested_resource_is_the_bound_resource(c2s, tmp_path, pki, mode, direct):
    port = c2s(mode)
    outcome = slixmpp_login(port, tmp_path, pki.valid, jid="alice@localhost/laptop", direct_tls=direct)
    assert_bound(outcome, "alice@localhost", "laptop")  # RFC 6120 §7.7.2.1


@pytest.fixture(scope="module")
def two_addrs(pki):
    return make_client(pki.ca, jids=["alice@localhost", "work@localhost"])


@pytest.mark.parametrize(("mode", "direct"), MODES, ids=MODE_IDS)
def test_two_xmppaddrs_without_authzid_is_invalid_authzid(c2s, tmp_path, two_addrs, mode, direct):
    port = c2s(mode)
    outcome = slixmpp_login(port, tmp_path, two_addrs, direct_tls=direct)
    assert_refused(outcome, "invalid-authzid")  # XEP-0178 §3 step 6: the server cannot choose


@pytest.mark.parametrize(("mode", "direct"), MODES, ids=MODE_IDS)
def test_two_xmppaddrs_with_authzid_naming_the_second_binds_it(c2s, tmp_path, two_addrs, mode, direct):
    port = c2s(mode)
    outcome = slixmpp_login(
        port, tmp_path, two_addrs, jid="work@localhost", authzid="work@localhost", direct_tls=direct
    )
    assert_bound(outcome, "work@localhost")


@pytest.mark.parametrize(("mode", "direct"), MODES, ids=MODE_IDS)
def test_two_xmppaddrs_with_authzid_naming_neither_is_invalid_authzid(c2s, tmp_path, two_addrs, mode, direct):
    port = c2s(mode)
    outcome = slixmpp_login(
        port, tmp_path, two_addrs, jid="bob@localhost", authzid="bob@localhost", direct_tls=direct
    )
    assert_refused(outcome, "invalid-authzid")


COMMON_NAME_AUTH = AuthConfig(
    sasl_external=("standard", "common_name"), common_name_prefix="cn-", common_name_suffix=".staff"
)


@pytest.fixture(scope="module")
def cn_only(pki):
    cert = make_client(pki.ca, jids=(), common_name="bob")
    assert cert.facts.xmpp_addrs == () and cert.facts.common_name == "bob"
    return cert


@pytest.mark.parametrize(("mode", "direct"), MODES, ids=MODE_IDS)
def test_cn_only_certificate_binds_prefix_cn_suffix_when_common_name_is_configured(
    c2s, tmp_path, cn_only, mode, direct
):
    port = c2s(mode, auth=COMMON_NAME_AUTH)
    outcome = slixmpp_login(port, tmp_path, cn_only, jid="cn-bob.staff@localhost", direct_tls=direct)
    assert_bound(outcome, "cn-bob.staff@localhost")


def test_cn_only_certificate_with_authzid_equal_to_the_cn_jid_binds_it(c2s, tmp_path, cn_only):
    port = c2s("starttls", auth=COMMON_NAME_AUTH)
    outcome = slixmpp_login(
        port, tmp_path, cn_only, jid="cn-bob.staff@localhost/desk", authzid="cn-bob.staff@localhost"
    )
    assert_bound(outcome, "cn-bob.staff@localhost", "desk")


def test_cn_only_certificate_with_another_authzid_is_invalid_authzid(c2s, tmp_path, cn_only):
    port = c2s("starttls", auth=COMMON_NAME_AUTH)
    outcome = slixmpp_login(port, tmp_path, cn_only, jid="bob@localhost", authzid="bob@localhost")
    assert_refused(outcome, "invalid-authzid")  # DESIGN §4: common_name, authzid differs


@pytest.mark.parametrize(("mode", "direct"), MODES, ids=MODE_IDS)
def test_cn_only_certificate_is_not_authorized_with_only_standard(c2s, tmp_path, cn_only, mode, direct):
    port = c2s(mode, auth=AuthConfig(sasl_external=("standard",)))
    outcome = slixmpp_login(port, tmp_path, cn_only, jid="bob@localhost", direct_tls=direct)
    assert_refused(outcome, "not-authorized")  # DESIGN §4: standard, no xmppAddr at all


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
    assert_refused(outcome, "invalid-authzid")


BAD = ["none", "expired", "untrusted", "self_signed", "revoked", "held", "wrong_eku"]


@pytest.fixture
def revoked(pki):
    cert = make_client(pki.ca, jids=["alice@localhost"])
    services.revoke(services.import_certificate(cert.pem))
    return cert


@pytest.fixture
def held(pki):
    cert = make_client(pki.ca, jids=["alice@localhost"])
    services.hold(services.import_certificate(cert.pem))  # RFC 5280 §5.3.1 certificateHold
    return cert


@pytest.fixture(scope="module")
def wrong_eku(pki):
    return make_client(pki.ca, jids=["alice@localhost"], ekus=[SERVER_AUTH])  # serverAuth only


@pytest.fixture
def bad(request, pki):
    """The client certificate of a BAD kind (None: no certificate at all)."""

    def get(kind: str):
        if kind == "none":
            return None
        if kind in ("revoked", "held", "wrong_eku"):
            return request.getfixturevalue(kind)
        return getattr(pki, kind)

    return get


@pytest.mark.parametrize("kind", BAD)
@pytest.mark.parametrize(("mode", "direct"), MODES, ids=MODE_IDS)
@pytest.mark.parametrize("disconnect", [True, False], ids=["disconnect", "keep"])
@pytest.mark.parametrize("verify_mode", ["peer", "selfsigned_peer"])
def test_bad_certificates_never_log_in(c2s, tmp_path, bad, kind, mode, direct, disconnect, verify_mode):
    if verify_mode == "selfsigned_peer" and kind == "self_signed":
        pytest.skip("selfsigned_peer accepts it: test_self_signed_certificate_logs_in_with_selfsigned_peer")
    port = c2s(mode, disconnect_on_failure=disconnect, verify_mode=verify_mode)
    outcome = slixmpp_login(port, tmp_path, bad(kind), direct_tls=direct)
    assert outcome.bound_jid is None
    assert outcome.disconnected or outcome.no_usable_mechanism, outcome
    if not disconnect:
        assert outcome.no_usable_mechanism, "the connection stays; the certificate counts as none"


@pytest.mark.parametrize("kind", BAD)
def test_bad_certificate_counted_as_none_gets_not_authorized_for_external_sent_anyway(
    c2s, tmp_path, bad, kind
):
    port = c2s("starttls", disconnect_on_failure=False)
    sock, features = starttls(port, client_context(tmp_path, bad(kind)))
    with sock:
        assert b"EXTERNAL" not in features
        assert sasl_failure_condition(sasl(sock, auth_external("="))) == "not-authorized"  # DESIGN §4


# What OpenSSL itself refuses during the handshake when disconnect_on_failure is true (its default purpose
# check on a server is "SSL client", so a serverAuth-only EKU fails there), and the TLS alert it sends.
HANDSHAKE_ALERTS = {
    "expired": "CERTIFICATE_EXPIRED",
    "untrusted": "UNKNOWN_CA",
    "self_signed": "UNKNOWN_CA",
    "wrong_eku": "UNSUPPORTED_CERTIFICATE",
}


def _direct_tls_read(tmp_path, port: int, client) -> bytes:
    """What the server sends after a direct-TLS handshake and a stream header, until it closes.

    A handshake alert raises. A server that cuts the connection right after the handshake (our
    disconnect_on_failure) may be seen as EOF or a reset during the handshake (TLS 1.2), on our first
    write (the cut raced ahead of our stream header), or on the read: each of these means no byte.
    """
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock = client_context(tmp_path, client).wrap_socket(raw, server_hostname="localhost")
    except (ConnectionError, ssl.SSLEOFError):
        raw.close()
        return b""
    with sock:
        try:
            sock.sendall(STREAM_HEADER)  # TLS 1.3: the server's verdict comes after the client's Finished
        except (ConnectionError, ssl.SSLEOFError):
            return b""
        return read_to_eof(sock)


@pytest.mark.parametrize("kind", sorted(HANDSHAKE_ALERTS))
@pytest.mark.parametrize("verify_mode", ["peer", "selfsigned_peer"])
def test_certificate_openssl_rejects_fails_the_handshake_with_its_alert(
    c2s, tmp_path, bad, kind, verify_mode
):
    if verify_mode == "selfsigned_peer" and kind == "self_signed":
        pytest.skip("selfsigned_peer accepts it: test_self_signed_certificate_logs_in_with_selfsigned_peer")
    port = c2s("tls", disconnect_on_failure=True, verify_mode=verify_mode)
    with pytest.raises(ssl.SSLError, match=HANDSHAKE_ALERTS[kind]):
        _direct_tls_read(tmp_path, port, bad(kind))


@pytest.mark.parametrize("kind", ["revoked", "held"])
@pytest.mark.parametrize("verify_mode", ["peer", "selfsigned_peer"])
def test_revoked_or_held_certificate_passes_openssl_and_is_cut_by_our_check(
    c2s, tmp_path, bad, kind, verify_mode, caplog
):
    port = c2s("tls", disconnect_on_failure=True, verify_mode=verify_mode)
    with caplog.at_level(logging.WARNING, logger="transport.tcp"):
        assert _direct_tls_read(tmp_path, port, bad(kind)) == b""  # not one byte of XMPP
    # The handshake passed OpenSSL and our certificate check, not a failed handshake, cut it.
    assert "certificate refused, disconnecting" in caplog.text


def test_self_signed_certificate_logs_in_with_selfsigned_peer(c2s, tmp_path, pki):
    port = c2s("starttls", verify_mode="selfsigned_peer")
    outcome = slixmpp_login(port, tmp_path, pki.self_signed, jid="carol@localhost")
    assert outcome.bound_jid is not None, outcome
    assert outcome.bound_jid.split("/")[0] == "carol@localhost"


@pytest.mark.parametrize("kind", ["untrusted", "self_signed"])
def test_verify_mode_none_lets_any_certificate_in_as_mongooseim_does(c2s, tmp_path, pki, kind):
    port = c2s("starttls", verify_mode="none")
    client = getattr(pki, kind)
    jid = client.facts.xmpp_addrs[0]
    outcome = slixmpp_login(port, tmp_path, client, jid=jid)
    assert outcome.bound_jid is not None, outcome
    assert outcome.bound_jid.split("/")[0] == jid


def test_verify_mode_none_never_binds_an_expired_certificate(c2s, tmp_path, pki):
    """An expired certificate holds no session in any mode (the registry ends it at notAfter); since the
    bind waits for the re-check (issue 11 point 6), it is not even bound for an instant."""
    port = c2s("starttls", verify_mode="none")
    outcome = slixmpp_login(port, tmp_path, pki.expired, jid=pki.expired.facts.xmpp_addrs[0])
    assert outcome.bound_jid is None and outcome.disconnected, outcome


def test_verify_mode_none_still_refuses_a_revoked_certificate(c2s, tmp_path, revoked):
    port = c2s("starttls", verify_mode="none", disconnect_on_failure=False)
    outcome = slixmpp_login(port, tmp_path, revoked)
    assert outcome.bound_jid is None
    assert outcome.no_usable_mechanism, outcome


def features_after_starttls(port: int, context: ssl.SSLContext) -> bytes:
    sock, features = starttls(port, context)
    sock.close()
    return features


def test_no_certificate_means_external_is_not_advertised(c2s, tmp_path, pki):
    port = c2s("starttls", disconnect_on_failure=False)
    assert b"EXTERNAL" not in features_after_starttls(port, client_context(tmp_path, None))


def test_valid_certificate_means_external_is_advertised(c2s, tmp_path, pki):
    port = c2s("starttls", disconnect_on_failure=False)
    assert b"<mechanism>EXTERNAL</mechanism>" in features_after_starttls(
        port, client_context(tmp_path, pki.valid)
    )


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
