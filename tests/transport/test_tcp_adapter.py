"""The c2s asyncio adapter (transport/tcp/protocol.py) with the real core, over real sockets: where plaintext
ends and TLS begins (RFC 6120 §5.4.3.3), close_notify both ways (RFC 8446 §6.1), a broken handshake ending
only its own connection (RFC 8446 §6.2), and the reactor's shutdown dropping every connection.

Each listener is the real one of ``tests/transport/conftest.py`` (``c2s``).
"""

from __future__ import annotations

import logging
import socket
import ssl
import time

import pytest

from tests.transport.rawxmpp import (
    FEATURES_END,
    STREAM_END,
    STREAM_HEADER,
    SUCCESS,
    auth_external,
    bind,
    direct_tls,
    read_to_eof,
    read_until,
    sasl,
)
from tests.transport.tlsclient import client_context
from transport.tcp import protocol

pytestmark = pytest.mark.django_db(transaction=True)

STARTTLS = b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
# What a client might wrongly send right after <starttls/>: a stanza, then bytes that look like the start of
# a TLS record (a handshake record's header). Fed to TLS, they would break the handshake; parsed, the stanza
# would reach the stream before its restart.
AFTER_STARTTLS = b"<message to='bob@localhost'><body>sneaked in</body></message>\x16\x03\x01\x00\x05hello"


def log_in(sock: ssl.SSLSocket, features: bytes) -> None:
    assert b"EXTERNAL" in features
    assert SUCCESS in sasl(sock, auth_external("="))
    assert bind(sock).startswith(b"alice@localhost/")


def test_plaintext_sent_after_starttls_in_the_same_write_is_neither_tls_nor_stanzas(c2s, tmp_path, pki):
    port = c2s("starttls")
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.sendall(STREAM_HEADER)
    assert b"<starttls" in read_until(raw, *FEATURES_END)
    raw.sendall(STARTTLS + AFTER_STARTTLS)  # one write: the server reads it in one piece
    assert read_until(raw, b"/>").endswith(b'<proceed xmlns="urn:ietf:params:xml:ns:xmpp-tls"/>')
    with client_context(tmp_path, pki.valid).wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall(STREAM_HEADER)
        # The handshake saw only the client's TLS bytes; the restarted stream has no stanza in it.
        log_in(sock, read_until(sock, *FEATURES_END))
        sock.sendall(STREAM_END)
        assert read_to_eof(sock).endswith(STREAM_END)


def test_the_clients_close_notify_is_answered_with_ours(c2s, tmp_path, pki):
    port = c2s("tls")
    sock, features = direct_tls(port, client_context(tmp_path, pki.valid))
    assert b"EXTERNAL" in features
    raw = sock.unwrap()  # RFC 8446 §6.1: ours, then it waits for the server's
    assert raw.recv(1) == b""  # and then the server closed the socket
    raw.close()


def test_our_close_ends_with_close_notify(c2s, tmp_path, pki):
    port = c2s("tls")
    sock, _ = direct_tls(port, client_context(tmp_path, pki.valid))
    sock.sendall(STREAM_END)
    assert read_until(sock, STREAM_END).endswith(STREAM_END)
    assert sock.recv(1) == b""  # a clean TLS end: close_notify came (a bare FIN would raise SSLEOFError)
    sock.close()


@pytest.mark.parametrize("garbage", [b"GET / HTTP/1.1\r\n\r\n", STREAM_HEADER], ids=["http", "plain_xmpp"])
def test_bytes_that_are_not_tls_end_that_connection_only_with_the_reason_logged(
    c2s, tmp_path, pki, caplog, garbage
):
    port = c2s("tls")
    with caplog.at_level(logging.INFO, logger="transport.driver"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(garbage)
            read_to_eof(raw)
        sock, features = direct_tls(port, client_context(tmp_path, pki.valid))  # the listener serves on
        with sock:
            log_in(sock, features)
    assert "disconnected (TLS handshake failed: " in caplog.text


def test_a_client_that_goes_in_the_middle_of_its_hello_ends_only_its_connection(c2s, tmp_path, pki):
    port = c2s("tls")
    outgoing = ssl.MemoryBIO()
    client = client_context(tmp_path, pki.valid).wrap_bio(ssl.MemoryBIO(), outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(outgoing.read()[:20])  # part of the ClientHello, then the client is gone
    sock, features = direct_tls(port, client_context(tmp_path, pki.valid))
    with sock:
        log_in(sock, features)


def test_shutdown_drops_every_connection_and_tells_its_driver(c2s, tmp_path, pki, on_reactor):
    port = c2s("tls")
    sock, features = direct_tls(port, client_context(tmp_path, pki.valid))
    with sock:
        log_in(sock, features)

        def bound() -> list:
            return [c for c in protocol._open if c.factory.name.endswith(f":{port}") and c.driver.live]

        deadline = time.monotonic() + 10
        while not on_reactor(bound) and time.monotonic() < deadline:
            time.sleep(0.01)
        (connection,) = on_reactor(bound)
        on_reactor(protocol.disconnect_all)  # what the reactor's "during shutdown" trigger runs
        driver = connection.driver
        assert driver.lost and driver.live.session_id not in driver.sessions.handles  # out of the registry
        assert read_to_eof(sock) == b""  # the socket went at once, without a stream end
