"""End to end across processes: slixmpp clients on runc2s listeners, through Redis and a runworker router.

Specs: RFC 6121 §2 (roster), §3 (subscription handshake), §4 (presence), §5 and §8.5 (messages), XEP-0160
(offline messages, stored by the router process), RFC 6120 §7.7.2.2 (resource conflict), DESIGN §1 (several
listener processes, one router, one Redis). Timeouts only bound a hung server; no assertion is about time.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from tests.certs import make_client
from tests.im.agents import CLIENT, SlixAgent, is_message, is_presence, is_push
from tests.im.processes import (
    REDIS_TEST_URL,
    Managed,
    c2s_config,
    free_port,
    redis_unreachable,
    server_env,
    start_runc2s,
    wait_listening,
)
from tests.im.strophe_agent import StropheAgent
from tests.processes import skip_without_redis
from tests.transport.runc2s_process import manage
from tests.transport.tlsclient import make_pki

DELAY = "{urn:xmpp:delay}delay"
NO_REDIS = redis_unreachable()


class Cluster:
    """A migrated SQLite file, a client CA, and the processes started on them."""

    def __init__(self, directory: Path, redis_url: str | None) -> None:
        self.directory = directory
        self.redis_url = redis_url
        self.pki = make_pki(directory)
        self.cafile = directory / "ca.pem"
        self.cafile.write_bytes(self.pki.ca.pem)
        self.certs = {
            name: make_client(self.pki.ca, jids=[f"{name}@localhost"])
            for name in ("alice", "bob", "carol", "dave", "erin")
        }
        self.processes: list[Managed] = []
        # Its own router channel: another test run on the same Redis has its own runworker.
        self.router_channel = f"xmpp.router.{uuid.uuid4().hex}"
        self.router_process: Managed | None = None
        config = c2s_config(directory / "base.toml", free_port(), *self._server_files())
        result = manage(server_env(directory, config, redis_url), "migrate", "--noinput")
        assert result.returncode == 0, result.stdout + result.stderr

    def _server_files(self) -> tuple[Path, Path, Path]:
        return self.pki.server_certfile, self.pki.server_keyfile, self.cafile

    def env(self, name: str, port: int, **options: object) -> dict[str, str]:
        config = c2s_config(self.directory / f"{name}.toml", port, *self._server_files(), **options)
        return server_env(self.directory, config, self.redis_url, self.router_channel)

    def runc2s(self, name: str, **options: object) -> tuple[int, Managed]:
        """``manage.py runc2s`` on a free port; ``options`` go into its ``[xmppauth]`` table."""
        port = free_port()
        process = start_runc2s(self.env(name, port, **options), port)
        self.processes.append(process)
        return port, process

    def daphne(self, name: str) -> tuple[str, Managed]:
        """Our daphne server (production's command line) with one wss listener; returns its URL."""
        https_port = free_port()
        config = c2s_config(
            self.directory / f"{name}.toml", free_port(), *self._server_files(), https_port=https_port
        )
        env = server_env(self.directory, config, self.redis_url, self.router_channel)
        process = Managed(
            env, "-m", "transport.http.server", "-e", "xmpptls:listener=0", "xmppauth.asgi:application"
        )
        self.processes.append(process)
        wait_listening(process, https_port)
        return f"wss://127.0.0.1:{https_port}/ws-xmpp", process

    def strophe(self, url: str, name: str, resource: str = "ws") -> StropheAgent:
        return StropheAgent(
            url, self.directory, self.certs[name], f"{name}@localhost", resource=resource
        ).start()

    def router(self) -> Managed:
        process = Managed(self.env("router", free_port()), "runworker", self.router_channel)
        process.wait_for("Running worker")
        self.processes.append(process)
        return process

    def agent(self, port: int, name: str, resource: str = "tcp") -> SlixAgent:
        return SlixAgent(
            port, self.directory, self.certs[name], f"{name}@localhost", resource=resource
        ).start()

    def query(self, sql: str, *args: object) -> list[tuple]:
        with sqlite3.connect(self.directory / "db.sqlite3", timeout=20) as db:
            return db.execute(sql, args).fetchall()

    def stop(self) -> str:
        """Stop every process; their output. Tracebacks fail the module (a daphne one only from our code:
        the WebSocket adapter may log a send after the client closed)."""
        outputs = [(p.args, p.stop()) for p in self.processes]
        for args, output in outputs:
            ours = "transport/im/bridge.py" in output or "transport/router" in output
            daphne = any("daphne_server" in arg for arg in args)
            assert not ours and (daphne or "Traceback" not in output), output
        return "".join(f"== {args}\n{output}" for args, output in outputs)


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory):
    skip_without_redis(NO_REDIS)
    cluster = Cluster(tmp_path_factory.mktemp("cluster"), REDIS_TEST_URL)
    cluster.router_process = cluster.router()  # one `runworker xmpp.router` for the module
    yield cluster
    print(cluster.stop())


def subscribe_both_ways(alice: SlixAgent, bob: SlixAgent) -> None:
    """RFC 6121 §3.1: alice asks, bob approves; then bob asks, alice approves."""
    for asker, approver in ((alice, bob), (bob, alice)):
        asker.send(f"<presence type='subscribe' to='{approver.jid}'/>")
        asker.wait_for(is_push(approver.jid), "the roster push of the pending request")
        request = approver.wait_for(is_presence(asker.jid, "subscribe"), "the subscription request")
        assert request.get("from") == asker.jid  # §3.1.2: stamped with the bare JID
        approver.send(f"<presence type='subscribed' to='{asker.jid}'/>")
        approver.wait_for(is_push(asker.jid), "the roster push of the approval")
        asker.wait_for(is_push(approver.jid), "the roster push of the new subscription")
        # §3.1.5: the approver's current presence reaches the new subscriber.
        asker.wait_for(is_presence(approver.jid, None), "the approver's presence")


def chat_both_ways(alice: SlixAgent, bob: SlixAgent, tag: str) -> None:
    alice.send(f"<message to='{bob.jid}' type='chat' id='a-{tag}'><body>hello bob {tag}</body></message>")
    got = bob.wait_for(is_message(alice.jid, f"hello bob {tag}"), "alice's message")
    assert got.get("from") == alice.full_jid
    bob.send(
        f"<message to='{alice.full_jid}' type='chat' id='b-{tag}'><body>hello alice {tag}</body></message>"
    )
    alice.wait_for(is_message(bob.jid, f"hello alice {tag}"), "bob's message")


def test_two_tcp_listener_processes_exchange_subscriptions_presence_chat_and_offline_messages(redis_cluster):
    cluster = redis_cluster
    router = cluster.router_process
    port_a, _ = cluster.runc2s("a")
    port_b, _ = cluster.runc2s("b")
    alice = cluster.agent(port_a, "alice")
    bob = cluster.agent(port_b, "bob")
    try:
        alice.send("<presence/>")
        bob.send("<presence/>")
        assert alice.roster() == {} and bob.roster() == {}
        subscribe_both_ways(alice, bob)
        assert alice.roster("r2")["bob@localhost"].get("subscription") == "both"
        assert bob.roster("r2")["alice@localhost"].get("subscription") == "both"
        chat_both_ways(alice, bob, "1")

        # Bob leaves: alice sees him go (RFC 6121 §4.5.2), and what she sends now waits for him.
        bob.stop()
        alice.wait_for(is_presence("bob@localhost", "unavailable"), "bob's unavailable presence")
        alice.send("<message to='bob@localhost' type='chat'><body>while you were out</body></message>")
        router.wait_for("stored an offline message for bob@localhost")  # the runworker process did it
        stored_by = cluster.query("SELECT stored_by FROM accounts_offlinemessage")
        assert [row[0].split(":")[1] for row in stored_by] == [str(router.process.pid)]

        # Next login: the message arrives at initial presence (XEP-0160), with its delay stamp (XEP-0203).
        bob = cluster.agent(port_b, "bob")
        bob.send("<presence/>")
        late = bob.wait_for(is_message("alice@localhost", "while you were out"), "the offline message")
        assert late.find(DELAY) is not None
        deadline = time.monotonic() + 30  # deleted once the stream took it, just after the write
        while cluster.query("SELECT count(*) FROM accounts_offlinemessage") != [(0,)]:
            assert time.monotonic() < deadline, "the delivered offline message stayed in the store"
            time.sleep(0.1)
        alice.wait_for(is_presence("bob@localhost", None), "bob back")
        bob.wait_for(is_presence("alice@localhost", None), "alice's presence, answering bob's probe")
        chat_both_ways(alice, bob, "2")
    finally:
        alice.stop()
        bob.stop()


def test_message_to_an_unknown_account_is_service_unavailable(redis_cluster):
    port, _ = redis_cluster.runc2s("unknown")
    alice = redis_cluster.agent(port, "alice", "u")
    try:
        alice.send("<message to='nobody@localhost' id='m1' type='chat'><body>hi</body></message>")
        error = alice.wait_for(lambda e: e.get("id") == "m1" and e.get("type") == "error", "an error")
        assert (
            error.find(f"{CLIENT}error/{{urn:ietf:params:xml:ns:xmpp-stanzas}}service-unavailable")
            is not None
        )
    finally:
        alice.stop()


def test_second_login_with_the_same_full_jid_ends_the_first_with_conflict(redis_cluster):
    port_a, _ = redis_cluster.runc2s("conflict-a")
    port_b, _ = redis_cluster.runc2s("conflict-b")
    first = redis_cluster.agent(port_a, "carol", "desk")
    second = redis_cluster.agent(port_b, "carol", "desk")  # another process, same full JID
    try:
        assert first.wait_for_stream_error() == "conflict"  # RFC 6120 §7.7.2.2
        assert first.disconnected.wait(30)
        assert second.stream_errors == [] and not second.disconnected.is_set()
        second.send("<presence/>")
        assert second.roster("after") == {}  # the new session works
    finally:
        first.stop()
        second.stop()


def holder_pid(cluster: Cluster, full_jid: str) -> int:
    """The pid of the process whose registry row holds ``full_jid`` (process_id is host:pid:start)."""
    deadline = time.monotonic() + 30
    sql = "SELECT process_id FROM transport_livesession WHERE full_jid=?"
    while not (rows := cluster.query(sql, full_jid)):
        assert time.monotonic() < deadline, f"no registry row for {full_jid}"
        time.sleep(0.1)
    return int(rows[0][0].split(":")[1])


def test_runc2s_processes_with_reuse_port_share_one_port_and_route_between_them(redis_cluster):
    """`runc2s --reuse-port`: the kernel spreads logins on one port over the processes (SO_REUSEPORT), and a
    session on one reaches a session on the other through Redis as with two ports."""
    cluster = redis_cluster
    port = free_port()
    env = cluster.env("shared", port)
    both = [Managed(env, "runc2s", "--reuse-port") for _ in range(2)]
    cluster.processes += both
    for process in both:
        process.wait_for(f"runc2s ready: 127.0.0.1:{port}\n")
    pids = {process.process.pid for process in both}
    alice = cluster.agent(port, "alice", "shared")
    bob = None
    try:
        alice_pid = holder_pid(cluster, alice.full_jid)
        assert alice_pid in pids
        for attempt in range(30):  # each login lands on either process: 30 on the same one is 1 in 2**30
            bob = cluster.agent(port, "bob", f"shared{attempt}")
            if holder_pid(cluster, bob.full_jid) != alice_pid:
                break
            bob.stop()
            bob = None
        assert bob is not None, "every login landed on one process: the port is not shared"
        alice.send("<presence/>")
        bob.send("<presence/>")
        alice.send(f"<message to='{bob.full_jid}' type='chat'><body>across processes</body></message>")
        bob.wait_for(is_message("alice@localhost", "across processes"), "alice's message from the other one")
        bob.send(f"<message to='{alice.full_jid}' type='chat'><body>and back</body></message>")
        alice.wait_for(is_message("bob@localhost", "and back"), "bob's answer from the other process")
    finally:
        alice.stop()
        if bob is not None:
            bob.stop()


def test_reuse_port_without_redis_is_refused_with_the_reason(tmp_path):
    """Processes sharing a port could not reach each other's sessions without Redis: refuse to start."""
    pki = make_pki(tmp_path)
    cafile = tmp_path / "ca.pem"
    cafile.write_bytes(pki.ca.pem)
    config = c2s_config(tmp_path / "x.toml", free_port(), pki.server_certfile, pki.server_keyfile, cafile)
    result = manage(server_env(tmp_path, config, None), "runc2s", "--reuse-port", timeout=60)
    assert result.returncode != 0
    assert "--reuse-port" in result.stderr and "set REDIS_URL" in result.stderr, result.stderr


def test_sigkilled_listener_leaves_no_ghost_session_after_its_lease(redis_cluster):
    cluster = redis_cluster
    # [xmppauth] session_lease_seconds = 6: rows not renewed for 6 s are expired, and purged by any heartbeat
    port_live, _ = cluster.runc2s("survivor", session_lease_seconds=6)
    port_dead, doomed = cluster.runc2s("doomed", session_lease_seconds=6)
    carol = cluster.agent(port_dead, "carol", "ghost")
    carol.send("<presence/>")
    carol.roster("sync")  # the presence is recorded before the roster answer (one queue per session)
    rows = cluster.query(
        "SELECT full_jid, presence FROM transport_livesession WHERE full_jid=?", "carol@localhost/ghost"
    )
    assert rows == [("carol@localhost/ghost", "available")]
    doomed.kill()  # SIGKILL: no shutdown hook runs, the row stays until its lease runs out
    deadline = time.monotonic() + 120
    while cluster.query("SELECT 1 FROM transport_livesession WHERE full_jid=?", "carol@localhost/ghost"):
        assert time.monotonic() < deadline, "the dead process's session is still in the registry"
        time.sleep(1)
    # With the ghost gone, a message for carol is stored for her next login instead of vanishing.
    alice = cluster.agent(port_live, "alice", "k")
    try:
        before = cluster.query("SELECT count(*) FROM accounts_offlinemessage")[0][0]
        alice.send("<message to='carol@localhost' type='chat'><body>are you there</body></message>")
        deadline = time.monotonic() + 30
        while cluster.query("SELECT count(*) FROM accounts_offlinemessage")[0][0] == before:
            assert time.monotonic() < deadline, "the message was not stored"
            time.sleep(0.2)
    finally:
        alice.stop()


def test_tcp_client_and_strophe_websocket_client_in_other_processes_subscribe_see_presence_and_chat(
    redis_cluster,
):
    """slixmpp on a runc2s process, Strophe.js on a daphne process (wss), a runworker router, one Redis."""
    cluster = redis_cluster
    router = cluster.router_process
    port, _ = cluster.runc2s("tcp-ws")
    url, _ = cluster.daphne("wss")
    alice = cluster.agent(port, "alice", "slix")
    dave = cluster.strophe(url, "dave")
    try:
        alice.send("<presence/>")
        dave.send("<presence/>")
        assert dave.roster() == {}
        subscribe_both_ways(alice, dave)
        assert dave.roster("r2")["alice@localhost"].get("subscription") == "both"
        chat_both_ways(alice, dave, "tcp-ws")

        dave.stop()  # offline: alice's next message waits in the router's storage
        alice.wait_for(is_presence("dave@localhost", "unavailable"), "dave's unavailable presence")
        alice.send("<message to='dave@localhost' type='chat'><body>see you on the web</body></message>")
        router.wait_for("stored an offline message for dave@localhost")
        dave = cluster.strophe(url, "dave")
        dave.send("<presence/>")
        late = dave.wait_for(is_message("alice@localhost", "see you on the web"), "the offline message")
        assert late.find(DELAY) is not None
        chat_both_ways(dave, alice, "ws-tcp")
    finally:
        alice.stop()
        dave.stop()


def test_without_redis_runc2s_routes_in_process_and_stores_offline_messages_itself(tmp_path):
    """DESIGN §1 embedded mode: no REDIS_URL, the in-memory layer, the router inside the listener process."""
    cluster = Cluster(tmp_path, None)
    try:
        port, listener = cluster.runc2s("alone")
        alice = cluster.agent(port, "alice")
        bob = cluster.agent(port, "bob")
        try:
            alice.send("<presence/>")
            bob.send("<presence/>")
            subscribe_both_ways(alice, bob)
            chat_both_ways(alice, bob, "local")
            bob.stop()
            alice.wait_for(is_presence("bob@localhost", "unavailable"), "bob's unavailable presence")
            alice.send("<message to='bob@localhost' type='chat'><body>kept here</body></message>")
            listener.wait_for("stored an offline message for bob@localhost")
            # The line is logged inside the call's transaction (xmppauth.loopdb), just before its commit.
            deadline = time.monotonic() + 10
            while not (stored_by := cluster.query("SELECT stored_by FROM accounts_offlinemessage")):
                assert time.monotonic() < deadline, "the offline message was not committed"
                time.sleep(0.05)
            assert [row[0].split(":")[1] for row in stored_by] == [str(listener.process.pid)]
            bob = cluster.agent(port, "bob")
            bob.send("<presence/>")
            bob.wait_for(is_message("alice@localhost", "kept here"), "the offline message")
        finally:
            alice.stop()
            bob.stop()
    finally:
        print(cluster.stop())


def test_tcp_client_and_strophe_bosh_client_chat_and_see_presence(redis_cluster):
    """BOSH (XEP-0206) sessions share the WebSocket adapter's session driver, so they are routed alike."""
    cluster = redis_cluster
    port, _ = cluster.runc2s("tcp-bosh")
    url, _ = cluster.daphne("bosh")
    alice = cluster.agent(port, "alice", "for-bosh")
    erin = cluster.strophe(
        url.replace("wss://", "https://").replace("/ws-xmpp", "/http-bind"), "erin", "bosh"
    )
    try:
        alice.send("<presence/>")
        erin.send("<presence/>")
        subscribe_both_ways(alice, erin)
        chat_both_ways(alice, erin, "tcp-bosh")
        chat_both_ways(erin, alice, "bosh-tcp")
        erin.stop()
        alice.wait_for(is_presence("erin@localhost", "unavailable"), "erin's unavailable presence")
    finally:
        alice.stop()
        erin.stop()


def test_messages_flowing_to_a_sigkilled_listener_are_delivered_stored_or_bounced_none_lost(redis_cluster):
    """Issue 16 point 1: `[xmppauth] process_liveness_seconds = 2`; the session lease stays 30 s. Every
    message alice sends to erin's session on the listener that is SIGKILLed mid-flow is received by erin,
    or re-routed from the dead process's channel and stored offline (delivered at her next login), or bounced
    to alice; counted end to end by id."""
    cluster = redis_cluster
    port_live, _ = cluster.runc2s("flow-survivor", process_liveness_seconds=2)
    port_dead, doomed = cluster.runc2s("flow-doomed", process_liveness_seconds=2)
    alice = cluster.agent(port_live, "alice", "flow")
    erin = cluster.agent(port_dead, "erin", "doomed")
    back = None
    sent: list[str] = []

    def send(n: int) -> None:
        for _ in range(n):
            mid = f"flow-{len(sent)}"
            sent.append(mid)
            alice.send(f"<message to='{erin.full_jid}' type='chat' id='{mid}'><body>{mid}</body></message>")
            time.sleep(0.05)

    def ids(agent: SlixAgent, kind: str | None = None) -> set[str]:
        with agent._cond:
            return {
                e.get("id", "")
                for e in agent.received
                if e.tag == f"{CLIENT}message"
                and e.get("id", "").startswith("flow-")
                and e.get("type") == kind
            }

    try:
        erin.send("<presence/>")
        erin.roster("sync")
        send(20)
        deadline = time.monotonic() + 30
        while "flow-19" not in ids(erin, "chat"):  # not wait_for: it would take the stanza out of the count
            assert time.monotonic() < deadline, "the messages before the kill did not arrive"
            time.sleep(0.05)
        doomed.kill()  # SIGKILL: its rows stay valid for 30 s, its channels keep taking messages
        send(100)  # five seconds more: past the liveness bound (2 s) and a sweep (1 s)
        # Any live listener of the cluster may sweep the dead one (they share the registry).
        before_kill = ids(erin, "chat")
        bounced = ids(alice, "error")
        deadline = time.monotonic() + 60
        sql = "SELECT count(*) FROM accounts_offlinemessage m JOIN accounts_account a ON a.id = m.account_id"
        sql += " WHERE a.localpart = 'erin' AND m.stanza LIKE '%flow-%'"
        while len(before_kill) + len(bounced) + cluster.query(sql)[0][0] < len(sent):
            assert time.monotonic() < deadline, (
                f"neither delivered nor stored: {len(sent)} sent, {len(before_kill)} delivered,"
                f" {len(bounced)} bounced, {cluster.query(sql)} stored"
            )
            time.sleep(0.2)
            bounced = ids(alice, "error")
        back = cluster.agent(port_live, "erin", "back")
        back.send("<presence/>")  # XEP-0160: the stored messages come at initial presence
        deadline = time.monotonic() + 60
        while (before_kill | ids(back, "chat") | bounced) != set(sent) and time.monotonic() < deadline:
            time.sleep(0.1)
        after = ids(back, "chat")
        assert before_kill | after | bounced == set(sent), sorted(set(sent) - before_kill - after - bounced)
        assert not before_kill & after, "a message delivered before the kill was stored as well"
    finally:
        alice.stop()
        erin.stop()
        if back is not None:
            back.stop()
