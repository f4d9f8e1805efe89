"""End to end over TCP: slixmpp logs in with SASL EXTERNAL against the real core, authenticator and DB.

The listener runs on the test session's reactor thread with the real ``transport.xmpp`` core and
``certauth.authenticator``; the client certificates come from a CA imported into the test database.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
from dataclasses import dataclass

import pytest

from accounts.models import Account, Domain
from certauth import services, userstatus
from certauth.models import AuthEvent
from tests.certs import SERVER_AUTH, make_client
from tests.processes import free_port
from tests.transport.rawxmpp import (
    FEATURES_END,
    NO_MECHANISMS,
    STREAM_HEADER,
    auth_external,
    direct_tls,
    ping,
    raw_session,
    read_to_eof,
    read_until,
    sasl,
    sasl_failure_condition,
    starttls,
    stream_error_condition,
    text_of,
)
from tests.transport.tlsclient import client_context
from tests.transport.xmppclient import slixmpp_login
from transport.sessions import registry as live
from transport.xmpp.errors import SASL_FAILURE_TEXT
from xmppauth.config import AuthConfig, HttpAuthOptions

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


# DESIGN §4, issue 12: common_name applies only to a certificate without xmppAddr, whatever its place.
CN_ORDERS = [("standard", "common_name"), ("common_name", "standard")]


@pytest.fixture(scope="module")
def heron(pki):
    """Two xmppAddrs and a CN naming a third account (heron-cn), which its xmppAddrs never name."""
    return make_client(pki.ca, jids=["heron@localhost", "heron-work@localhost"], common_name="heron-cn")


def last_event(fingerprint: str) -> AuthEvent:
    return AuthEvent.objects.filter(cert_fingerprint=fingerprint).order_by("-id").first()


@pytest.mark.parametrize("verifiers", CN_ORDERS, ids=["cn_after", "cn_first"])
def test_two_xmppaddrs_without_authzid_do_not_log_in_as_the_cn_account(c2s, tmp_path, heron, verifiers):
    port = c2s("starttls", auth=AuthConfig(sasl_external=verifiers))
    outcome = slixmpp_login(port, tmp_path, heron, jid="heron-cn@localhost")
    assert_refused(
        outcome, "invalid-authzid"
    )  # XEP-0178 §3: the server cannot choose, and the CN is no way out
    event = last_event(heron.facts.fingerprint_sha256)
    assert (event.outcome, event.condition, event.jid_granted) == ("failure", "invalid-authzid", "")
    assert event.reason == "certificate has 2 xmppAddrs and no authzid was given"
    assert not Account.objects.filter(localpart="heron-cn").exists()  # pki made no account for the CN


@pytest.mark.parametrize("verifiers", CN_ORDERS, ids=["cn_after", "cn_first"])
def test_authzid_naming_the_cn_account_is_invalid_authzid(c2s, tmp_path, heron, verifiers):
    port = c2s("starttls", auth=AuthConfig(sasl_external=verifiers))
    outcome = slixmpp_login(port, tmp_path, heron, jid="heron-cn@localhost", authzid="heron-cn@localhost")
    assert_refused(outcome, "invalid-authzid")


@pytest.mark.parametrize("verifiers", CN_ORDERS, ids=["cn_after", "cn_first"])
def test_two_xmppaddrs_with_authzid_bind_the_named_xmppaddr_when_common_name_is_configured(
    c2s, tmp_path, heron, verifiers
):
    port = c2s("starttls", auth=AuthConfig(sasl_external=verifiers))
    outcome = slixmpp_login(port, tmp_path, heron, jid="heron-work@localhost", authzid="heron-work@localhost")
    assert_bound(outcome, "heron-work@localhost")


def test_one_xmppaddr_binds_it_even_with_common_name_first(c2s, tmp_path, pki):
    client = make_client(pki.ca, jids=["heron@localhost"], common_name="heron-cn")
    port = c2s("starttls", auth=AuthConfig(sasl_external=("common_name", "standard")))
    outcome = slixmpp_login(port, tmp_path, client, jid="heron@localhost")
    assert_bound(outcome, "heron@localhost")


# Issue 12 point 7: an unauthenticated client reads a generic SASL text; the detail is for the operator.


def raw_external_failure(port: int, tmp_path, client) -> bytes:
    """STARTTLS with ``client``, EXTERNAL offered and sent with no authzid: the server's exact answer."""
    sock, features = starttls(port, client_context(tmp_path, client))
    with sock:
        assert b"<mechanism>EXTERNAL</mechanism>" in features, features
        return sasl(sock, auth_external("="))


def assert_generic_not_authorized(answer: bytes, *hidden: str) -> None:
    text = SASL_FAILURE_TEXT["not-authorized"].encode()
    assert sasl_failure_condition(answer) == "not-authorized", answer
    assert b'<text xml:lang="en">' + text + b"</text>" in answer, answer
    for detail in hidden:
        assert detail.encode() not in answer, (detail, answer)


def test_auth_service_url_and_error_reach_the_auth_event_not_the_client(c2s, tmp_path, pki):
    closed = free_port()  # nothing listens there: the http method's request is refused at once
    http = HttpAuthOptions(host=f"http://127.0.0.1:{closed}", path_prefix="/internal-auth/")
    port = c2s("starttls", auth=AuthConfig(methods=("http",), http=http))
    answer = raw_external_failure(port, tmp_path, pki.valid)
    assert_generic_not_authorized(answer, str(closed), "internal-auth", "auth service", "refused", "http:")
    event = last_event(pki.valid.facts.fingerprint_sha256)
    assert (event.outcome, event.condition) == ("failure", "not-authorized")
    assert event.reason.startswith(
        f"http: auth service http://127.0.0.1:{closed}/internal-auth/get_certs unreachable"
    )


def test_account_state_reaches_the_auth_event_not_the_client(c2s, tmp_path, pki):
    Account.objects.create(
        localpart="alice", domain=Domain.objects.get_or_create(name="localhost")[0], active=False
    )
    port = c2s("starttls")
    answer = raw_external_failure(port, tmp_path, pki.valid)
    assert_generic_not_authorized(answer, "disabled", "alice", "pki:")
    event = last_event(pki.valid.facts.fingerprint_sha256)
    assert (event.outcome, event.condition) == ("failure", "not-authorized")
    assert event.reason == "pki: account alice@localhost is disabled"


def test_registry_knows_the_bound_session_by_bare_jid_and_certificate(c2s, tmp_path, pki, on_reactor):
    port = c2s("starttls")
    session = raw_session(port, client_context(tmp_path, pki.valid))
    peer = f"127.0.0.1:{session.getsockname()[1]}"
    try:
        handles = on_reactor(lambda: list(live.sessions.handles.values()))
        (facts,) = [handle.facts for handle in handles if handle.facts.peer == peer]
        assert facts.full_jid.startswith("alice@localhost/")
        assert facts.cert_fingerprint == pki.valid.facts.fingerprint_sha256
        assert facts.transport == "tcp"
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


# What OpenSSL itself refuses during the handshake when disconnect_on_failure is true (its default purpose
# check on a server is "SSL client", so a serverAuth-only EKU fails there), and the TLS alert it sends.
# No certificate at all: TLS 1.3's certificate_required alert (RFC 8446 §4.4.2.4).
HANDSHAKE_ALERTS = {
    "none": "CERTIFICATE_REQUIRED",
    "expired": "CERTIFICATE_EXPIRED",
    "untrusted": "UNKNOWN_CA",
    "self_signed": "UNKNOWN_CA",
    "wrong_eku": "UNSUPPORTED_CERTIFICATE",
}
# Certificates OpenSSL accepts and our check (certauth: revocation) refuses: cut right after the handshake.
CUT_AFTER_HANDSHAKE = ("revoked", "held")


@dataclass(frozen=True)
class AfterTls:
    """How a connection went on after the client started TLS (STARTTLS or direct)."""

    how: str  # "alert": a TLS alert ended it; "closed": the server closed it (EOF or reset); "open": neither
    data: bytes  # every byte the server sent over TLS before that
    detail: str = ""  # the SSLError's text for an alert


def after_tls(tmp_path, port: int, client, direct: bool, *, wait: float = 10, probe: float = 1) -> AfterTls:
    """Start TLS with ``client``, then read until the server ends the connection or falls silent.

    First we only listen (``probe`` seconds): a server that refuses the certificate says so now, with an alert
    or by closing, before we send anything (so our own bytes cannot turn its close into a reset that hides
    the alert). Silence means it waits for our stream header: we send it and read the features; after
    ``wait`` seconds of silence that is "open".
    """
    raw = socket.create_connection(("127.0.0.1", port), timeout=wait)
    if not direct:
        raw.sendall(STREAM_HEADER)
        assert b"<starttls" in read_until(raw, *FEATURES_END)
        raw.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        assert b"<proceed" in read_until(raw, b"/>")
    data = b""
    try:
        sock = client_context(tmp_path, client).wrap_socket(raw, server_hostname="localhost")
        with sock:
            sock.settimeout(probe)
            try:
                data = sock.recv(65536)  # TLS 1.3: the verdict on our certificate follows our Finished
                if not data:
                    return AfterTls("closed", data)
            except TimeoutError:
                sock.sendall(STREAM_HEADER)
            sock.settimeout(wait)
            while chunk := sock.recv(65536):
                data += chunk
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError):
        return AfterTls("closed", data)
    except ssl.SSLError as exc:
        return AfterTls("alert", data, str(exc))
    except TimeoutError:
        return AfterTls("open", data)
    finally:
        raw.close()
    return AfterTls("closed", data)


@pytest.mark.parametrize("kind", BAD)
@pytest.mark.parametrize(("mode", "direct"), MODES, ids=MODE_IDS)
@pytest.mark.parametrize("verify_mode", ["peer", "selfsigned_peer"])
def test_bad_certificate_with_disconnect_on_failure_is_cut_before_any_xmpp(
    c2s, tmp_path, bad, kind, mode, direct, verify_mode
):
    if verify_mode == "selfsigned_peer" and kind == "self_signed":
        pytest.skip("selfsigned_peer accepts it: test_self_signed_certificate_logs_in_with_selfsigned_peer")
    port = c2s(mode, disconnect_on_failure=True, verify_mode=verify_mode)
    # The raw view: not one byte of XMPP over TLS, then the connection ends, the way the rule says.
    seen = after_tls(tmp_path, port, bad(kind), direct)
    assert seen.data == b"", seen
    if kind in CUT_AFTER_HANDSHAKE:
        assert seen.how == "closed", seen  # OpenSSL accepted it; our revocation check cut it
    else:
        assert seen.how == "alert" and HANDSHAKE_ALERTS[kind] in seen.detail, seen
    # A real client: disconnected without ever seeing stream features, so no SASL step at all.
    outcome = slixmpp_login(port, tmp_path, bad(kind), direct_tls=direct)
    assert outcome.disconnected and outcome.bound_jid is None, outcome
    assert not outcome.no_usable_mechanism and outcome.sasl_failures == [], outcome


# What a refused certificate may read of its own status (certauth.userstatus); the other kinds have none.
OWN_STATUS = {
    "expired": userstatus.TEXT_EXPIRED,
    "untrusted": userstatus.TEXT_UNTRUSTED,
    "self_signed": userstatus.TEXT_UNTRUSTED,
    "revoked": userstatus.TEXT_REVOKED,
    "held": userstatus.TEXT_ON_HOLD,
}


@pytest.mark.parametrize("kind", BAD)
@pytest.mark.parametrize(("mode", "direct"), MODES, ids=MODE_IDS)
@pytest.mark.parametrize("verify_mode", ["peer", "selfsigned_peer"])
def test_bad_certificate_without_disconnect_is_told_its_status_or_offered_no_mechanism(
    c2s, tmp_path, bad, kind, mode, direct, verify_mode
):
    if verify_mode == "selfsigned_peer" and kind == "self_signed":
        pytest.skip("selfsigned_peer accepts it: test_self_signed_certificate_logs_in_with_selfsigned_peer")
    port = c2s(mode, disconnect_on_failure=False, verify_mode=verify_mode)
    context = client_context(tmp_path, bad(kind))
    sock, features = direct_tls(port, context) if direct else starttls(port, context)
    status = OWN_STATUS.get(kind)
    with sock:
        if status:
            # Nothing to offer (EXTERNAL only, DESIGN §4) and a status of its own to tell: the stream ends
            # with it (RFC 6120 §4.9.3.12) ...
            features += read_to_eof(sock)
            assert b"<stream:features" not in features and b"EXTERNAL" not in features, features
            assert stream_error_condition(features) == "not-authorized", features
            assert text_of(features) == status, features
        else:
            # No certificate, or a refusal with no status to tell (wrong EKU): the features offer SASL with
            # no mechanism in it (DESIGN §4), and EXTERNAL sent anyway is answered with not-authorized.
            assert NO_MECHANISMS in features and b"EXTERNAL" not in features, features
            assert sasl_failure_condition(sasl(sock, auth_external("="))) == "not-authorized"
    # A real client: it shows the status instead of "no appropriate login method", or finds no usable
    # mechanism; it never tries one.
    outcome = slixmpp_login(port, tmp_path, bad(kind), direct_tls=direct)
    assert outcome.bound_jid is None and outcome.sasl_failures == [], outcome
    assert outcome.stream_errors == ([("not-authorized", status)] if status else []), outcome
    assert outcome.no_usable_mechanism is not bool(status), outcome


@pytest.mark.parametrize("disconnect", [True, False], ids=["disconnect", "keep"])
def test_valid_certificate_is_offered_external_and_kept_the_pass_case(c2s, tmp_path, pki, disconnect):
    port = c2s("tls", disconnect_on_failure=disconnect)
    seen = after_tls(tmp_path, port, pki.valid, direct=True, wait=1)
    assert seen.how == "open", seen  # after its features the server waits for the client
    assert b"<mechanism>EXTERNAL</mechanism>" in seen.data and NO_MECHANISMS not in seen.data, seen


@pytest.mark.parametrize("kind", sorted(set(HANDSHAKE_ALERTS) - {"none"}))
@pytest.mark.parametrize("verify_mode", ["peer", "selfsigned_peer"])
def test_certificate_openssl_rejects_fails_the_handshake_with_its_alert(
    c2s, tmp_path, bad, kind, verify_mode
):
    if verify_mode == "selfsigned_peer" and kind == "self_signed":
        pytest.skip("selfsigned_peer accepts it: test_self_signed_certificate_logs_in_with_selfsigned_peer")
    port = c2s("tls", disconnect_on_failure=True, verify_mode=verify_mode)
    seen = after_tls(tmp_path, port, bad(kind), direct=True)
    assert seen.how == "alert" and HANDSHAKE_ALERTS[kind] in seen.detail, seen
    assert seen.data == b""


@pytest.mark.parametrize("kind", ["revoked", "held"])
@pytest.mark.parametrize("verify_mode", ["peer", "selfsigned_peer"])
def test_revoked_or_held_certificate_passes_openssl_and_is_cut_by_our_check(
    c2s, tmp_path, bad, kind, verify_mode, caplog
):
    port = c2s("tls", disconnect_on_failure=True, verify_mode=verify_mode)
    with caplog.at_level(logging.WARNING, logger="transport.driver"):
        seen = after_tls(tmp_path, port, bad(kind), direct=True)
    assert seen == AfterTls("closed", b""), seen  # not one byte of XMPP
    # The handshake passed OpenSSL and our certificate check, not a failed handshake, cut it.
    assert "certificate refused, disconnecting" in caplog.text


def test_self_signed_certificate_logs_in_with_selfsigned_peer(c2s, tmp_path, pki):
    port = c2s("starttls", verify_mode="selfsigned_peer")
    outcome = slixmpp_login(port, tmp_path, pki.self_signed, jid="carol@localhost")
    assert outcome.bound_jid is not None, outcome
    assert outcome.bound_jid.split("/")[0] == "carol@localhost"


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


def test_session_silent_after_a_server_ping_is_closed_with_connection_timeout(c2s, tmp_path, pki, on_reactor):
    from twisted.internet.task import Clock

    clock = Clock()
    port = c2s("starttls", clock=clock, ping_interval=60)
    session = raw_session(port, client_context(tmp_path, pki.valid))
    try:
        on_reactor(clock.advance, 60)
        assert b"urn:xmpp:ping" in read_until(session, b"</iq>", b"/></iq>")  # XEP-0199 §4.2
        on_reactor(clock.advance, 60)
        closing = read_to_eof(session)
        assert stream_error_condition(closing) == "connection-timeout", closing  # RFC 6120 §4.9.3.4
    finally:
        session.close()


def test_ping_interval_zero_never_pings(c2s, tmp_path, pki, on_reactor):
    from twisted.internet.task import Clock

    clock = Clock()
    port = c2s("starttls", clock=clock, ping_interval=0)
    session = raw_session(port, client_context(tmp_path, pki.valid))
    try:
        on_reactor(clock.advance, 3600)
        reply = ping(session, "still-here")
        assert b"result" in reply and b"keepalive" not in reply
    finally:
        session.close()
