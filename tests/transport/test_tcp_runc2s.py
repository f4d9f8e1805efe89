"""`manage.py runc2s` as operators run it: its own process, the config's listeners, clear start-up errors."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time

import pytest

from tests.processes import SAME_ON_BOTH_LEGS, free_port
from tests.transport.runc2s_process import Runc2s, environment, manage
from tests.transport.tlsclient import client_context, make_pki
from tests.transport.xmppclient import slixmpp_login

pytestmark = SAME_ON_BOTH_LEGS


def _toml(port: int, certfile, keyfile, cacertfile, mode: str = "tls") -> str:
    lines = [
        '[general]\n  hosts = ["localhost"]\n',
        "[[listen.c2s]]",
        f"  port = {port}",
        '  ip_address = "127.0.0.1"',
        f'  tls.mode = "{mode}"',
    ]
    if certfile:
        lines += [f'  tls.certfile = "{certfile}"', f'  tls.keyfile = "{keyfile}"']
    lines += [f'  tls.cacertfile = "{cacertfile}"', '  tls.verify_mode = "peer"', ""]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    """A scratch directory whose SQLite database is migrated (once for the module: migrate takes seconds)."""
    directory = tmp_path_factory.mktemp("runc2s")
    config = directory / "xmppauth.toml"
    config.write_text('[general]\n  hosts = ["localhost"]\n')
    result = manage(environment(directory, config), "migrate", "--noinput")
    assert result.returncode == 0, result.stdout + result.stderr
    return directory


def _direct_tls_runc2s(migrated, name: str):
    """A runc2s on a free port (direct TLS, verify_mode peer, a fresh test PKI): (pki, port, server)."""
    pki = make_pki(migrated)
    cafile = migrated / "ca.pem"
    cafile.write_bytes(pki.ca.pem)
    port = free_port()
    config = migrated / f"{name}.toml"
    config.write_text(_toml(port, pki.server_certfile, pki.server_keyfile, cafile))
    return pki, port, Runc2s(environment(migrated, config))


def test_runc2s_listens_on_the_configured_port_and_logs_a_client_in(migrated):
    pki, port, server = _direct_tls_runc2s(migrated, "direct")
    try:
        server.wait_for(f"runc2s ready: 127.0.0.1:{port}\n")  # the command's own line, not the log
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        with client_context(migrated, pki.valid).wrap_socket(raw, server_hostname="localhost") as sock:
            assert sock.version() in ("TLSv1.2", "TLSv1.3")
        # A real client, against the command's own database (the pki method creates the account).
        outcome = slixmpp_login(port, migrated, pki.valid, direct_tls=True)
        assert outcome.bound_jid is not None, outcome
        assert outcome.bound_jid.split("/")[0] == "alice@localhost"
        server.wait_for("session bound to alice@localhost/")
    finally:
        output = server.stop()
        print(output)
    assert "Traceback" not in output


def test_runc2s_without_certfile_or_bootstrap_certificate_exits_naming_the_file(migrated):
    config = migrated / "nocert.toml"
    config.write_text(_toml(free_port(), None, None, migrated / "ca.pem"))
    result = manage(environment(migrated, config), "runc2s", timeout=60)
    assert result.returncode != 0
    assert "server.pem" in result.stderr and "bootstrap" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_write_lock_held_elsewhere_stalls_no_session_and_logins_complete_once_it_is_released(migrated):
    """On SQLite a session's database calls run on the event loop (xmppauth.loopdb), but never wait there:
    while another connection (a CRL import, the admin, another listener) holds the database's write lock, a
    login waits for it in a worker thread, and every other connection is answered meanwhile (issue 17)."""
    pki, port, server = _direct_tls_runc2s(migrated, "locked")
    holder = None
    try:
        server.wait_for(f"runc2s ready: 127.0.0.1:{port}\n")
        first = slixmpp_login(port, migrated, pki.valid, direct_tls=True)  # the account, and a returning cert
        assert first.bound_jid is not None, first

        holder = sqlite3.connect(migrated / "db.sqlite3", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # the write lock, held by this test
        locked_at = time.monotonic()
        outcomes = []

        def log_in() -> None:
            outcomes.append(slixmpp_login(port, migrated, pki.valid, direct_tls=True, timeout=60))

        login = threading.Thread(target=log_in)
        login.start()
        time.sleep(1.0)  # the login is now waiting for the lock (its auth event is a write)
        assert login.is_alive(), outcomes

        # Meanwhile another client's stream is answered: the loop is not waiting for the lock.
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        with client_context(migrated, pki.valid).wrap_socket(raw, server_hostname="localhost") as sock:
            sock.settimeout(5)
            sock.sendall(
                b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' to='localhost' version='1.0' "
                b"xmlns:stream='http://etherx.jabber.org/streams'>"
            )
            received = b""
            while b"</stream:features>" not in received:
                chunk = sock.recv(4096)
                assert chunk, received
                received += chunk
            answered_after = time.monotonic() - locked_at
        assert b"EXTERNAL" in received
        assert login.is_alive()  # still waiting: the features above did not wait for it

        holder.execute("ROLLBACK")
        login.join(60)
        assert outcomes and outcomes[0].bound_jid is not None, outcomes
        assert answered_after < 5.0
    finally:
        if holder is not None:
            holder.close()
        output = server.stop()
        print(output)
    assert "Traceback" not in output
