"""The comparison's ejabberd and Prosody do the work ours does: they let in a user whose certificate chains to
the configured CA, and refuse one whose certificate a foreign CA signed (XEP-0178 §3, RFC 6120 §13.7.2).

Otherwise their login rate in bench/COMPARISON.md would be that of a server skipping the check. A server that
is not installed fails its test, unless XMPPAUTH_SKIP_COMPARISON=1 says to skip (.ci/run installs Debian's
ejabberd, prosody and prosody-modules).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from bench.clientcerts import make_identities
from bench.loadclient import LoginError, ScramKeyCache, contexts_for, xmpp_login
from bench.targets import ejabberd, prosody
from certauth.pki import build_ca, generate_private_key, issue_certificate
from certauth.pki.keys import private_key_to_pem
from tests.processes import SAME_ON_BOTH_LEGS, need_comparison_target

pytestmark = SAME_ON_BOTH_LEGS

DOMAIN = "localhost"


def _ca(name: str) -> tuple:
    key = generate_private_key("ec-p256")
    return build_ca(name, key, days=2), key


@pytest.fixture
def pki(tmp_path: Path) -> dict:
    """A CA, a server certificate from it in PEM files, and one user of it and one of a foreign CA."""
    ca_cert, ca_key = _ca("bench targets CA")
    server_key = generate_private_key("ec-p256")
    server_cert = issue_certificate(
        ca_cert, ca_key, server_key.public_key(), dns_names=[DOMAIN], server=True, days=2
    )
    files = {"cert": tmp_path / "server.pem", "key": tmp_path / "server.key", "ca": tmp_path / "ca.pem"}
    files["cert"].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(private_key_to_pem(server_key))
    files["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    trusted = make_identities(ca_cert, ca_key, DOMAIN, 1, tmp_path / "users", prefix="trusted")
    foreign = make_identities(*_ca("foreign CA"), DOMAIN, 1, tmp_path / "users", prefix="foreign")
    return {
        **files,
        "ca_key": ca_key,
        "trusted": contexts_for(trusted)[0],
        "foreign": contexts_for(foreign)[0],
    }


def _login(port: int, context) -> str:
    """'bound', or the login error's kind."""

    async def attempt() -> str:
        try:
            stream = await xmpp_login("127.0.0.1", port, DOMAIN, context, starttls=False)
        except LoginError as exc:
            return exc.kind
        stream.writer.close()
        return "bound"

    return asyncio.run(attempt())


def test_ejabberd_target_binds_a_user_of_its_ca_and_refuses_one_of_a_foreign_ca(tmp_path, pki):
    need_comparison_target("ejabberd", ejabberd.installed())
    server = ejabberd.start(tmp_path / "ejabberd", DOMAIN, pki["cert"], pki["key"], pki["ca"])
    try:
        assert _login(server.port, pki["trusted"]) == "bound"
        assert _login(server.port, pki["foreign"]) != "bound"
    finally:
        server.stop()


def test_prosody_target_binds_a_user_of_its_ca_and_refuses_one_of_a_foreign_ca(tmp_path, pki):
    need_comparison_target("Prosody (with prosody-modules)", prosody.installed())
    server = prosody.start(tmp_path / "prosody", DOMAIN, pki["cert"], pki["key"], pki["ca"], pki["ca_key"])
    try:
        assert _login(server.port, pki["trusted"]) == "bound"
        assert _login(server.port, pki["foreign"]) != "bound"
    finally:
        server.stop()


def _scram_login(port: int, context, user: str, password: str) -> str:
    """'bound', or the login error's kind, logging in as ``user`` with SCRAM-SHA-256 (over the same TLS)."""

    async def attempt() -> str:
        try:
            login = (user, password, ScramKeyCache())
            stream = await xmpp_login("127.0.0.1", port, DOMAIN, context, starttls=False, password=login)
        except LoginError as exc:
            return exc.kind
        stream.writer.close()
        return "bound"

    return asyncio.run(attempt())


PASSWORD = "bench target password"


def _password_checked(port: int, context) -> None:
    assert _scram_login(port, context, "alice", PASSWORD) == "bound"
    assert _scram_login(port, context, "alice", "wrong password") == "sasl: failure not-authorized"
    assert _scram_login(port, context, "nobody", PASSWORD) == "sasl: failure not-authorized"


def test_ejabberd_password_target_checks_the_password(tmp_path, pki):
    need_comparison_target("ejabberd", ejabberd.installed())
    server = ejabberd.start(
        tmp_path / "ejabberd", DOMAIN, pki["cert"], pki["key"], pki["ca"], users=["alice"], password=PASSWORD
    )
    try:
        _password_checked(server.port, pki["trusted"])
    finally:
        server.stop()


def test_prosody_password_target_checks_the_password(tmp_path, pki):
    need_comparison_target("Prosody (with prosody-modules)", prosody.installed())
    server = prosody.start(
        tmp_path / "prosody",
        DOMAIN,
        pki["cert"],
        pki["key"],
        pki["ca"],
        pki["ca_key"],
        users=["alice"],
        password=PASSWORD,
    )
    try:
        _password_checked(server.port, pki["trusted"])
    finally:
        server.stop()
