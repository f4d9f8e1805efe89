"""A listener killed with SIGKILL in the middle of many concurrent logins loses no audit row (issue 17 §2).

Auth events are group-committed (``xmppauth.groupcommit``): the rows of many logins go to PostgreSQL in one
transaction, and a login is answered only once its batch committed. So whatever the moment of the kill
(rows queued, a batch in flight, a commit done but not yet answered), every client that received
``<success/>`` finds its ``AuthEvent`` afterwards: a success row with its certificate's fingerprint and its
JID, at least as many as it received successes. The listener runs on the test's own PostgreSQL cluster
(``tests.faults.servers``); the clients are raw direct-TLS sockets, each with a certificate of its own, that
log in over and over until the kill.

The kill lands mid-batch for certain: the test locks the table against inserts, waits until the listener's
batch waits on that lock and every login has stalled behind it, then kills the listener with the lock held. A
listener that answered before its rows were durable never stalls there (the test then fails on that wait),
and its answered rows would be lost with the batch. Timeouts only bound a hung server.
"""

from __future__ import annotations

import collections
import ssl
import threading
import time

import psycopg

from tests.certs import make_client
from tests.faults.cluster import FaultCluster, eventually
from tests.transport.rawxmpp import SUCCESS, auth_external, direct_tls, sasl
from tests.transport.tlsclient import client_context

CLIENTS = 24  # concurrent clients, one thread and one certificate each
SUCCESSES_BEFORE_KILL = 150  # answered logins in all before the SIGKILL
QUIET_SECONDS = 1.0  # no client connected nor got an answer for this long: the logins wait on the batch
BATCH_BLOCKED = (
    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
    " AND query LIKE 'COPY %%certauth_authevent%%'"
)


class LoginLoop(threading.Thread):
    """One client logging in with SASL EXTERNAL (RFC 6120 §6.4) again and again, until the server is gone."""

    def __init__(self, port: int, context: ssl.SSLContext, fingerprint: str, jid: str) -> None:
        super().__init__(daemon=True)
        self.port, self.context, self.fingerprint, self.jid = port, context, fingerprint, jid
        self.successes = 0  # <success/> received
        self.cut = 0  # attempts the server never answered (its connection died)
        self.other: list[bytes] = []  # any other answer (a failure): none is expected
        self.waiting = False  # its <auth/> sent, no answer yet
        self.connections = 0

    def run(self) -> None:
        while True:
            self.connections += 1
            try:
                sock, features = direct_tls(self.port, self.context)
            except OSError:  # refused: the server is gone
                self.cut += 1
                return
            self.waiting = True
            try:
                answer = sasl(sock, auth_external("="))
            except OSError:
                answer = b""
            finally:
                self.waiting = False
                sock.close()
            if SUCCESS in answer:
                self.successes += 1
            elif not answer or b"EXTERNAL" not in features:
                self.cut += 1
                return
            else:
                self.other.append(answer)


class Quiet:
    """True once no client has connected or been answered for :data:`QUIET_SECONDS` (polled)."""

    def __init__(self, loops: list[LoginLoop]) -> None:
        self.loops = loops
        self.last: tuple[int, float] = (-1, 0.0)

    def __call__(self) -> bool:
        progress = sum(loop.connections + loop.successes + len(loop.other) for loop in self.loops)
        now = time.monotonic()
        if progress != self.last[0]:
            self.last = (progress, now)
        return now - self.last[1] >= QUIET_SECONDS


def test_sigkill_mid_run_every_login_that_got_success_has_its_auth_event(tmp_path, postgres):
    cluster = FaultCluster(tmp_path, postgres.create_database("sigkill"))
    port, listener = cluster.runc2s("c2s", max_connections_per_address=0)
    loops = []
    for n in range(CLIENTS):
        jid = f"user{n}@localhost"
        client = make_client(cluster.pki.ca, jids=[jid])
        loops.append(LoginLoop(port, client_context(tmp_path, client), client.facts.fingerprint_sha256, jid))
    try:
        for loop in loops:
            loop.start()
        eventually(lambda: sum(loop.successes for loop in loops) >= SUCCESSES_BEFORE_KILL, "logins", 120)
        # Mid-batch, for sure: the table locked against inserts, the listener's next batch waits on the lock
        # (its COPY seen waiting), logins queue behind it; then SIGKILL, the lock still held.
        with psycopg.connect(cluster.db_url, connect_timeout=10) as lock:
            lock.execute("LOCK TABLE certauth_authevent IN SHARE MODE")
            eventually(lambda: cluster.query(BATCH_BLOCKED)[0][0] >= 1, "a batch waiting on the lock", 60)
            # Every database thread now waits for that batch: no login can be answered before it commits
            # (a listener that answered before its rows were durable would keep answering here).
            eventually(Quiet(loops), "every login waiting on the blocked batch", 60)
            waiting = sum(loop.waiting for loop in loops)
            listener.kill()  # SIGKILL: no shutdown hook, no flush of anything queued
            lock.rollback()
        for loop in loops:
            loop.join(60)
            assert not loop.is_alive(), f"{loop.jid} still logging in after the kill"
    finally:
        output = cluster.stop()
        print(output)

    assert [loop.other for loop in loops] == [[]] * CLIENTS, output
    assert waiting >= 1 and sum(loop.cut for loop in loops) >= waiting  # the kill cut the logins waiting
    rows = cluster.query(
        "SELECT cert_fingerprint, jid_granted, count(*) FROM certauth_authevent"
        " WHERE outcome = 'success' GROUP BY cert_fingerprint, jid_granted"
    )
    recorded = collections.Counter({(fingerprint, jid): count for fingerprint, jid, count in rows})
    answered = sum(loop.successes for loop in loops)
    assert answered >= SUCCESSES_BEFORE_KILL
    for loop in loops:
        # Each <success/> the client read has its row; a row may exist for one whose answer the kill cut.
        assert recorded[(loop.fingerprint, loop.jid)] >= loop.successes, (loop.jid, recorded, loop.successes)
    print(f"{answered} successes answered, {sum(recorded.values())} success rows after the SIGKILL")
