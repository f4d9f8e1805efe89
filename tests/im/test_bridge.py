"""SessionBridge with an in-memory channel layer: what a session's channel carries reaches the adapter.

Specs: RFC 6120 §7.7.2.2 (conflict), RFC 6121 §4.3.2 (probes answered from the live session), §8.5 (a message
that reaches a session after it ended is routed again), §4.6.3 (directed presence). Sessions here are not
registered; the directed-presence test routes against the database.
"""

from __future__ import annotations

import asyncio
from xml.etree.ElementTree import fromstring

import pytest
from channels.layers import InMemoryChannelLayer

from accounts.models import Account, Domain
from transport import bridge as bridge_module
from transport.bridge import SessionBridge
from transport.router import ROUTER_CHANNEL, close_message, load, presence_request, stanza_message

MESSAGE = (
    "<message xmlns='jabber:client' from='bob@localhost/b' to='alice@localhost/a' type='chat'>"
    "<body>x</body></message>"
)


class Adapter:
    def __init__(self) -> None:
        self.delivered: list = []
        self.closed: list[tuple[str, str]] = []


def run(scenario) -> None:
    async def main() -> None:
        layer = InMemoryChannelLayer()
        adapter = Adapter()
        session = SessionBridge(
            "alice@localhost/a",
            deliver=adapter.delivered.append,
            close=lambda condition, text: adapter.closed.append((condition, text)),
            layer=layer,
        )
        session.start(None)
        try:
            await asyncio.wait_for(scenario(layer, session, adapter), 10)
        finally:
            for task in session._tasks:
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
    from tests.im.test_router import live  # noqa: PLC0415 (a registry row with a channel)

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
        await session._tasks[0]
        assert layer.channels.get(carol) is None or layer.channels[carol].empty()  # told once already

    run(scenario)
