"""Hostile and malformed input on a real c2s listener, read byte for byte, while another session stays served.

Specs: RFC 6120 §4.9.3 (stream errors: restricted-xml, policy-violation), §11.1 (no DTD), §13.12 item 4
(stanza size limit), §6.4.2 (EXTERNAL's empty response "=" and the empty challenge), §6.4.5 (failure and
retries), §6.5 (SASL conditions), RFC 4422 Appendix A (EXTERNAL's message is the authzid), DESIGN §4.

Each test first logs alice in on a raw socket and pings the server (XEP-0199), then does its harm on another
connection, then pings again on the first: the listener and the reactor must go on serving.
"""

from __future__ import annotations

import base64
import os
import re
import select
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.transport.rawxmpp import (
    CHALLENGE,
    STREAM_END,
    STREAM_HEADER,
    SUCCESS,
    auth_external,
    bind,
    ping,
    raw_session,
    read_to_eof,
    read_until,
    response,
    sasl,
    sasl_failure_condition,
    starttls,
    stream_error_condition,
)
from tests.transport.tlsclient import client_context

pytestmark = pytest.mark.django_db(transaction=True)


def _billion_laughs() -> bytes:
    """The real "billion laughs": nine levels of ten references, 10^9 "lol"s if anything expanded it."""
    entities = [b'<!ENTITY lol "lol">']
    for level in range(1, 10):
        below = b"&lol;" if level == 1 else b"&lol%d;" % (level - 1)
        entities.append(b'<!ENTITY lol%d "%s">' % (level, below * 10))
    return (
        b'<?xml version="1.0"?><!DOCTYPE lolz ['
        + b"".join(entities)
        + b"]>"
        + STREAM_HEADER[len(b"<?xml version='1.0'?>") :]
        + b"<message><body>&lol9;</body></message>"
    )


BILLION_LAUGHS = _billion_laughs()
TEN_MB = 10 * 1024 * 1024


@dataclass
class Served:
    """The listener's port and a logged-in session that must keep being served."""

    port: int
    session: ssl.SSLSocket
    directory: Path

    def still_served(self, stanza_id: str = "after") -> None:
        reply = ping(self.session, stanza_id)
        assert re.search(rb"<iq [^>]*type=\"result\"", reply), reply  # XEP-0199 §4.2


@pytest.fixture
def served(c2s, tmp_path, pki):
    port = c2s("starttls", disconnect_on_failure=False)
    session = raw_session(port, client_context(tmp_path, pki.valid))
    bystander = Served(port, session, tmp_path)
    bystander.still_served("before")
    yield bystander
    session.close()


def logged_in_tls(served: Served, pki) -> ssl.SSLSocket:
    """A second connection of alice, up to the restarted stream after STARTTLS (not yet authenticated)."""
    sock, features = starttls(served.port, client_context(served.directory, pki.valid))
    assert b"<mechanism>EXTERNAL</mechanism>" in features, features
    return sock


def test_billion_laughs_dtd_in_the_clear_is_restricted_xml(served):
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(BILLION_LAUGHS)
        received = read_to_eof(sock)
    assert stream_error_condition(received) == "restricted-xml", received  # RFC 6120 §11.1
    assert received.endswith(STREAM_END)
    assert b"lol" not in received
    served.still_served()


def test_billion_laughs_dtd_after_starttls_is_restricted_xml(served, pki):
    raw = socket.create_connection(("127.0.0.1", served.port), timeout=10)
    raw.sendall(STREAM_HEADER)
    read_until(raw, b"</stream:features>")
    raw.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    assert b"<proceed" in read_until(raw, b"/>")
    with client_context(served.directory, pki.valid).wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall(BILLION_LAUGHS)
        received = read_to_eof(sock)
    assert stream_error_condition(received) == "restricted-xml", received
    assert received.endswith(STREAM_END)
    served.still_served()


def _resident_bytes() -> int:
    """This process's resident set size (the listener runs on this process's reactor thread)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _send_while_reading(sock: ssl.SSLSocket, chunk: bytes, total: int) -> tuple[int, bytes]:
    """Send up to ``total`` bytes of ``chunk`` repeats, reading whatever the server says meanwhile.

    Stops at the server's end of stream or when the server no longer takes data; returns what was sent and
    what was received.
    """
    sent, received = 0, b""
    try:
        while sent < total and STREAM_END not in received:
            sock.sendall(chunk)
            sent += len(chunk)
            while sock.pending() or select.select([sock], [], [], 0)[0]:
                data = sock.recv(65536)
                if not data:
                    return sent, received
                received += data
    except (ConnectionError, ssl.SSLError, TimeoutError):
        pass
    return sent, received + read_to_eof(sock)


def test_ten_megabyte_stanza_after_login_is_policy_violation_and_not_buffered(served, pki):
    sock = logged_in_tls(served, pki)
    with sock:
        assert SUCCESS in sasl(sock, auth_external("="))
        assert bind(sock).startswith(b"alice@localhost/")
        chunk = b"a" * 65536
        before = _resident_bytes()
        sock.sendall(b"<message to='alice@localhost' type='chat'><body>")
        _, received = _send_while_reading(sock, chunk, TEN_MB)
        grown = _resident_bytes() - before
    # RFC 6120 §13.12 item 4: a stanza over the limit ends the stream with policy-violation.
    assert stream_error_condition(received) == "policy-violation", received[-500:]
    assert received.endswith(STREAM_END)
    assert grown < TEN_MB // 2, f"resident memory grew by {grown} bytes"
    served.still_served()


def _login_with(served: Served, pki, *elements: bytes) -> list[bytes]:
    """Send each SASL element in turn on a fresh TLS stream with alice's certificate; the answers."""
    sock = logged_in_tls(served, pki)
    with sock:
        return [sasl(sock, element) for element in elements]


def test_invalid_base64_in_external_is_incorrect_encoding(served, pki):
    (answer,) = _login_with(served, pki, auth_external("not*base64!"))
    assert answer.startswith(b'<failure xmlns="urn:ietf:params:xml:ns:xmpp-sasl"><incorrect-encoding/>'), (
        answer
    )
    served.still_served()


@pytest.mark.parametrize("authzid", ["not a jid", "@localhost", "alice@", "a@b@c"])
def test_authzid_that_is_not_a_jid_is_invalid_authzid(served, pki, authzid):
    encoded = base64.b64encode(authzid.encode()).decode()
    (answer,) = _login_with(served, pki, auth_external(encoded))
    assert answer.startswith(b'<failure xmlns="urn:ietf:params:xml:ns:xmpp-sasl"><invalid-authzid/>'), answer
    served.still_served()


def test_authzid_that_is_not_utf8_is_invalid_authzid(served, pki):
    (answer,) = _login_with(served, pki, auth_external(base64.b64encode(b"\xff\xfe@localhost").decode()))
    assert sasl_failure_condition(answer) == "invalid-authzid", answer
    served.still_served()


def test_external_without_a_certificate_is_not_authorized(served):
    sock, features = starttls(served.port, client_context(served.directory, None))
    with sock:
        assert b"EXTERNAL" not in features
        answer = sasl(sock, auth_external("="))
    assert answer.startswith(b'<failure xmlns="urn:ietf:params:xml:ns:xmpp-sasl"><not-authorized/>'), answer
    served.still_served()


def test_external_before_starttls_is_not_authorized(served):
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(STREAM_HEADER)
        assert b"EXTERNAL" not in read_until(sock, b"</stream:features>")
        answer = sasl(sock, auth_external("="))
    assert sasl_failure_condition(answer) == "not-authorized", answer
    served.still_served()


@pytest.mark.parametrize("reply", ["", "="], ids=["empty_response", "equals_response"])
def test_empty_auth_gets_an_empty_challenge_then_the_response_succeeds(served, pki, reply):
    sock = logged_in_tls(served, pki)
    with sock:
        assert sasl(sock, auth_external(None)) == CHALLENGE  # RFC 6120 §6.4.2
        assert sasl(sock, response(reply)) == SUCCESS  # an empty response: no authzid
        assert bind(sock, "raw").decode() == "alice@localhost/raw"
    served.still_served()


def test_response_with_the_base64_of_equals_is_an_authzid_that_is_not_a_jid(served, pki):
    # "PQ==" decodes to the authzid "=": the empty marker is the literal "=" (RFC 6120 §6.4.2), never
    # base64-encoded, so "=" here is an authzid, and not a JID.
    sock = logged_in_tls(served, pki)
    with sock:
        assert sasl(sock, auth_external(None)) == CHALLENGE
        assert sasl_failure_condition(sasl(sock, response("PQ=="))) == "invalid-authzid"
    served.still_served()


def test_empty_auth_with_the_authzid_in_the_response_binds_it(served, pki):
    sock = logged_in_tls(served, pki)
    with sock:
        assert sasl(sock, auth_external(None)) == CHALLENGE
        assert sasl(sock, response(base64.b64encode(b"alice@localhost").decode())) == SUCCESS
        assert bind(sock).startswith(b"alice@localhost/")
    served.still_served()


def test_two_failed_attempts_leave_the_stream_open_for_a_third_that_succeeds(served, pki):
    sock = logged_in_tls(served, pki)
    with sock:
        for _ in range(2):
            assert sasl_failure_condition(sasl(sock, auth_external("!"))) == "incorrect-encoding"
        assert sasl(sock, auth_external("=")) == SUCCESS  # RFC 6120 §6.4.5: retries are allowed
    served.still_served()


def test_three_failed_attempts_close_the_stream(served, pki):
    sock = logged_in_tls(served, pki)
    with sock:
        for _ in range(2):
            assert sasl_failure_condition(sasl(sock, auth_external("!"))) == "incorrect-encoding"
        sock.sendall(auth_external("!"))
        received = read_to_eof(sock)
    assert sasl_failure_condition(received) == "incorrect-encoding", received
    assert stream_error_condition(received) == "policy-violation", received  # RFC 6120 §6.4.5
    assert received.endswith(STREAM_END)
    served.still_served()
