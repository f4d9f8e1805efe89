"""Redis stopped under two listener processes and their router (issue 16 point 4).

While it is down: the sessions of one process keep chatting with each other (handed over inside the
process), a stanza for a session of the other process comes back to its sender as ``remote-server-timeout``
of type ``wait`` (RFC 6120 §8.3.3.16: a service needed to fulfil the request cannot be reached; try again
later), new logins keep working. When Redis is back (the same port, empty: no persistence), cross-process
delivery and the router's offline storage work again without restarting anything.

The test runs its own Redis and PostgreSQL (``tests.faults.servers``); Redis is SIGKILLed. Timeouts only
bound a hung server.
"""

from __future__ import annotations

import itertools
import time

from tests.faults.cluster import FaultCluster, chat, eventually, logged
from tests.im.agents import CLIENT, SlixAgent

STANZA_ERRORS = "{urn:ietf:params:xml:ns:xmpp-stanzas}"
_ids = itertools.count()
BOUND = 2  # [xmppauth] process_liveness_seconds of both listeners


def send_and_see(sender: SlixAgent, receiver: SlixAgent, body: str, wait: float = 2) -> str:
    """Send one message; 'delivered', or the condition of the error that came back, or 'nothing'."""
    mid = f"m{next(_ids)}"
    sender.send(f"<message to='{receiver.full_jid}' type='chat' id='{mid}'><body>{body}</body></message>")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        with receiver._cond:
            if any(e.get("id") == mid and e.get("type") == "chat" for e in receiver.received):
                return "delivered"
        with sender._cond:
            for e in sender.received:
                if e.get("id") == mid and e.get("type") == "error":
                    error = e.find(f"{CLIENT}error")
                    assert error is not None
                    condition = next(iter(error)).tag.removeprefix(STANZA_ERRORS)
                    return f"{condition}/{error.get('type')}"
        time.sleep(0.05)
    return "nothing"


def test_redis_down_keeps_local_chat_and_logins_bounces_cross_process_stanzas_and_recovers(
    tmp_path, postgres, redis_server
):
    redis = redis_server
    cluster = FaultCluster(tmp_path, postgres.create_database("faults"), redis.url())
    router = cluster.router()
    # A liveness bound of 2 s (issue 16 point 1): the outage below outlasts it, and nobody is called dead.
    port_a, listener_a = cluster.runc2s("a", process_liveness_seconds=BOUND)
    port_b, listener_b = cluster.runc2s("b", process_liveness_seconds=BOUND)
    alice = SlixAgent(port_a, tmp_path, cluster.certs["alice"], "alice@localhost").start()
    bob = SlixAgent(port_a, tmp_path, cluster.certs["bob"], "bob@localhost").start()
    carol = SlixAgent(port_b, tmp_path, cluster.certs["carol"], "carol@localhost").start()
    agents = [alice, bob, carol]
    try:
        for agent in agents:
            agent.send("<presence/>")
        chat(alice, bob, "same process, before")
        chat(alice, carol, "across, before")
        chat(carol, alice, "across and back, before")

        redis.stop()
        for listener in (listener_a, listener_b):
            logged(listener, "liveness: cannot refresh this process's key in Redis")
        time.sleep(BOUND + 1)  # the outage outlasts the liveness bound: every key would have expired
        # The sessions of one process keep chatting with each other.
        chat(alice, bob, "same process, during")
        chat(bob, alice, "same process and back, during")
        # Across processes: bounced to the sender, never dropped in silence (RFC 6120 §8.3).
        assert send_and_see(alice, carol, "across, during", wait=30) == "remote-server-timeout/wait"
        assert send_and_see(carol, alice, "across and back, during", wait=30) == "remote-server-timeout/wait"
        logged(listener_a, "channel layer (Redis) unavailable")
        # Logins keep working in each process; the new session chats with the old ones there.
        dave = SlixAgent(port_a, tmp_path, cluster.certs["dave"], "dave@localhost").start()
        agents.append(dave)
        dave.send("<presence/>")
        chat(dave, alice, "new login, during")
        chat(alice, dave, "new login and back, during")
        assert all(agent.stream_errors == [] and not agent.disconnected.is_set() for agent in agents)

        redis.start()
        # Without a restart: across processes again, both ways, once the layer has reconnected.
        eventually(lambda: send_and_see(alice, carol, "across, after") == "delivered", "delivery to B", 60)
        eventually(lambda: send_and_see(carol, alice, "across, after") == "delivered", "delivery to A", 60)
        chat(alice, bob, "same process, after")
        logged(listener_a, "channel layer (Redis) answers again")
        # Redis came back empty, without any liveness key: both listeners notice, and neither calls the
        # other dead (its sessions would be swept). A whole bound and a sweep later, carol still chats.
        for listener in (listener_a, listener_b):
            logged(listener, "Redis lost its keys")
        time.sleep(BOUND + 2)
        chat(alice, carol, "across, a bound after")
        rows = "SELECT count(*) FROM transport_livesession WHERE full_jid = %s"
        assert cluster.query(rows, carol.full_jid) == [(1,)]
        # The router process is back too: a message to an account with no session is stored (XEP-0160).
        bob.stop()
        agents.remove(bob)
        bob_rows = "SELECT count(*) FROM transport_livesession WHERE bare_jid = 'bob@localhost'"
        eventually(lambda: cluster.query(bob_rows) == [(0,)], "bob out of the registry")
        alice.send("<message to='bob@localhost' type='chat'><body>stored after the outage</body></message>")
        stored = "SELECT count(*) FROM accounts_offlinemessage WHERE stanza LIKE %s"
        eventually(
            lambda: cluster.query(stored, "%stored after the outage%") == [(1,)],
            "the offline message stored by the router",
            60,
        )
        assert all(agent.stream_errors == [] for agent in agents)
        assert all(p.process.poll() is None for p in (router, listener_a, listener_b))
    finally:
        output = cluster.shutdown(agents)
    assert "Traceback" not in output, output
    assert "stopped refreshing its key" not in output, output  # no sweep
