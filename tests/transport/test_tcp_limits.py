"""Per-address bounds on a real c2s listener (issue 16 point 3): ``max_connections_per_address`` and
``auth_failures_per_minute`` with its delay (XEP-0205 §3; RFC 6120 §4.9.3.14 ``policy-violation``)."""

from __future__ import annotations

import base64
import socket
import time

import pytest

from tests.transport.rawxmpp import (
    FEATURES_END,
    STREAM_HEADER,
    auth_external,
    read_to_eof,
    read_until,
    sasl,
    sasl_failure_condition,
    starttls,
    stream_error_condition,
)
from tests.transport.tlsclient import client_context
from xmppauth import limits

pytestmark = pytest.mark.django_db(transaction=True)


def open_stream(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(STREAM_HEADER)
    return sock


def closed_before_any_xmpp(port: int) -> bool:
    """Whether a new connection is closed before the server says anything (the reset may reach the client
    during its connect or its first read, depending on timing)."""
    try:
        sock = open_stream(port)
    except ConnectionResetError:
        return True
    try:
        return read_to_eof(sock) == b""
    except ConnectionResetError:
        return True
    finally:
        sock.close()


def test_a_connection_past_the_per_address_limit_is_closed_at_once_and_a_freed_slot_is_reused(
    c2s, xmpp_options
):
    port = c2s("starttls")
    held = limits.connections.open.get("127.0.0.1", 0)  # still open from earlier tests of this process
    xmpp_options(max_connections_per_address=held + 2)
    first, second = open_stream(port), open_stream(port)
    try:
        for sock in (first, second):
            assert b"<starttls" in read_until(sock, *FEATURES_END)  # within the limit: served
        assert closed_before_any_xmpp(port)  # the third: closed before any XMPP
        first.close()
        served = b""
        for _ in range(50):
            try:
                fourth = open_stream(port)
                served = read_until(fourth, *FEATURES_END)
                fourth.close()
            except ConnectionResetError:
                served = b""  # the first one's slot is not free yet
            if served:
                break
            time.sleep(0.1)
        assert b"<starttls" in served
    finally:
        first.close()
        second.close()


def test_no_connection_limit_when_it_is_zero(c2s, xmpp_options):
    xmpp_options(max_connections_per_address=0)
    port = c2s("starttls")
    socks = [open_stream(port) for _ in range(5)]
    try:
        for sock in socks:
            assert b"<starttls" in read_until(sock, *FEATURES_END)
    finally:
        for sock in socks:
            sock.close()


def fail_auth(port: int, context, times: int) -> None:
    """Failed SASL EXTERNAL attempts: alice's certificate asking to be bob (invalid-authzid)."""
    sock, features = starttls(port, context)
    with sock:
        for _ in range(times):
            answer = sasl(sock, auth_external(base64.b64encode(b"bob@localhost").decode()))
            assert sasl_failure_condition(answer) == "invalid-authzid", answer


def test_an_address_past_the_auth_failure_limit_waits_then_gets_policy_violation(
    c2s, pki, tmp_path, xmpp_options
):
    xmpp_options(auth_failures_per_minute=2, auth_failure_delay_seconds=1)
    port = c2s("starttls", disconnect_on_failure=False)
    context = client_context(tmp_path, pki.valid)
    fail_auth(port, context, 2)
    raw = open_stream(port)
    assert b"<starttls" in read_until(raw, *FEATURES_END)
    raw.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    assert b"<proceed" in read_until(raw, b"/>")
    sock = context.wrap_socket(raw, server_hostname="localhost")
    started = time.monotonic()
    sock.sendall(STREAM_HEADER)
    received = read_to_eof(sock)
    assert stream_error_condition(received) == "policy-violation", received
    assert b"EXTERNAL" not in received  # no features: the stream is refused
    assert time.monotonic() - started >= 0.9  # XEP-0205 §3: the answer is delayed (a lower bound only)


def test_an_address_below_the_auth_failure_limit_may_log_in(c2s, pki, tmp_path, xmpp_options):
    xmpp_options(auth_failures_per_minute=2, auth_failure_delay_seconds=1)
    port = c2s("starttls", disconnect_on_failure=False)
    context = client_context(tmp_path, pki.valid)
    fail_auth(port, context, 1)
    sock, features = starttls(port, context)
    with sock:
        assert b"EXTERNAL" in features
        assert sasl_failure_condition(sasl(sock, auth_external("="))) is None
