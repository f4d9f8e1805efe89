"""Password mechanisms in the sans-I/O core (RFC 6120 §6.4, RFC 5802, XEP-0440), with bytes.

The core decodes and frames; the verdicts come from the adapter's authenticator, here the pure
``accounts.scram`` server with an in-memory account (no database).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from accounts.scram import Credentials, PlainServer, ScramServer, derive_keys
from transport.xmpp import IdentityDecision, PasswordStepRequest, State
from transport.xmpp import namespaces as ns

from .streamkit import DOMAIN, JULIET, Client, b64, condition_of, tls_client

PASSWORD = "balcony at night"
KEYS = {"sha256": derive_keys("sha256", PASSWORD, 4096), "sha": derive_keys("sha", PASSWORD, 4096)}
MECHANISMS = ("scram_sha256_plus", "scram_sha256", "plain", "external")
AUTH = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{}'>{}</auth>"
EMPTY_AUTH = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{}'/>"
RESPONSE = "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>"
ABORT = "<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"


def lookup(username: str) -> Credentials:
    return Credentials(f"{username}@{DOMAIN}", KEYS, exists=username == "juliet")


class Judge:
    """What CertificateAuthenticator.authenticate_password does, minus the database and the events."""

    def __init__(self) -> None:
        self.server = None

    def __call__(self, request: PasswordStepRequest) -> IdentityDecision:
        if request.first:
            if request.mechanism == "PLAIN":
                self.server = PlainServer(lookup)
            else:
                self.server = ScramServer(
                    request.mechanism,
                    lookup,
                    channel_bindings=request.channel_bindings,
                    plus_offered=request.plus_offered,
                )
        step = self.server.step(request.data)
        return IdentityDecision(
            jid=step.jid,
            condition=step.condition,
            reason=step.reason,
            challenge=step.challenge,
            additional_data=step.additional,
        )


def password_client(bindings: dict[str, bytes] | None = None, *, tls: bool = True) -> Client:
    from transport.xmpp import C2SConnection

    from .streamkit import stream_settings

    settings = stream_settings(
        tls_mode="tls" if tls else "starttls", sasl_mechanisms=MECHANISMS, password_auth=True
    )
    conn = C2SConnection(settings, tls_active=tls)
    if tls:
        conn.tls_established(None, False, None, channel_bindings=bindings)
    client = Client(conn)
    client.features = client.open()  # type: ignore[attr-defined]
    return client


def offered(client: Client) -> list[str]:
    listing = client.features[0].find(ns.qname(ns.SASL, "mechanisms"))
    return [] if listing is None else [m.text for m in listing]


def run(client: Client, judge: Judge) -> list:
    """Answer every PasswordStepRequest the client's last input produced; the server's elements."""
    out = []
    while True:
        requests = [e for e in client.events if isinstance(e, PasswordStepRequest)]
        if not requests:
            break
        client.events = [e for e in client.events if not isinstance(e, PasswordStepRequest)]
        client.events.extend(client.conn.auth_result(judge(requests[-1])))
        out.extend(client.read())
    return out


def scram_final(server_first: str, first_bare: str, gs2: bytes) -> str:
    fields = dict(item.split("=", 1) for item in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), base64.b64decode(fields["s"]), int(fields["i"]))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    without_proof = f"c={base64.b64encode(gs2).decode()},r={fields['r']}"
    message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.new(hashlib.sha256(client_key).digest(), message, "sha256").digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    return f"{without_proof},p={base64.b64encode(proof).decode()}"


def test_password_mechanisms_follow_the_configured_order_and_plus_needs_a_binding():
    assert offered(password_client({"tls-exporter": b"x" * 32})) == [
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-256",
        "PLAIN",
    ]
    assert offered(password_client({})) == ["SCRAM-SHA-256", "PLAIN"]


def test_xep0440_lists_the_binding_types_only_with_plus():
    features = password_client({"tls-exporter": b"x", "tls-server-end-point": b"y"}).features[0]
    binding = features.find(ns.SASL_CHANNEL_BINDING)
    assert [c.get("type") for c in binding] == ["tls-exporter", "tls-server-end-point"]
    assert password_client({}).features[0].find(ns.SASL_CHANNEL_BINDING) is None


def test_no_password_mechanism_without_tls():
    client = password_client(tls=False)
    assert offered(client) == []
    client.send(AUTH.format("PLAIN", b64("\0juliet\0" + PASSWORD)))
    assert condition_of(client.read_one(), ns.SASL) == "encryption-required"
    assert not [e for e in client.events if isinstance(e, PasswordStepRequest)]


def test_scram_exchange_with_challenge_and_additional_data_in_success():
    client, judge = password_client(), Judge()
    first_bare = "n=juliet,r=nonce1"
    client.send(AUTH.format("SCRAM-SHA-256", b64("n,," + first_bare)))
    (challenge,) = run(client, judge)
    assert challenge.tag == ns.qname(ns.SASL, "challenge") and client.conn.state is State.SASL_CHALLENGE
    server_first = base64.b64decode(challenge.text).decode()
    client.send(RESPONSE.format(b64(scram_final(server_first, first_bare, b"n,,"))))
    (success,) = run(client, judge)
    assert success.tag == ns.qname(ns.SASL, "success")
    assert base64.b64decode(success.text).startswith(b"v=")  # RFC 6120 §6.4.6: the server signature
    assert client.conn.jid == JULIET


def test_empty_auth_gets_an_empty_challenge_then_the_first_message_is_the_response():
    client, judge = password_client(), Judge()
    client.send(EMPTY_AUTH.format("PLAIN"))
    (challenge,) = client.read()
    assert challenge.tag == ns.qname(ns.SASL, "challenge") and not challenge.text  # RFC 6120 §6.4.2
    client.send(RESPONSE.format(b64("\0juliet\0" + PASSWORD)))
    requests = [e for e in client.events if isinstance(e, PasswordStepRequest)]
    assert requests[-1].first is True
    assert run(client, judge)[0].tag == ns.qname(ns.SASL, "success")


def test_wrong_password_then_abort_mid_exchange_then_success():
    client, judge = password_client(), Judge()
    client.send(AUTH.format("PLAIN", b64("\0juliet\0wrong")))
    (failure,) = run(client, judge)
    assert condition_of(failure, ns.SASL) == "not-authorized"
    client.send(AUTH.format("SCRAM-SHA-256", b64("n,,n=juliet,r=abc")))
    run(client, judge)
    client.send(ABORT)
    assert condition_of(client.read_one(), ns.SASL) == "aborted"  # RFC 6120 §6.4.4
    client.send(AUTH.format("PLAIN", b64("\0juliet\0" + PASSWORD)))
    assert run(client, judge)[0].tag == ns.qname(ns.SASL, "success")


@pytest.mark.parametrize("text", ["%%%", "bm90IGJhc2U2NA=x"])
def test_bad_base64_is_incorrect_encoding(text):
    client = password_client()
    client.send(AUTH.format("PLAIN", text))
    assert condition_of(client.read_one(), ns.SASL) == "incorrect-encoding"


def test_three_failures_end_the_stream():
    client, judge = password_client(), Judge()
    for _ in range(3):
        client.send(AUTH.format("PLAIN", b64("\0juliet\0wrong")))
        run(client, judge)
    assert client.conn.closed and client.closes()[-1].condition == "policy-violation"  # RFC 6120 §6.4.5


def test_plus_request_carries_the_bindings_and_that_plus_was_offered():
    client = password_client({"tls-exporter": b"E" * 32})
    client.send(AUTH.format("SCRAM-SHA-256-PLUS", b64("p=tls-exporter,,n=juliet,r=abc")))
    (request,) = [e for e in client.events if isinstance(e, PasswordStepRequest)]
    assert request.channel_bindings == {"tls-exporter": b"E" * 32} and request.plus_offered and request.first
    assert "EEEE" not in repr(request)  # the binding data stays out of logs


def test_plus_not_offered_is_invalid_mechanism():
    client = password_client({})
    client.send(AUTH.format("SCRAM-SHA-256-PLUS", b64("p=tls-exporter,,n=juliet,r=abc")))
    assert condition_of(client.read_one(), ns.SASL) == "invalid-mechanism"


def test_tls_without_tls_bindings_kwarg_keeps_external_behaviour():
    assert offered(tls_client()) == ["EXTERNAL"]
