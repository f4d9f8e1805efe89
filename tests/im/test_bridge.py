"""SessionBridge with an in-memory channel layer: what a session's channel carries reaches the adapter.

Specs: RFC 6120 §7.7.2.2 (conflict), RFC 6121 §4.3.2 (probes answered from the live session), §8.5 (a message
that reaches a session after it ended is routed again), §4.6.3 (directed presence). Sessions here are not
registered; the directed-presence test routes against the database.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from types import SimpleNamespace
from xml.etree.ElementTree import fromstring

import pytest
from channels.layers import InMemoryChannelLayer
from django.utils import timezone

from accounts.models import Account, Domain, OfflineMessage
from transport.im import bridge as bridge_module
from transport.im.bridge import SessionBridge
from transport.im.router import ROUTER_CHANNEL, close_message, load, presence_request, stanza_message

MESSAGE = (
    "<message xmlns='jabber:client' from='bob@localhost/b' to='alice@localhost/a' type='chat'>"
    "<body>x</body></message>"
)


class Adapter:
    def __init__(self) -> None:
        self.delivered: list = []
        self.closed: list[tuple[str, str]] = []


def run(scenario, *, capacity: int = 100, handle=None, deliver=None) -> None:
    async def main() -> None:
        layer = InMemoryChannelLayer(capacity=capacity)
        adapter = Adapter()
        session = SessionBridge(
            "alice@localhost/a",
            deliver=deliver or adapter.delivered.append,
            close=lambda condition, text: adapter.closed.append((condition, text)),
            layer=layer,
        )
        session.start(handle)
        try:
            await asyncio.wait_for(scenario(layer, session, adapter), 10)
        finally:
            for task in (session._worker, session._listener):
                if task is not None:
                    task.cancel()

    asyncio.run(main())


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_a_stanza_on_the_sessions_channel_is_handed_to_the_adapter():
    async def scenario(layer, session, adapter):
        await layer.send(session.channel_name, stanza_message(fromstring(MESSAGE)))
        while not adapter.delivered:
            await settle()
        assert adapter.delivered[0].findtext("{jabber:client}body") == "x"

    run(scenario)


def test_a_close_command_ends_the_stream_with_its_condition():
    async def scenario(layer, session, adapter):
        await layer.send(session.channel_name, close_message("conflict", "replaced"))
        while not adapter.closed:
            await settle()
        assert adapter.closed == [("conflict", "replaced")]

    run(scenario)


def test_a_probe_is_answered_with_the_current_presence_only_when_available():
    async def scenario(layer, session, adapter):
        await layer.send(session.channel_name, presence_request("bob@localhost/b", "specific.test!bob"))
        await settle()
        session.presence = fromstring("<presence xmlns='jabber:client'><show>away</show></presence>")
        await layer.send(session.channel_name, presence_request("bob@localhost/b", "specific.test!bob"))
        answer = load((await layer.receive("specific.test!bob"))["xml"])
        assert (answer.get("from"), answer.get("to")) == ("alice@localhost/a", "bob@localhost/b")
        assert answer.findtext("{jabber:client}show") == "away"
        assert layer.channels.get("specific.test!bob") is None or layer.channels["specific.test!bob"].empty()

    run(scenario)


def test_an_idle_session_holds_no_routing_task_and_work_starts_one_in_order():
    """Issue 17 §5: the routing task runs while work waits and is gone between; stanzas stay in order."""

    async def scenario(layer, session, adapter):
        while session._worker is not None:  # the start's look for an older session of the same JID
            await settle()
        assert session._listener is not None and not session._listener.done()
        session.presence = fromstring("<presence xmlns='jabber:client'/>")
        for number in range(3):
            await layer.send(
                session.channel_name, presence_request(f"bob@localhost/{number}", "specific.test!bob")
            )
        await settle()
        answers = [load((await layer.receive("specific.test!bob"))["xml"]).get("to") for _ in range(3)]
        assert answers == [f"bob@localhost/{number}" for number in range(3)]
        while session._worker is not None:
            await settle()
        await layer.send(session.channel_name, presence_request("bob@localhost/3", "specific.test!bob"))
        assert load((await layer.receive("specific.test!bob"))["xml"]).get("to") == "bob@localhost/3"

    run(scenario)


def test_a_message_arriving_after_the_session_ended_goes_back_to_the_router(monkeypatch):
    monkeypatch.setattr(bridge_module, "DRAIN_SECONDS", 5.0)

    async def scenario(layer, session, adapter):
        session.stop()
        await layer.send(session.channel_name, stanza_message(fromstring(MESSAGE)))
        presence = fromstring("<presence xmlns='jabber:client' from='bob@localhost/b'/>")
        await layer.send(session.channel_name, stanza_message(presence))
        routed = await layer.receive(ROUTER_CHANNEL)
        assert routed["type"] == "xmpp.route" and load(routed["xml"]).findtext("{jabber:client}body") == "x"
        await settle()
        assert adapter.delivered == []
        assert layer.channels.get(ROUTER_CHANNEL) is None or layer.channels[ROUTER_CHANNEL].empty()

    run(scenario)


@pytest.mark.django_db(transaction=True)  # the bridge routes in worker threads
def test_those_that_got_directed_presence_get_unavailable_when_the_session_ends(monkeypatch):
    from tests.im.test_router import live  # a registry row with a channel

    monkeypatch.setattr(bridge_module, "DRAIN_SECONDS", 0.0)  # the end of the work task is the sentinel

    domain = Domain.objects.create(name="localhost")
    for name in ("alice", "bob", "carol"):
        Account.objects.create(localpart=name, domain=domain)
    bob, carol = live("bob@localhost/b"), live("carol@localhost/c")

    async def scenario(layer, session, adapter):
        session.from_client(
            fromstring("<presence xmlns='jabber:client' from='alice@localhost/a' to='bob@localhost/b'/>")
        )
        session.from_client(
            fromstring("<presence xmlns='jabber:client' from='alice@localhost/a' to='carol@localhost/c'/>")
        )
        session.from_client(
            fromstring(
                "<presence xmlns='jabber:client' type='unavailable' from='alice@localhost/a' "
                "to='carol@localhost/c'/>"
            )
        )
        assert load((await layer.receive(bob))["xml"]).get("type") is None
        assert load((await layer.receive(carol))["xml"]).get("type") is None
        assert load((await layer.receive(carol))["xml"]).get("type") == "unavailable"
        session.stop()
        gone = load((await layer.receive(bob))["xml"])
        assert (gone.get("type"), gone.get("from")) == ("unavailable", "alice@localhost/a")  # RFC 6121 §4.6.3
        # The sentinel: the bridge's work task returns only after _finish has sent all it will ever send.
        assert session._worker is not None
        await session._worker
        assert layer.channels.get(carol) is None or layer.channels[carol].empty()  # told once already

    run(scenario)


# == issue 16 point 2: delivery that survives a crash, supervised routing, no silent drop ===============


def accounts_alice_bob():
    domain = Domain.objects.create(name="localhost")
    return {name: Account.objects.create(localpart=name, domain=domain) for name in ("alice", "bob")}


async def until(condition, what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


@pytest.mark.django_db(transaction=True)
def test_an_offline_message_leaves_the_store_only_once_the_stream_took_it():
    from tests.im.test_router import live

    alice = accounts_alice_bob()["alice"]
    live("alice@localhost/a", available=False)
    rows = [
        OfflineMessage.objects.create(account=alice, stanza=f"<message xmlns='jabber:client' id='{n}'/>")
        for n in ("o1", "o2")
    ]
    failing = {"o1"}  # the stream refuses o1 (say, the connection broke while writing it)

    def deliver(element):
        if element.get("id") in failing:
            raise OSError("connection lost")
        delivered.append(element.get("id"))

    delivered: list[str] = []

    async def scenario(layer, session, adapter):
        session.from_client(fromstring("<presence xmlns='jabber:client' from='alice@localhost/a'/>"))
        await until(lambda: delivered == ["o2"], "o2 delivered")

        def stored():
            return list(OfflineMessage.objects.values_list("id", flat=True))

        for _ in range(500):
            if await bridge_module.in_db_thread(stored) == [rows[0].id]:  # o2 gone, o1 waits
                break
            await asyncio.sleep(0.01)
        assert await bridge_module.in_db_thread(stored) == [rows[0].id]

    run(scenario, deliver=deliver)


def test_a_routing_error_ends_the_session_with_internal_server_error_and_its_cause(caplog):
    async def scenario(layer, session, adapter):
        def broken(*args):
            raise RuntimeError("database went away")

        session.router.from_client = broken
        session.from_client(fromstring(MESSAGE.replace("bob@localhost/b", "alice@localhost/a", 1)))
        await until(lambda: adapter.closed, "the session closed")
        assert adapter.closed == [("internal-server-error", "routing failed")]  # RFC 6120 §4.9.3.8
        session.from_client(fromstring(MESSAGE))  # nothing more is routed, and nothing raises
        await settle()
        assert adapter.closed == [("internal-server-error", "routing failed")]

    run(scenario)
    assert "routing a client stanza failed" in caplog.text and "database went away" in caplog.text


def test_a_failure_to_end_the_older_session_at_bind_ends_the_new_one_visibly(monkeypatch, caplog):
    def unreachable(*args):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(bridge_module, "older_sessions", unreachable)
    handle = SimpleNamespace(session_id=uuid.uuid4(), facts=SimpleNamespace(started_at=None), saved=None)

    async def scenario(layer, session, adapter):
        await until(lambda: adapter.closed, "the session closed")
        assert adapter.closed == [("internal-server-error", "routing failed")]

    run(scenario, handle=handle)
    assert "ending the older session failed" in caplog.text and "redis is down" in caplog.text


def test_without_a_failure_the_session_is_not_closed():
    async def scenario(layer, session, adapter):
        await layer.send(session.channel_name, stanza_message(fromstring(MESSAGE)))
        await until(lambda: adapter.delivered, "the stanza delivered")
        assert adapter.closed == []

    run(scenario)


@pytest.mark.django_db(transaction=True)
def test_a_message_to_a_full_channel_is_bounced_to_its_sender_with_resource_constraint():
    from tests.im.test_router import live

    accounts_alice_bob()
    bob = live("bob@localhost/b")
    to_bob = (
        "<message xmlns='jabber:client' from='alice@localhost/a' to='bob@localhost/b' id='{}' type='chat'/>"
    )

    async def scenario(layer, session, adapter):
        session.from_client(fromstring(to_bob.format("fits")))
        await until(lambda: bob in layer.channels, "the first message queued for bob")
        session.from_client(fromstring(to_bob.format("refused")))  # bob's channel holds one: full
        await until(lambda: adapter.delivered, "the bounce")
        [bounce] = adapter.delivered
        assert (bounce.get("id"), bounce.get("type"), bounce.get("to")) == (
            "refused",
            "error",
            "alice@localhost/a",
        )
        assert (
            bounce.find("{jabber:client}error/{urn:ietf:params:xml:ns:xmpp-stanzas}resource-constraint")
            is not None
        )
        assert load((await layer.receive(bob))["xml"]).get("id") == "fits"

    run(scenario, capacity=1)


class RecordingLayer(InMemoryChannelLayer):
    """The stock in-memory layer, noting the channel of every send."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sent_to: list[str] = []

    async def send(self, channel, message) -> None:
        self.sent_to.append(channel)
        await super().send(channel, message)


@pytest.mark.django_db(transaction=True)
def test_a_message_to_a_session_of_the_same_process_is_handed_over_without_the_layer():
    """Under a storm channels-redis hands a process its messages one at a time, and they queued in Redis
    for over a minute (bench.load_mixed, issue 16 point 6): a session of this process gets them directly."""
    from tests.im.test_router import live

    accounts_alice_bob()
    bob_channel = live("bob@localhost/b")  # the registry row the router finds
    bob_delivered: list = []

    async def main() -> None:
        layer = RecordingLayer()
        alice = SessionBridge("alice@localhost/a", deliver=list, close=lambda *a: None, layer=layer)
        bob = SessionBridge(
            "bob@localhost/b", deliver=bob_delivered.append, close=lambda *a: None, layer=layer
        )
        bob.channel_name = bob_channel
        alice.start()
        bob.start()
        try:
            alice.from_client(
                fromstring(
                    "<message xmlns='jabber:client' from='alice@localhost/a' to='bob@localhost/b' id='m1'"
                    " type='chat'><body>hi</body></message>"
                )
            )
            await until(lambda: bob_delivered, "bob's message")
            assert [element.get("id") for element in bob_delivered] == ["m1"]
            assert bob.channel_name not in layer.sent_to
        finally:
            for session in (alice, bob):
                for task in (session._worker, session._listener):
                    if task is not None:
                        task.cancel()
                bridge_module.local.unregister(session)

    asyncio.run(main())


# == [xmppauth] session_queue_stanzas / session_queue_bytes ==============================================


def flood(count: int, body: str = "x"):
    """``count`` stanzas queued while routing is stuck; returns what the adapter saw."""
    import threading

    stuck = threading.Event()
    seen = {}

    async def scenario(layer, session, adapter):
        def slow(*args):
            stuck.wait(10)
            return []

        session.router.from_client = slow
        for n in range(count):
            session.from_client(
                fromstring(MESSAGE.replace(">x<", f">{body}<").replace("type='chat'", f"id='{n}'"))
            )
        await settle()
        seen["closed"] = list(adapter.closed)
        stuck.set()

    run(scenario)
    return seen["closed"]


def test_a_client_flooding_past_the_queued_stanza_limit_is_ended_with_policy_violation(xmpp_options):
    xmpp_options(session_queue_stanzas=5)
    assert flood(8) == [("policy-violation", "too many stanzas waiting to be routed")]


def test_a_client_within_the_queued_stanza_limit_keeps_its_session(xmpp_options):
    xmpp_options(session_queue_stanzas=5)
    assert flood(4) == []


def test_a_client_flooding_past_the_queued_byte_limit_is_ended_with_policy_violation(xmpp_options):
    xmpp_options(session_queue_bytes=4096)
    assert flood(3, "y" * 3000) == [("policy-violation", "too many stanzas waiting to be routed")]
    assert flood(1, "y" * 3000) == []


def _initial_presence_delivers(not_after) -> list:
    """What a session whose certificate ends at ``not_after`` (None: a password login) gets on its initial
    presence, alone on the server."""
    accounts_alice_bob()
    handle = SimpleNamespace(
        session_id=None, saved=None, facts=SimpleNamespace(started_at=None, cert_not_after=not_after)
    )
    adapter_delivered: list = []

    async def scenario(layer, session, adapter):
        session.from_client(fromstring("<presence xmlns='jabber:client' from='alice@localhost/a'/>"))
        await until(lambda: session._queue.empty() and session.presence is not None, "presence routed")
        await asyncio.sleep(0.2)
        adapter_delivered.extend(adapter.delivered)

    run(scenario, handle=handle)
    return adapter_delivered


@pytest.mark.django_db(transaction=True)
def test_a_certificate_expiring_within_the_window_gets_a_headline_at_initial_presence():
    not_after = timezone.now() + timedelta(days=10, hours=1)
    delivered = _initial_presence_delivers(not_after)
    headlines = [el for el in delivered if el.get("type") == "headline"]
    assert len(headlines) == 1
    headline = headlines[0]
    assert headline.get("from") == "localhost" and headline.get("to") == "alice@localhost/a"
    body = headline.findtext("{jabber:client}body")
    assert f"expires on {not_after:%Y-%m-%d %H:%M} UTC (in 10 day(s))" in body


@pytest.mark.django_db(transaction=True)
def test_no_headline_for_a_certificate_outside_the_window_or_a_password_login():
    for not_after in (timezone.now() + timedelta(days=90), None):
        assert [el for el in _initial_presence_delivers(not_after) if el.get("type") == "headline"] == []
        Account.objects.all().delete()
        Domain.objects.all().delete()
