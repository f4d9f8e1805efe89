"""PostgreSQL stopped under a running listener: new logins get SASL ``temporary-auth-failure`` (RFC 6120
§6.5.12), live sessions stay up and keep chatting, and logins work again once it is back, without a restart
(issue 16 point 4).

The test runs its own PostgreSQL cluster (``tests.faults.servers``) and stops it with ``pg_ctl -m
immediate``, as a crash or a fail-over does. Timeouts only bound a hung server.
"""

from __future__ import annotations

from tests.faults.cluster import FaultCluster, chat, eventually, logged
from tests.im.agents import SlixAgent, is_message
from tests.transport.rawxmpp import auth_external, direct_tls, sasl, sasl_failure_condition
from tests.transport.tlsclient import client_context


def external_login_condition(cluster: FaultCluster, port: int, user: str) -> str | None:
    """A hand-driven SASL EXTERNAL login over direct TLS; the SASL failure condition (None: success)."""
    sock, features = direct_tls(port, client_context(cluster.directory, cluster.certs[user]))
    try:
        assert b"EXTERNAL" in features, features
        answer = sasl(sock, auth_external("="))
        return sasl_failure_condition(answer) if b"<failure" in answer else None
    finally:
        sock.close()


def test_postgres_down_refuses_new_logins_with_temporary_auth_failure_keeps_sessions_and_recovers(
    tmp_path, postgres
):
    cluster = FaultCluster(tmp_path, postgres.create_database("faults"))
    port, listener = cluster.runc2s("c2s")
    alice = SlixAgent(port, tmp_path, cluster.certs["alice"], "alice@localhost").start()
    bob = SlixAgent(port, tmp_path, cluster.certs["bob"], "bob@localhost").start()
    carol = None
    try:
        alice.send("<presence/>")  # bob sends his initial presence only while the database is down
        chat(alice, bob, "before")
        rows = "SELECT count(*) FROM transport_livesession"
        eventually(lambda: cluster.query(rows) == [(2,)], "both sessions in the registry")

        postgres.stop()
        # RFC 6120 §6.5.12: the failure is temporary; the client may try again later. Twice: the first
        # attempt may be the one that finds the pool's connection broken.
        assert external_login_condition(cluster, port, "carol") == "temporary-auth-failure"
        assert external_login_condition(cluster, port, "carol") == "temporary-auth-failure"
        logged(listener, "database (logins) unavailable")
        # The watcher polls the database five times a second: it fails, once logged, and the process stays.
        logged(listener, "database (session registry: termination watcher, leases) unavailable")
        # The live sessions stay up and keep chatting (stanzas to a full JID on this process).
        chat(alice, bob, "during")
        chat(bob, alice, "during, back")
        bob.send("<presence/>")  # not broadcast, not recorded now: the registry is restored afterwards
        assert not alice.disconnected.is_set() and not bob.disconnected.is_set()
        assert alice.stream_errors == [] and bob.stream_errors == []
        assert listener.process.poll() is None

        postgres.start()
        logged(listener, "database (session registry: termination watcher, leases) answers again")
        logged(listener, "session row(s) of this process restored")
        # The registry has bob's presence of the outage: a message to his bare JID reaches him (RFC 6121
        # §8.5.2.1.1), instead of waiting offline as for an account without available resources.
        alice.send("<message to='bob@localhost' type='chat'><body>to the bare JID</body></message>")
        bob.wait_for(is_message("alice@localhost", "to the bare JID"), "the message to bob's bare JID")
        carol = eventually(
            lambda: external_login_condition(cluster, port, "carol") is None, "a login after the restart"
        )
        carol = SlixAgent(port, tmp_path, cluster.certs["carol"], "carol@localhost").start()
        chat(carol, alice, "after")
        chat(alice, bob, "after")
        eventually(lambda: cluster.query(rows) == [(3,)], "the registry has every session again")
        assert alice.stream_errors == [] and bob.stream_errors == []
    finally:
        output = cluster.shutdown([alice, bob, carol])
    assert "Traceback" not in output, output
