"""Per-process liveness keys and the sweep of a dead listener (transport.im.liveness; issue 16 point 1).

The sweep is driven against a real Redis (its own key prefix) and the test database; the stanza it finds is
put on the dead process's channel by channels-redis itself. The end-to-end proof with a SIGKILLed runc2s is
tests/im/test_messaging_processes.py::test_messages_flowing_to_a_sigkilled_listener_...
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from tests.im.processes import REDIS_TEST_URL, redis_unreachable
from transport.im import liveness
from transport.im.liveness import ALIVE_KEY, SWEPT_KEY, Liveness, reroutable
from transport.im.router import ROUTER_CHANNEL, load
from transport.sessions.models import LiveSession

NO_REDIS = redis_unreachable()


def stanza(xml: str, **extra: object) -> dict:
    return {"type": "xmpp.stanza", "xml": xml, **extra}


# == what is re-routed (pure) ============================================================================


def test_a_chat_message_is_handed_to_the_router():
    out = reroutable(
        stanza("<message xmlns='jabber:client' from='a@localhost/x' to='b@localhost/y' id='1'/>")
    )
    assert out is not None and out[0] == ROUTER_CHANNEL
    assert out[1]["type"] == "xmpp.route" and load(out[1]["xml"]).get("id") == "1"


def test_an_iq_request_is_handed_to_the_router_to_be_bounced():
    out = reroutable(stanza("<iq xmlns='jabber:client' type='get' from='a@localhost/x' to='b@localhost/y'/>"))
    assert out is not None and out[1]["type"] == "xmpp.route"


@pytest.mark.parametrize(
    "xml",
    [
        "<presence xmlns='jabber:client' from='a@localhost/x' to='b@localhost/y'/>",  # RFC 6121 §8.5.3.2.2
        "<message xmlns='jabber:client' type='error' from='a@localhost/x' to='b@localhost/y'/>",  # §8.3.1
        "<iq xmlns='jabber:client' type='result' from='a@localhost/x' to='b@localhost/y'/>",
        "<iq xmlns='jabber:client' type='set' to='b@localhost/y'/>",  # a roster push: no sender to tell
        "<message xmlns='jabber:client' to='b@localhost/y'",  # unreadable
    ],
)
def test_presence_errors_results_and_sender_less_stanzas_are_not_re_routed(xml):
    assert reroutable(stanza(xml)) is None


def test_an_offline_message_being_delivered_is_not_stored_twice():
    xml = "<message xmlns='jabber:client' from='a@localhost/x' to='b@localhost' id='o'/>"
    assert reroutable(stanza(xml, offline_id=7)) is None


def test_control_messages_are_not_re_routed():
    assert reroutable({"type": "xmpp.close", "condition": "conflict"}) is None


# == the sweep against Redis and the registry ============================================================


@pytest.fixture
def redis_layer():
    if NO_REDIS:
        pytest.skip(NO_REDIS)
    import redis
    from channels_redis.core import RedisChannelLayer

    prefix = f"test-liveness-{uuid.uuid4().hex}:"
    layer = RedisChannelLayer(hosts=[REDIS_TEST_URL], prefix=prefix)
    client = redis.Redis.from_url(REDIS_TEST_URL)
    yield layer, client
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)


def session_row(process: str, channel: str, jid: str = "bob@localhost/dead") -> LiveSession:
    now = timezone.now()
    return LiveSession.objects.create(
        full_jid=jid,
        bare_jid=jid.split("/")[0],
        resource=jid.split("/")[1],
        transport="tcp",
        channel_name=channel,
        process_id=process,
        started_at=now,
        lease_expires_at=now + timedelta(seconds=30),
    )


def sure_of_redis(watcher: Liveness) -> Liveness:
    watcher.ok_since = time.monotonic() - watcher.seconds - 1
    watcher.epoch = watcher.client.get(watcher.epoch_key)  # as its refreshes saw it
    return watcher


@pytest.mark.django_db(transaction=True)
def test_a_process_without_its_key_is_swept_its_rows_go_and_its_waiting_stanzas_are_re_routed(redis_layer):
    layer, client = redis_layer
    dead = f"dead:{uuid.uuid4().hex}"
    channel = f"specific.{uuid.uuid4().hex}!{uuid.uuid4().hex}"
    session_row(dead, channel)
    xml = "<message xmlns='jabber:client' from='a@localhost/x' to='bob@localhost/dead' id='w1'/>"
    async_to_sync(layer.send)(channel, stanza(xml))
    async_to_sync(layer.send)(channel, stanza("<presence xmlns='jabber:client' from='a@localhost/x'/>"))

    me = sure_of_redis(Liveness(client, layer, process=f"me:{uuid.uuid4().hex}", seconds=2))
    outs = me.sweep()

    assert [load(message["xml"]).get("id") for _, message in outs] == ["w1"]
    assert not LiveSession.objects.filter(process_id=dead).exists()
    assert client.zcard(liveness.channel_key(layer, channel)) == 0
    # A second sweeper finds the process claimed (and its rows gone): nothing twice.
    other = sure_of_redis(Liveness(client, layer, process=f"other:{uuid.uuid4().hex}", seconds=2))
    assert other.sweep() == []
    # A sender that read the rows before they went: drained again by the claimant.
    async_to_sync(layer.send)(channel, stanza(xml.replace("w1", "w2")))
    assert [load(message["xml"]).get("id") for _, message in me.sweep()] == ["w2"]
    client.delete(SWEPT_KEY + dead)


@pytest.mark.django_db(transaction=True)
def test_a_process_whose_key_is_refreshed_is_left_alone(redis_layer):
    layer, client = redis_layer
    alive = Liveness(client, layer, process=f"alive:{uuid.uuid4().hex}", seconds=2)
    assert alive.refresh() is False
    channel = f"specific.{uuid.uuid4().hex}!{uuid.uuid4().hex}"
    session_row(alive.process, channel)
    async_to_sync(layer.send)(channel, stanza("<message xmlns='jabber:client' from='a@localhost/x' id='k'/>"))

    me = sure_of_redis(Liveness(client, layer, process=f"me:{uuid.uuid4().hex}", seconds=2))
    assert me.sweep() == []
    assert LiveSession.objects.filter(process_id=alive.process).count() == 1
    assert client.zcard(liveness.channel_key(layer, channel)) == 1
    client.delete(ALIVE_KEY + alive.process)


@pytest.mark.django_db(transaction=True)
def test_no_sweep_until_redis_has_answered_for_the_whole_bound(redis_layer):
    """After a Redis outage every key may be gone: nobody is called dead until they had time to refresh."""
    layer, client = redis_layer
    dead = f"dead:{uuid.uuid4().hex}"
    session_row(dead, f"specific.{uuid.uuid4().hex}!x")
    me = Liveness(client, layer, process=f"me:{uuid.uuid4().hex}", seconds=2)
    assert me.refresh() is False  # Redis answers from now on
    assert me.sweep() == []
    assert LiveSession.objects.filter(process_id=dead).exists()
    sure_of_redis(me)
    assert me.sweep() == [] and not LiveSession.objects.filter(process_id=dead).exists()
    client.delete(SWEPT_KEY + dead, ALIVE_KEY + me.process)


def test_a_refresh_that_cannot_reach_redis_forgets_that_redis_was_reachable():
    import redis

    me = Liveness(
        redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1), None, process="p", seconds=2
    )
    me.ok_since = 0.0
    assert me.refresh() is False and me.ok_since is None
    assert me.sweep() == []


@pytest.mark.django_db(transaction=True)
def test_a_swept_process_learns_it_at_its_next_refresh(redis_layer):
    layer, client = redis_layer
    me = Liveness(client, layer, process=f"me:{uuid.uuid4().hex}", seconds=2)
    assert me.refresh() is False
    client.set(SWEPT_KEY + me.process, "someone", ex=60)
    assert me.refresh() is True  # the caller then ends its sessions with internal-server-error
    client.delete(SWEPT_KEY + me.process, ALIVE_KEY + me.process)


@pytest.mark.django_db(transaction=True)
def test_a_redis_that_lost_its_keys_calls_nobody_dead_until_it_answered_for_a_whole_bound(redis_layer):
    """A Redis restarted empty has no liveness key at all: the processes are not dead, they will refresh."""
    layer, client = redis_layer
    quiet = f"quiet:{uuid.uuid4().hex}"  # alive, but its key went with the restart and it has not refreshed
    session_row(quiet, f"specific.{uuid.uuid4().hex}!x")
    me = Liveness(client, layer, process=f"me:{uuid.uuid4().hex}", seconds=2)
    assert me.refresh() is False
    sure_of_redis(me)
    client.delete(me.epoch_key, ALIVE_KEY + me.process)  # the restart: every key gone
    assert me.sweep() == []  # the sweep sees the new epoch before it looks at anyone's key
    assert LiveSession.objects.filter(process_id=quiet).exists()
    assert me.refresh() is False and me.sweep() == []  # and waits a whole bound from now
    sure_of_redis(me)
    assert me.sweep() == [] and not LiveSession.objects.filter(process_id=quiet).exists()  # then it is dead
    client.delete(SWEPT_KEY + quiet, ALIVE_KEY + me.process, me.epoch_key)
