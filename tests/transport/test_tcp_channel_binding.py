"""SCRAM -PLUS over TCP: channel binding to the TLS connection (RFC 5802 §6), the XEP-0440 list of binding
types, a binding that does not match, and the downgrade a stripped -PLUS would be (issue 14 §1).

The client side is computed independently of the server: with pyOpenSSL (``export_keying_material``, the
server's certificate as received) for TLS 1.3, and by slixmpp itself (``tls-unique``) for TLS 1.2.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import socket
import ssl
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

from accounts.models import Account, Domain
from accounts.passwords import set_password
from certauth.models import AuthEvent
from tests.transport.rawxmpp import FEATURES_END, STREAM_HEADER
from tests.transport.xmppclient import slixmpp_login
from xmppauth.config import AuthConfig, PasswordOptions

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct horse battery staple"
PLUS_AUTH = AuthConfig(
    methods=("rdbms", "pki"),
    sasl_mechanisms=("scram_sha256_plus", "scram_sha256", "external"),
    password=PasswordOptions(hashes=("sha256",), scram_iterations=4096),
)


@pytest.fixture
def alice(db):
    domain, _ = Domain.objects.get_or_create(name="localhost")
    account = Account.objects.create(localpart="alice", domain=domain)
    set_password(account, PASSWORD, PLUS_AUTH.password, validate=False)
    return account


class Tls13Client:
    """Direct TLS (XEP-0368) with pyOpenSSL, so the test can export keying material as the client."""

    def __init__(self, port: int) -> None:
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setblocking(True)  # pyOpenSSL wants a blocking socket; a receive timeout bounds a hang
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 10, 0))
        self.conn = SSL.Connection(ctx, self.sock)
        self.conn.set_connect_state()
        self.conn.set_tlsext_host_name(b"localhost")
        self.conn.do_handshake()

    def send(self, data: bytes) -> None:
        self.conn.sendall(data)

    def read_until(self, *markers: bytes) -> bytes:
        data = b""
        while not any(marker in data for marker in markers):
            try:
                chunk = self.conn.recv(65536)
            except (SSL.ZeroReturnError, SSL.SysCallError):
                break
            if not chunk:
                break
            data += chunk
        return data

    def bindings(self) -> dict[str, bytes]:
        """What RFC 9266 §2 and RFC 5929 §4.1 say, computed on the client side."""
        server_cert = self.conn.get_peer_certificate().to_cryptography()
        algorithm = server_cert.signature_hash_algorithm
        if isinstance(algorithm, hashes.SHA1):
            algorithm = hashes.SHA256()
        digest = hashes.Hash(algorithm)
        digest.update(server_cert.public_bytes(Encoding.DER))
        return {
            "tls-exporter": self.conn.export_keying_material(b"EXPORTER-Channel-Binding", 32),
            "tls-server-end-point": digest.finalize(),
        }

    def close(self) -> None:
        self.sock.close()


def scram_login(client: Tls13Client, mechanism: str, gs2: str, cbind_data: bytes, password: str = PASSWORD):
    """A SCRAM-SHA-256 client (RFC 5802 §3) over the raw stream; the server's answer to the final message."""
    first_bare = "n=alice,r=clientnonce123"
    message = base64.b64encode(f"{gs2}{first_bare}".encode()).decode()
    client.send(
        f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mechanism}'>{message}</auth>".encode()
    )
    reply = client.read_until(b"</challenge>", b"</failure>")
    match = re.search(rb"<challenge[^>]*>([^<]+)</challenge>", reply)
    if match is None:
        return reply
    server_first = base64.b64decode(match.group(1)).decode()
    fields = dict(item.split("=", 1) for item in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(fields["s"]), int(fields["i"]))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored = hashlib.sha256(client_key).digest()
    without_proof = f"c={base64.b64encode(gs2.encode() + cbind_data).decode()},r={fields['r']}"
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    proof = bytes(
        a ^ b for a, b in zip(client_key, hmac.new(stored, auth_message, "sha256").digest(), strict=True)
    )
    final = base64.b64encode(f"{without_proof},p={base64.b64encode(proof).decode()}".encode()).decode()
    client.send(f"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{final}</response>".encode())
    return client.read_until(b"</success>", b"</failure>")


def open_stream(port: int) -> tuple[Tls13Client, bytes]:
    client = Tls13Client(port)
    client.send(STREAM_HEADER)
    return client, client.read_until(*FEATURES_END)


def test_plus_is_offered_with_the_xep0440_binding_types(c2s, alice):
    port = c2s("tls", auth=PLUS_AUTH, disconnect_on_failure=False)
    client, features = open_stream(port)
    assert re.findall(rb"<mechanism>([^<]+)</mechanism>", features) == [
        b"SCRAM-SHA-256-PLUS",
        b"SCRAM-SHA-256",
    ]
    assert b'<sasl-channel-binding xmlns="urn:xmpp:sasl-cb:0">' in features
    types = re.findall(rb'<channel-binding type="([^"]+)"', features)
    assert types == [b"tls-exporter", b"tls-server-end-point"]  # TLS 1.3: no tls-unique (RFC 9266)
    client.close()


@pytest.mark.parametrize("kind", ["tls-exporter", "tls-server-end-point"])
def test_plus_with_the_connections_binding_logs_in(c2s, alice, kind):
    port = c2s("tls", auth=PLUS_AUTH, disconnect_on_failure=False)
    client, _ = open_stream(port)
    reply = scram_login(client, "SCRAM-SHA-256-PLUS", f"p={kind},,", client.bindings()[kind])
    assert b"<success" in reply, reply
    client.close()
    assert AuthEvent.objects.order_by("-id").first().reason == "SCRAM-SHA-256-PLUS password"


def test_binding_of_another_connection_is_refused(c2s, alice):
    port = c2s("tls", auth=PLUS_AUTH, disconnect_on_failure=False)
    other, _ = open_stream(port)
    client, _ = open_stream(port)
    reply = scram_login(client, "SCRAM-SHA-256-PLUS", "p=tls-exporter,,", other.bindings()["tls-exporter"])
    assert b"<not-authorized/>" in reply, reply  # a man in the middle relays the proof over his own TLS
    event = AuthEvent.objects.order_by("-id").first()
    assert event.condition == "not-authorized" and "channel binding does not match" in event.reason
    client.close()
    other.close()


def test_y_flag_after_plus_was_offered_is_a_downgrade(c2s, alice):
    port = c2s("tls", auth=PLUS_AUTH, disconnect_on_failure=False)
    client, _ = open_stream(port)
    reply = scram_login(client, "SCRAM-SHA-256", "y,,", b"")
    assert b"<not-authorized/>" in reply, reply  # RFC 5802 §6: someone stripped -PLUS from the features
    assert "downgrade" in AuthEvent.objects.order_by("-id").first().reason
    client.close()


def test_without_plus_configured_the_y_flag_is_fine(c2s, alice):
    auth = AuthConfig(methods=("rdbms",), sasl_mechanisms=("scram_sha256",), password=PLUS_AUTH.password)
    port = c2s("tls", auth=auth, disconnect_on_failure=False)
    client, features = open_stream(port)
    assert b"sasl-channel-binding" not in features
    assert b"<success" in scram_login(client, "SCRAM-SHA-256", "y,,", b"")
    client.close()


def test_slixmpp_scram_sha256_plus_over_tls12(c2s, tmp_path, alice):
    """slixmpp binds with tls-unique on TLS 1.2 (Python's ssl has no tls-exporter), with EMS (RFC 7627)."""
    port = c2s("starttls", auth=PLUS_AUTH, disconnect_on_failure=False)
    outcome = slixmpp_login(
        port,
        tmp_path,
        None,
        mechanism="SCRAM-SHA-256-PLUS",
        password=PASSWORD,
        maximum_version=ssl.TLSVersion.TLSv1_2,
    )
    assert outcome.bound_jid is not None and outcome.bound_jid.startswith("alice@localhost/"), outcome
    assert AuthEvent.objects.order_by("-id").first().reason == "SCRAM-SHA-256-PLUS password"
