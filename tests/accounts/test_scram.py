"""The pure SCRAM / PLAIN server against the RFCs' own exchanges, and each way a message is refused.

Specs: RFC 5802 §5 (the SCRAM-SHA-1 example), RFC 7677 §3 (the SCRAM-SHA-256 example), RFC 5802 §6 (channel
binding and the 'y' downgrade flag), RFC 4616 (PLAIN), RFC 6120 §6.5 (conditions).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from accounts.scram import (
    Credentials,
    PlainServer,
    ScramServer,
    check_password,
    derive_keys,
    made_up_credentials,
)

JID = "user@example.com"


def credentials(hash_name: str, salt_b64: str, active: bool = True) -> Credentials:
    keys = derive_keys(hash_name, "pencil", 4096, base64.b64decode(salt_b64))
    return Credentials(JID, {hash_name: keys}, active=active)


def lookup_for(creds: Credentials):
    def lookup(username: str) -> Credentials:
        if username != "user":
            return made_up_credentials(f"{username}@example.com", username, ("sha", "sha256"), 4096)
        return creds

    return lookup


def test_rfc7677_scram_sha256_example():
    creds = credentials("sha256", "W22ZaJ0SNY7soEsUEjb6gQ==")
    server = ScramServer("SCRAM-SHA-256", lookup_for(creds), nonce=lambda: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    first = server.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    assert first.challenge == (
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    final = server.step(
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert final.jid == JID
    assert final.additional == b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def test_rfc5802_scram_sha1_example():
    creds = credentials("sha", "QSXCR+Q6sek8bf92")
    server = ScramServer("SCRAM-SHA-1", lookup_for(creds), nonce=lambda: "3rfcNHYJY1ZVvWVs7j")
    first = server.step(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
    assert first.challenge == b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
    final = server.step(b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=")
    assert (final.jid, final.additional) == (JID, b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")


def _client_final(
    hash_name: str,
    password: str,
    salt: bytes,
    iterations: int,
    first_bare: str,
    server_first: str,
    nonce: str,
    cbind: bytes,
) -> bytes:
    """An independent client computation (RFC 5802 §3) to drive the server in the cases below."""
    algo = {"sha": "sha1", "sha256": "sha256"}[hash_name]
    salted = hashlib.pbkdf2_hmac(algo, password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", algo).digest()
    stored = hashlib.new(algo, client_key).digest()
    without_proof = f"c={base64.b64encode(cbind).decode()},r={nonce}"
    message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.new(stored, message, algo).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


def _run(
    server: ScramServer, gs2: str, password: str = "pencil", cbind_data: bytes = b"", name: str = "user"
):
    first_bare = f"n={name},r=abcdef"
    first = server.step(f"{gs2}{first_bare}".encode())
    if first.challenge is None:
        return first
    server_first = first.challenge.decode()
    fields = dict(item.split("=", 1) for item in server_first.split(","))
    return server.step(
        _client_final(
            server.hash,
            password,
            base64.b64decode(fields["s"]),
            int(fields["i"]),
            first_bare,
            server_first,
            fields["r"],
            gs2.encode() + cbind_data,
        )
    )


def test_wrong_password_is_not_authorized():
    creds = credentials("sha256", "W22ZaJ0SNY7soEsUEjb6gQ==")
    step = _run(ScramServer("SCRAM-SHA-256", lookup_for(creds)), "n,,", password="pen")
    assert (step.condition, step.jid) == ("not-authorized", None) and "wrong password" in step.reason


def test_unknown_user_gets_a_challenge_and_then_not_authorized():
    creds = credentials("sha256", "W22ZaJ0SNY7soEsUEjb6gQ==")
    server = ScramServer("SCRAM-SHA-256", lookup_for(creds))
    step = _run(server, "n,,", name="nobody")
    assert step.condition == "not-authorized" and "unknown user" in step.reason


def test_unknown_users_salt_is_stable_so_it_cannot_be_told_apart_by_asking_twice():
    creds = credentials("sha256", "W22ZaJ0SNY7soEsUEjb6gQ==")
    one = ScramServer("SCRAM-SHA-256", lookup_for(creds)).step(b"n,,n=nobody,r=abc").challenge
    two = ScramServer("SCRAM-SHA-256", lookup_for(creds)).step(b"n,,n=nobody,r=abc").challenge
    assert one.split(b",")[1:] == two.split(b",")[1:]


def test_disabled_account_with_the_right_password_is_account_disabled():
    creds = credentials("sha256", "W22ZaJ0SNY7soEsUEjb6gQ==", active=False)
    step = _run(ScramServer("SCRAM-SHA-256", lookup_for(creds)), "n,,")
    assert step.condition == "account-disabled"
    step = _run(ScramServer("SCRAM-SHA-256", lookup_for(creds)), "n,,", password="x")
    assert step.condition == "not-authorized"


def test_plus_with_the_right_binding_succeeds_and_a_wrong_binding_is_refused():
    creds = credentials("sha256", "W22ZaJ0SNY7soEsUEjb6gQ==")
    bindings = {"tls-exporter": b"E" * 32, "tls-server-end-point": b"S" * 32}
    ok = _run(
        ScramServer("SCRAM-SHA-256-PLUS", lookup_for(creds), channel_bindings=bindings, plus_offered=True),
        "p=tls-exporter,,",
        cbind_data=b"E" * 32,
    )
    assert ok.jid == JID
    ok = _run(
        ScramServer("SCRAM-SHA-256-PLUS", lookup_for(creds), channel_bindings=bindings, plus_offered=True),
        "p=tls-server-end-point,,",
        cbind_data=b"S" * 32,
    )
    assert ok.jid == JID
    bad = _run(
        ScramServer("SCRAM-SHA-256-PLUS", lookup_for(creds), channel_bindings=bindings, plus_offered=True),
        "p=tls-exporter,,",
        cbind_data=b"X" * 32,
    )
    assert bad.condition == "not-authorized" and "channel binding does not match" in bad.reason


def test_plus_with_an_unavailable_binding_type_is_refused():
    creds = credentials("sha256", "W22ZaJ0SNY7soEsUEjb6gQ==")
    server = ScramServer("SCRAM-SHA-256-PLUS", lookup_for(creds), channel_bindings={"tls-exporter": b"E"})
    step = server.step(b"p=tls-unique,,n=user,r=abc")
    assert step.condition == "not-authorized" and "tls-unique" in step.reason


def test_y_flag_when_plus_was_offered_is_a_downgrade():
    creds = credentials("sha256", "W22ZaJ0SNY7soEsUEjb6gQ==")
    refused = ScramServer("SCRAM-SHA-256", lookup_for(creds), plus_offered=True).step(b"y,,n=user,r=abc")
    assert refused.condition == "not-authorized" and "downgrade" in refused.reason
    allowed = _run(ScramServer("SCRAM-SHA-256", lookup_for(creds), plus_offered=False), "y,,")
    assert allowed.jid == JID


@pytest.mark.parametrize(
    "message",
    [
        b"n=user,r=abc",
        b"x,,n=user,r=abc",
        b"n,,m=ext,n=user,r=abc",
        b"n,,n=us=er,r=abc",
        b"n,,n=user",
        b"p=tls-exporter,,n=user,r=abc",
        b"n,,n=user,r=a,b",
        b"\xff",
    ],
)
def test_malformed_client_first_is_malformed_request(message):
    creds = credentials("sha256", "W22ZaJ0SNY7soEsUEjb6gQ==")
    step = ScramServer("SCRAM-SHA-256", lookup_for(creds)).step(message)
    assert step.condition == "malformed-request", step


def test_authzid_other_than_the_account_is_invalid_authzid():
    creds = credentials("sha256", "W22ZaJ0SNY7soEsUEjb6gQ==")
    assert _run(ScramServer("SCRAM-SHA-256", lookup_for(creds)), f"n,a={JID},").jid == JID
    step = _run(ScramServer("SCRAM-SHA-256", lookup_for(creds)), "n,a=boss@example.com,")
    assert step.condition == "invalid-authzid"


def test_plain():
    creds = credentials("sha256", "W22ZaJ0SNY7soEsUEjb6gQ==")
    assert PlainServer(lookup_for(creds)).step(b"\0user\0pencil").jid == JID
    assert PlainServer(lookup_for(creds)).step(b"\0user\0pen").condition == "not-authorized"
    assert PlainServer(lookup_for(creds)).step(b"\0nobody\0pencil").condition == "not-authorized"
    assert PlainServer(lookup_for(creds)).step(b"user\0pencil").condition == "malformed-request"
    assert (
        PlainServer(lookup_for(creds)).step(b"other@example.com\0user\0pencil").condition == "invalid-authzid"
    )


def test_keys_do_not_contain_the_password_and_check_it():
    keys = derive_keys("sha256", "pencil", 4096)
    assert check_password(keys, "pencil") and not check_password(keys, "Pencil")
    assert b"pencil" not in keys.stored_key + keys.server_key + keys.salt


def test_account_without_a_key_for_the_hash_is_not_authorized_and_says_why():
    creds = credentials("sha256", "W22ZaJ0SNY7soEsUEjb6gQ==")  # only SHA-256 keys stored
    server = ScramServer("SCRAM-SHA-1", lookup_for(creds))
    step = _run(server, "n,,")
    assert step.condition == "not-authorized" and "no sha key stored for user@example.com" in step.reason
