"""The seed's "certificate authentication only" config, as an operator runs it from a clean directory.

Only the ports change (to free ones): ``manage.py migrate``, ``bootstrap`` (our CA, whose certificate becomes
the config's ``ca.pem``, and the server certificate the listener falls back to), ``pki issue``, then
``runc2s``; slixmpp logs in over STARTTLS with the issued certificate and its password-protected key.
Specs: RFC 6120 §5 (STARTTLS), §6 and XEP-0178 (SASL EXTERNAL), §7 (binding); DESIGN §4 (config spellings).
"""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from tests.certs import Issued
from tests.processes import SAME_ON_BOTH_LEGS, free_port
from tests.seed_configs import SEED_EXAMPLE_1, SEED_EXAMPLE_2
from tests.transport.runc2s_process import Runc2s, environment, manage
from tests.transport.xmppclient import slixmpp_login

pytestmark = SAME_ON_BOTH_LEGS

P12_PASSWORD = "pw-seed-config"
ALICE_PASSWORD = "alice has a long password"


def _run(env: dict[str, str], *args: str) -> str:
    result = manage(env, *args)
    assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def test_seed_certificate_only_config_logs_in_a_client_issued_by_pki_issue(tmp_path):
    c2s_port, http_port = free_port(), free_port()
    config = tmp_path / "xmppauth.toml"
    text = SEED_EXAMPLE_1.replace("port = 5222", f"port = {c2s_port}").replace(
        "port = 5285", f"port = {http_port}"
    )
    config.write_text(text)
    env = environment(tmp_path, config)
    _run(env, "migrate", "--noinput")
    _run(env, "bootstrap")
    (tmp_path / "ca.pem").write_bytes((tmp_path / "var" / "pki" / "ca.pem").read_bytes())  # our CA
    out = tmp_path / "issued"
    _run({**env, "XMPPAUTH_P12_PASSWORD": P12_PASSWORD}, "pki", "issue", "alice@localhost", "--out", str(out))
    cert = x509.load_pem_x509_certificate((out / "alice@localhost.crt.pem").read_bytes())
    key = load_pem_private_key((out / "alice@localhost.key.pem").read_bytes(), P12_PASSWORD.encode())
    alice = Issued(cert, key)  # type: ignore[arg-type]

    server = Runc2s(env)
    try:
        server.wait_for(f"c2s listening on 0.0.0.0:{c2s_port} (mode starttls, verify_mode peer")
        outcome = slixmpp_login(c2s_port, tmp_path, alice)  # STARTTLS: the seed sets no tls.mode
        server.wait_for("session bound to alice@localhost/")
    finally:
        output = server.stop()
        print(output)
    assert outcome.bound_jid is not None, outcome
    assert re.fullmatch(r"alice@localhost/xmppauth-[0-9a-f]{16}", outcome.bound_jid), outcome
    assert "Traceback" not in output


def test_seed_rdbms_and_pki_config_logs_one_account_in_with_its_password_and_with_its_certificate(tmp_path):
    """The seed's second example (issue 14): "a client certificate ... or password", for the same account.

    Its listener keeps MongooseIM's default ``disconnect_on_failure = true``, so the handshake asks every
    client for a valid certificate; the password then goes over that connection with SCRAM-SHA-1 (the seed's
    only password mechanism), and EXTERNAL over another.
    """
    c2s_port = free_port()
    config = tmp_path / "xmppauth.toml"
    config.write_text(SEED_EXAMPLE_2.replace("port = 5222", f"port = {c2s_port}"))
    env = environment(tmp_path, config)
    _run(env, "migrate", "--noinput")
    _run(env, "bootstrap")
    (tmp_path / "ca.pem").write_bytes((tmp_path / "var" / "pki" / "ca.pem").read_bytes())
    out = tmp_path / "issued"
    _run({**env, "XMPPAUTH_P12_PASSWORD": P12_PASSWORD}, "pki", "issue", "alice@localhost", "--out", str(out))
    set_password = manage(env, "account", "passwd", "alice@localhost", input=ALICE_PASSWORD + "\n")
    assert set_password.returncode == 0, set_password.stdout + set_password.stderr
    cert = x509.load_pem_x509_certificate((out / "alice@localhost.crt.pem").read_bytes())
    key = load_pem_private_key((out / "alice@localhost.key.pem").read_bytes(), P12_PASSWORD.encode())
    alice = Issued(cert, key)  # type: ignore[arg-type]

    server = Runc2s(env)
    try:
        server.wait_for(f"c2s listening on 0.0.0.0:{c2s_port} (mode starttls, verify_mode peer")
        by_password = slixmpp_login(
            c2s_port, tmp_path, alice, mechanism="SCRAM-SHA-1", password=ALICE_PASSWORD
        )
        wrong = slixmpp_login(c2s_port, tmp_path, alice, mechanism="SCRAM-SHA-1", password="not hers")
        by_certificate = slixmpp_login(c2s_port, tmp_path, alice)
    finally:
        output = server.stop()
        print(output)
    for outcome in (by_password, by_certificate):
        assert outcome.bound_jid is not None and outcome.bound_jid.startswith("alice@localhost/"), outcome
    assert wrong.bound_jid is None and wrong.sasl_failures == ["not-authorized"], wrong
    assert "Traceback" not in output and ALICE_PASSWORD not in output
