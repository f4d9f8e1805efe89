"""A listener process killed with SIGKILL (issue 16 point 4), on PostgreSQL and Redis of the test's own.

Its sessions leave the registry within the liveness bound (``process_liveness_seconds``, swept by the
surviving listener), long before their lease would have run out; nothing stored is lost: accounts, auth
events and offline messages are all there after the kill, the offline messages are delivered at the next
login, and a message sent to the dead listener's user afterwards is stored for her (XEP-0160, RFC 6121
§8.5). Timeouts only bound a hung server.
"""

from __future__ import annotations

from datetime import UTC, datetime

from tests.faults.cluster import FaultCluster, eventually
from tests.im.agents import SlixAgent, is_message

BOUND = 2  # [xmppauth] process_liveness_seconds; the session lease stays 30 s

STORED = {
    "accounts": "SELECT count(*) FROM accounts_account",
    "auth events": "SELECT count(*) FROM certauth_authevent",
    "offline messages": "SELECT count(*) FROM accounts_offlinemessage",
}


def test_sigkilled_listener_leaves_the_registry_within_the_liveness_bound_and_nothing_stored_is_lost(
    tmp_path, postgres, redis_server
):
    redis = redis_server
    cluster = FaultCluster(tmp_path, postgres.create_database("faults"), redis.url())
    router = cluster.router()
    port_live, survivor = cluster.runc2s("survivor", process_liveness_seconds=BOUND)
    port_dead, doomed = cluster.runc2s("doomed", process_liveness_seconds=BOUND)
    agents: list[SlixAgent] = []

    def login(port: int, user: str, resource: str = "tcp") -> SlixAgent:
        agent = SlixAgent(port, tmp_path, cluster.certs[user], f"{user}@localhost", resource=resource).start()
        agents.append(agent)
        return agent

    try:
        alice = login(port_live, "alice")
        dave = login(port_dead, "dave")  # dave's account exists; he leaves, and a message waits for him
        dave.stop()
        agents.remove(dave)
        gone = "SELECT count(*) FROM transport_livesession WHERE bare_jid = 'dave@localhost'"
        eventually(lambda: cluster.query(gone) == [(0,)], "dave out of the registry")
        alice.send("<message to='dave@localhost' type='chat'><body>kept for dave</body></message>")
        router.wait_for("stored an offline message for dave@localhost")
        carol = login(port_dead, "carol", "doomed")
        carol.send("<presence/>")
        carol.roster("sync")
        row = "SELECT lease_expires_at FROM transport_livesession WHERE full_jid = %s"
        assert len(cluster.query(row, carol.full_jid)) == 1
        before = {what: cluster.query(sql)[0][0] for what, sql in STORED.items()}
        assert before["offline messages"] == 1 and before["accounts"] == 3

        doomed.kill()  # SIGKILL: no shutdown hook, the rows stay until their lease or a sweep
        leases = []

        def carol_gone() -> bool:
            rows = cluster.query(row, carol.full_jid)
            leases.extend(lease for (lease,) in rows)
            return not rows

        eventually(carol_gone, "carol's session out of the registry", 60)
        # Swept on the liveness bound, not expired: her lease still had time left when the row went.
        assert leases and max(leases) > datetime.now(UTC)
        survivor.wait_for("stopped refreshing its key")

        after = {what: cluster.query(sql)[0][0] for what, sql in STORED.items()}
        assert after["accounts"] == before["accounts"] and after["offline messages"] == 1
        assert after["auth events"] >= before["auth events"]  # none lost (new logins add some)
        # A message for carol now is stored for her next login, not sent to the dead process's channel.
        alice.send(f"<message to='{carol.full_jid}' type='chat'><body>after the kill</body></message>")
        router.wait_for("stored an offline message for carol@localhost")
        # What was stored before the kill is delivered at the next login, as is what came after.
        dave = login(port_live, "dave")
        dave.send("<presence/>")
        dave.wait_for(is_message("alice@localhost", "kept for dave"), "the offline message")
        back = login(port_live, "carol", "back")
        back.send("<presence/>")
        back.wait_for(is_message("alice@localhost", "after the kill"), "the message sent after the kill")
        assert survivor.process.poll() is None and router.process.poll() is None
    finally:
        output = cluster.shutdown(agents)
    assert "Traceback" not in output, output
