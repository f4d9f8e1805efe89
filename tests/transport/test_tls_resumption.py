"""TLS session resumption (issue 17 §4): a returning client resumes, and is checked in full every time.

Specs: RFC 8446 §2.2 and §4.6.1 (TLS 1.3 resumption and tickets), RFC 5246 §7.4.1.2 (TLS 1.2 session IDs),
RFC 5929 §3.1 (``tls-unique`` of a resumed handshake), RFC 6120 §4.9.3.12 and §6.5.

The listener is the real one of ``tests/transport/conftest.py`` with the real core and authenticator; the
client is Python's ``ssl`` handing its last session back (``wrap_socket(session=...)``). Each test that
expects a refusal on resumption first asserts that the connection really resumed (``session_reused``), so a
server that quietly fell back to a full handshake would not pass it. OpenSSL does not run the verify
callback on a resumed session: what refuses there is our own check of the restored chain.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

from accounts import changefeed
from accounts.models import Account
from certauth import services, trust, userstatus
from certauth.models import AuthEvent, CertificateAuthority
from certauth.verify import known_intermediates, verified_paths, verify_client_chain
from tests.certs import make_client, make_intermediate, make_root
from tests.transport.rawxmpp import (
    FEATURES_END,
    STREAM_END,
    STREAM_HEADER,
    SUCCESS,
    auth_external,
    bind,
    direct_tls,
    open_tls,
    read_to_eof,
    read_until,
    sasl,
    sasl_failure_condition,
    starttls,
    stream_error_condition,
    text_of,
)
from tests.transport.tlsclient import client_context
from transport.tls.context import ServerTls, channel_bindings, peer_chain, session_resumed

pytestmark = pytest.mark.django_db(transaction=True)

MODES = ["starttls", "tls"]
VERSIONS = [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2]
VERSION_IDS = ["tls13", "tls12"]


@dataclass
class Visit:
    """One connection's TLS facts and what the server sent on it."""

    resumed: bool
    session: ssl.SSLSession | None
    features: bytes
    answer: bytes = b""


def connect(
    port: int, mode: str, ctx: ssl.SSLContext, session: ssl.SSLSession | None
) -> tuple[ssl.SSLSocket, bytes]:
    """TLS (direct, or after STARTTLS) offering ``session``; the socket and the features after TLS (or the
    stream error the server closed the stream with)."""
    return (starttls if mode == "starttls" else direct_tls)(port, ctx, session)


def login(port: int, mode: str, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None) -> Visit:
    """EXTERNAL and bind when offered, then a clean close (</stream:stream> both ways, and TLS close_notify
    from the server: OpenSSL drops a session whose connection ends without one)."""
    sock, features = connect(port, mode, ctx, session)
    with sock:
        visit = Visit(sock.session_reused, None, features)
        if b"EXTERNAL" in features:
            visit.answer = sasl(sock, auth_external("="))
            if SUCCESS in visit.answer:
                assert bind(sock).startswith(b"alice@localhost/")
        if STREAM_END not in features + visit.answer:
            sock.sendall(STREAM_END)
        visit.answer += read_to_eof(sock)
        visit.session = sock.session  # TLS 1.3: the tickets came after the handshake
    return visit


def first_login(port: int, mode: str, ctx: ssl.SSLContext) -> ssl.SSLSession:
    visit = login(port, mode, ctx)
    assert not visit.resumed and SUCCESS in visit.answer, visit
    assert visit.session is not None
    return visit.session


def successes() -> int:
    return AuthEvent.objects.filter(outcome=AuthEvent.Outcome.SUCCESS).count()


@pytest.mark.parametrize("version", VERSIONS, ids=VERSION_IDS)
@pytest.mark.parametrize("mode", MODES)
def test_a_returning_client_resumes_and_logs_in(c2s, tmp_path, pki, mode, version, caplog):
    port = c2s(mode, disconnect_on_failure=False)
    ctx = client_context(tmp_path, pki.valid, maximum_version=version)
    session = first_login(port, mode, ctx)
    with caplog.at_level("DEBUG", logger="transport.driver"):
        visit = login(port, mode, ctx, session)
    assert visit.resumed, visit  # an abbreviated handshake
    assert b"EXTERNAL" in visit.features and SUCCESS in visit.answer, visit
    assert "client certificate verified" in caplog.text and "resumed TLS session" in caplog.text
    assert successes() == 2  # each login is an auth event of its own
    again = login(port, mode, ctx, visit.session)  # the resumed connection's own ticket works too
    assert again.resumed and SUCCESS in again.answer, again


@pytest.mark.parametrize("version", VERSIONS, ids=VERSION_IDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("change", ["revoked", "held", "account_disabled"])
def test_a_change_since_the_full_handshake_refuses_the_resumed_login(
    c2s, tmp_path, pki, mode, version, change
):
    port = c2s(mode, disconnect_on_failure=False)
    cert = make_client(pki.ca, jids=["alice@localhost"])
    row = services.import_certificate(cert.pem)
    ctx = client_context(tmp_path, cert, maximum_version=version)
    session = first_login(port, mode, ctx)
    if change == "revoked":
        services.revoke(row)
    elif change == "held":
        services.hold(row)  # RFC 5280 §5.3.1 certificateHold
    else:
        assert Account.objects.filter(localpart="alice").update(active=False) == 1  # made at first login
    visit = login(port, mode, ctx, session)
    assert visit.resumed, visit  # not a full handshake that happened to refuse
    assert SUCCESS not in visit.answer, visit
    if change == "account_disabled":
        # The certificate is still good, so EXTERNAL is offered; the account is refused with the generic
        # not-authorized that every other refused login gets (RFC 6120 §6.5.10).
        assert b"EXTERNAL" in visit.features, visit
        assert sasl_failure_condition(visit.answer) == "not-authorized", visit
    else:
        # Nothing else would be offered: the certificate's own status in a stream error (issue 18 §5).
        answer = visit.features + visit.answer
        assert stream_error_condition(answer) == "not-authorized", visit
        text = userstatus.TEXT_REVOKED if change == "revoked" else userstatus.TEXT_ON_HOLD
        assert text_of(answer) == text, visit
    assert successes() == 1


@pytest.mark.parametrize("mode", MODES)
def test_with_disconnect_on_failure_a_revoked_certificate_is_cut_after_the_resumed_handshake(
    c2s, tmp_path, pki, mode
):
    port = c2s(mode, disconnect_on_failure=True)
    cert = make_client(pki.ca, jids=["alice@localhost"])
    row = services.import_certificate(cert.pem)
    ctx = client_context(tmp_path, cert)
    session = first_login(port, mode, ctx)
    services.revoke(row)
    sock, features = connect_or_cut(port, mode, ctx, session)
    with sock:
        assert sock.session_reused
        assert b"<stream:features" not in features and b"EXTERNAL" not in features, features
        assert read_to_eof(sock) == b""  # cut at once (MongooseIM's just_tls), nothing offered
    assert successes() == 1


def connect_or_cut(port: int, mode: str, ctx: ssl.SSLContext, session) -> tuple[ssl.SSLSocket, bytes]:
    """Like :func:`connect`, but a connection the server cuts reads as no features."""
    sock = open_tls(port, ctx, starttls=mode == "starttls", session=session)
    try:
        sock.sendall(STREAM_HEADER)
        features = read_until(sock, *FEATURES_END)
    except (ConnectionError, ssl.SSLError):
        features = b""
    return sock, features


@pytest.mark.parametrize("version", VERSIONS, ids=VERSION_IDS)
def test_a_client_whose_connection_was_lost_resumes_next_time(c2s, tmp_path, pki, version):
    """The session is in the client's ticket, not in a cache that a lost connection empties (a phone that
    changed networks resumes); it is checked in full as always."""
    port = c2s("tls", disconnect_on_failure=False)
    ctx = client_context(tmp_path, pki.valid, maximum_version=version)
    sock, features = connect(port, "tls", ctx, None)
    assert SUCCESS in sasl(sock, auth_external("="))
    session = sock.session
    sock.close()  # no </stream:stream>, no close_notify: the server's side ends on a lost connection
    visit = login(port, "tls", ctx, session)
    assert visit.resumed and SUCCESS in visit.answer, visit
    assert successes() == 2


def intermediate_client():
    """A client certificate under an intermediate CA under a root the admin trusts (a CA row)."""
    root = make_root("Resumption Root")
    services.import_ca(root.pem, name="resumption root")
    trust.invalidate()
    return make_client(make_intermediate(root, "Resumption Inter"), jids=["alice@localhost"])


@pytest.mark.parametrize("version", VERSIONS, ids=VERSION_IDS)
def test_a_client_of_an_intermediate_ca_resumes_and_its_path_is_verified_again(c2s, tmp_path, pki, version):
    """The ticket brings back the leaf alone; the intermediate this process verified above it at the full
    handshake is put back for path building, and the resumed login is verified and logs in."""
    port = c2s("tls", disconnect_on_failure=False)
    leaf = intermediate_client()
    ctx = client_context(tmp_path, leaf, maximum_version=version)
    session = first_login(port, "tls", ctx)
    visit = login(port, "tls", ctx, session)
    assert visit.resumed and SUCCESS in visit.answer, visit


def test_a_resumed_client_of_an_intermediate_ca_whose_root_was_distrusted_since_is_refused(
    c2s, tmp_path, pki
):
    """The intermediates put back are candidates, never trust: the root distrusted in the admin after the full
    handshake, the resumed path has no anchor (within the change feed's poll), and EXTERNAL is not offered."""
    port = c2s("tls", disconnect_on_failure=False)
    leaf = intermediate_client()
    ctx = client_context(tmp_path, leaf)
    session = first_login(port, "tls", ctx)
    root = CertificateAuthority.objects.get(name="resumption root")
    root.trusted_for_client_auth = False
    root.save()  # as the admin does
    time.sleep(changefeed.POLL_INTERVAL * 2)  # the staleness bound of every cache under the feed
    visit = login(port, "tls", ctx, session)
    assert visit.resumed and b"EXTERNAL" not in visit.features and SUCCESS not in visit.answer, visit
    assert successes() == 1


def test_a_full_handshake_with_the_leaf_alone_is_not_completed_from_known_intermediates(c2s, tmp_path, pki):
    """Only a resumed session gets its intermediates put back: a client that leaves its intermediate out of
    a full handshake is refused even though this process verified that intermediate for another login."""
    port = c2s("tls", disconnect_on_failure=False)
    leaf = intermediate_client()
    first_login(port, "tls", client_context(tmp_path, leaf))  # the intermediate is now known here
    certfile, keyfile = tmp_path / "leaf-alone.pem", tmp_path / "leaf-alone.key"
    certfile.write_bytes(leaf.cert.public_bytes(Encoding.PEM))
    keyfile.write_bytes(leaf.key_pem)
    alone = client_context(tmp_path, None)
    alone.load_cert_chain(certfile, keyfile)
    visit = login(port, "tls", alone)
    assert not visit.resumed and b"EXTERNAL" not in visit.features and SUCCESS not in visit.answer, visit
    assert successes() == 1


def test_a_resumed_leaf_whose_intermediate_this_process_does_not_know_is_refused(c2s, tmp_path, pki):
    """Fail closed: without its intermediate the restored leaf has no path to a trust anchor, so EXTERNAL
    is not offered; nothing is let in unverified."""
    port = c2s("tls", disconnect_on_failure=False)
    leaf = intermediate_client()
    ctx = client_context(tmp_path, leaf)
    session = first_login(port, "tls", ctx)
    known_intermediates.clear()
    verified_paths.clear()
    visit = login(port, "tls", ctx, session)
    assert visit.resumed and b"EXTERNAL" not in visit.features and SUCCESS not in visit.answer, visit


# -- the context alone (transport.tls.context) ---------------------------------------------------------------


@dataclass
class ServerSide:
    resumed: bool | None = None
    chain: list[str] | None = None
    bindings: dict[str, bytes] | None = None


def serve(tls: ServerTls, count: int) -> tuple[socket.socket, list[ServerSide], threading.Thread]:
    """A thread serving ``count`` handshakes with ``tls``'s current context, each closed with close_notify."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(20)
    sides = [ServerSide() for _ in range(count)]

    def run() -> None:
        for side in sides:
            sock, _ = listener.accept()
            connection = SSL.Connection(tls.context, sock)
            connection.set_accept_state()
            connection.do_handshake()
            side.resumed = session_resumed(connection)
            side.chain = [c.subject.rfc4514_string() for c in peer_chain(connection)]
            side.bindings = channel_bindings(connection)
            connection.sendall(b"x")  # TLS 1.3: the tickets go out before it
            try:
                connection.recv(1)
            except SSL.Error:
                pass
            connection.shutdown()
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener, sides, thread


def client_visit(port: int, ctx: ssl.SSLContext, session) -> ssl.SSLSocket:
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), session=session)
    assert sock.recv(1) == b"x"
    return sock


@pytest.mark.django_db(transaction=False)
@pytest.mark.parametrize("version", VERSIONS, ids=VERSION_IDS)
def test_a_resumed_session_has_the_intermediates_this_process_verified_above_its_leaf(tmp_path, pki, version):
    """No session is kept by the server: the ticket restores the leaf, ``peer_chain`` the known rest."""
    root = make_root("Resumption Root")
    inter = make_intermediate(root, "Resumption Inter")
    leaf = make_client(inter, jids=["alice@localhost"])
    tls = ServerTls(pki.options(verify_mode="peer", disconnect_on_failure=False), [root.cert])
    listener, sides, thread = serve(tls, 3)
    ctx = client_context(tmp_path, leaf, maximum_version=version)
    port = listener.getsockname()[1]
    known_intermediates.clear()
    with client_visit(port, ctx, None) as first:
        first.sendall(b"y")
        session = first.session
    with client_visit(port, ctx, session) as second:  # nothing verified above this leaf yet: the leaf alone
        assert second.session_reused
        second.sendall(b"y")
        session = second.session
    assert verify_client_chain(
        [leaf.cert, inter.cert], [root.cert], mode="peer", now=datetime.now(UTC)
    ).ok  # as a login does
    with client_visit(port, ctx, session) as third:
        assert third.session_reused
        third.sendall(b"y")
    thread.join(20)
    listener.close()
    assert [side.resumed for side in sides] == [False, True, True]
    assert len(sides[0].chain) == 2 and sides[1].chain == sides[0].chain[:1]
    assert sides[2].chain == sides[0].chain


@pytest.mark.django_db(transaction=False)
def test_new_trust_anchors_mean_a_full_handshake(tmp_path, pki):
    tls = ServerTls(pki.options(verify_mode="peer", disconnect_on_failure=False), [pki.ca.cert])
    listener, sides, thread = serve(tls, 3)
    ctx = client_context(tmp_path, pki.valid)
    port = listener.getsockname()[1]
    with client_visit(port, ctx, None) as first:
        first.sendall(b"y")
        session = first.session
    with client_visit(port, ctx, session) as second:
        second.sendall(b"y")
        session = second.session
    tls.update_trust_anchors([pki.ca.cert, make_root("Another Root").cert])  # a new context, a new cache
    with client_visit(port, ctx, session) as third:
        third.sendall(b"y")
    thread.join(20)
    listener.close()
    assert [side.resumed for side in sides] == [False, True, False]


@pytest.mark.django_db(transaction=False)
def test_tls_unique_of_a_resumed_tls12_handshake_is_the_servers_finished(tmp_path, pki):
    """RFC 5929 §3.1: the first Finished of the latest handshake, which in a resumed one is the server's;
    both ends must agree, or SCRAM -PLUS with tls-unique fails on every resumed connection."""
    tls = ServerTls(pki.options(verify_mode="peer", disconnect_on_failure=False), [pki.ca.cert])
    listener, sides, thread = serve(tls, 2)
    ctx = client_context(tmp_path, pki.valid, maximum_version=ssl.TLSVersion.TLSv1_2)
    port = listener.getsockname()[1]
    client_bindings = []
    session = None
    for _ in range(2):
        with client_visit(port, ctx, session) as sock:
            client_bindings.append(sock.get_channel_binding("tls-unique"))
            sock.sendall(b"y")
            session = sock.session
    thread.join(20)
    listener.close()
    assert [side.resumed for side in sides] == [False, True]
    assert [side.bindings["tls-unique"] for side in sides] == client_bindings
    assert client_bindings[0] != client_bindings[1]
