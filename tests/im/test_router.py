"""The router against the database and the session registry, without processes or sockets.

Specs: RFC 6121 §2 (roster), §3 (subscriptions), §4 (presence), §8.5 (delivery), XEP-0160 (offline storage).
Sessions are ``LiveSession`` rows with channel names; the router's answer is the list of (channel, message).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from xml.etree.ElementTree import fromstring

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Account, Domain, OfflineMessage, RosterItem
from transport.im import router as router_module
from transport.im.router import ROUTER_CHANNEL, Router, load, older_sessions
from transport.sessions.models import LiveSession

pytestmark = pytest.mark.django_db

C = "{jabber:client}"
ROSTER_SET = (
    "<iq type='set' id='{id}'><query xmlns='jabber:iq:roster'><item jid='bob@localhost'{attrs}/></query></iq>"
)
SET_BOB = ROSTER_SET.format(id="s", attrs=" name='B'")
REMOVE_BOB = ROSTER_SET.format(id="x", attrs=" subscription='remove'")
R = "{jabber:iq:roster}"


@pytest.fixture(autouse=True)
def fresh_cache():
    router_module._cache.clear()  # accounts remembered by an earlier test's database are gone
    yield
    router_module._cache.clear()


@pytest.fixture
def domain():
    return Domain.objects.create(name="localhost")


@pytest.fixture
def accounts(domain):
    return {name: Account.objects.create(localpart=name, domain=domain) for name in ("alice", "bob", "carol")}


def live(
    full_jid: str, *, priority: int = 0, available: bool = True, expired: bool = False, session_id=None, age=0
) -> str:
    """A registry row for ``full_jid``, started ``age`` seconds ago; returns its channel name."""
    session_id = session_id or uuid.uuid4()
    channel = f"specific.test!{session_id.hex}"  # a valid Channels name
    now = timezone.now() - timedelta(seconds=age)
    LiveSession.objects.create(
        id=session_id,
        full_jid=full_jid,
        bare_jid=full_jid.split("/")[0],
        resource=full_jid.split("/")[1],
        transport="tcp",
        channel_name=channel,
        process_id="test",
        started_at=now,
        lease_expires_at=timezone.now() + timedelta(seconds=-1 if expired else 30),
        priority=priority,
        presence="available" if available else "",
    )
    return channel


def stanza(xml: str, sender: str):
    element = fromstring(
        xml.replace("<message", "<message xmlns='jabber:client'", 1)
        .replace("<iq", "<iq xmlns='jabber:client'", 1)
        .replace("<presence", "<presence xmlns='jabber:client'", 1)
    )
    element.set("from", sender)
    return element


def stanzas(outs, channel=None):
    """The stanzas sent (to ``channel`` only, when given)."""
    return [
        load(m["xml"]) for c, m in outs if m["type"] == "xmpp.stanza" and (channel is None or c == channel)
    ]


def error_condition(element) -> str | None:
    error = element.find(f"{C}error")
    return None if error is None else error[0].tag.split("}")[1]


def roster_row(owner: Account, jid: str, subscription: str = "none", **fields) -> RosterItem:
    return RosterItem.objects.create(account=owner, jid=jid, subscription=subscription, **fields)


# == messages (RFC 6121 §8.5) ============================================================================


def test_chat_to_a_bare_jid_goes_to_every_non_negative_available_session(accounts):
    sender = live("alice@localhost/a")
    phone, laptop = live("bob@localhost/phone", priority=1), live("bob@localhost/laptop", priority=5)
    away = live("bob@localhost/away", priority=-1)
    outs = Router(final=False).from_client(
        stanza("<message to='bob@localhost' type='chat'><body>hi</body></message>", "alice@localhost/a"),
        sender,
    )
    assert {c for c, _ in outs} == {phone, laptop}
    assert away not in {c for c, _ in outs}


def test_normal_message_to_a_bare_jid_goes_to_the_highest_priority_only(accounts):
    sender = live("alice@localhost/a")
    live("bob@localhost/phone", priority=1)
    laptop = live("bob@localhost/laptop", priority=5)
    outs = Router(final=False).from_client(
        stanza("<message to='bob@localhost'><body>x</body></message>", "alice@localhost/a"), sender
    )
    assert [c for c, _ in outs] == [laptop]


def test_message_for_an_account_without_sessions_goes_to_the_router_which_stores_it(accounts):
    sender = live("alice@localhost/a")
    message = stanza(
        "<message to='bob@localhost' type='chat'><body>later</body></message>", "alice@localhost/a"
    )
    outs = Router(final=False).from_client(message, sender)
    assert [(c, m["type"]) for c, m in outs] == [(ROUTER_CHANNEL, "xmpp.route")]
    assert not OfflineMessage.objects.exists()  # a listener never stores
    assert Router(final=True, process="router-1").routed(outs[0][1]) == []
    stored = OfflineMessage.objects.get()
    assert stored.account == accounts["bob"] and stored.stored_by == "router-1"
    assert load(stored.stanza).find("{urn:xmpp:delay}delay") is not None  # XEP-0203 stamp


def test_the_router_delivers_instead_of_storing_when_the_account_came_online_meanwhile(accounts):
    live("alice@localhost/a")
    message = stanza(
        "<message to='bob@localhost' type='chat'><body>race</body></message>", "alice@localhost/a"
    )
    forwarded = Router(final=False).from_client(message, "")[0][1]
    bob = live("bob@localhost/b")
    outs = Router(final=True).routed(forwarded)
    assert [c for c, _ in outs] == [bob] and not OfflineMessage.objects.exists()


def test_a_session_whose_lease_ran_out_is_a_ghost_and_gets_nothing(accounts):
    live("alice@localhost/a")
    live("bob@localhost/ghost", expired=True)
    outs = Router(final=False).from_client(
        stanza("<message to='bob@localhost/ghost' type='chat'><body>x</body></message>", "alice@localhost/a"),
        "",
    )
    assert [c for c, _ in outs] == [ROUTER_CHANNEL]


def test_message_to_an_unknown_account_bounces_service_unavailable(accounts):
    sender = live("alice@localhost/a")
    outs = Router(final=False).from_client(
        stanza("<message to='nobody@localhost' id='m1'><body>x</body></message>", "alice@localhost/a"), sender
    )
    [reply] = stanzas(outs, sender)
    assert error_condition(reply) == "service-unavailable" and reply.get("id") == "m1"


def test_message_to_a_domain_we_do_not_host_is_remote_server_not_found(accounts):
    sender = live("alice@localhost/a")
    outs = Router(final=False).from_client(
        stanza("<message to='bob@example.net'><body>x</body></message>", "alice@localhost/a"), sender
    )
    assert error_condition(stanzas(outs, sender)[0]) == "remote-server-not-found"


# == IQs =================================================================================================


def test_iq_to_a_live_full_jid_is_delivered_and_to_a_missing_one_is_service_unavailable(accounts):
    sender = live("alice@localhost/a")
    bob = live("bob@localhost/b", available=False)  # IQs need no presence (RFC 6121 §8.5.3.1)
    router = Router(final=False)
    outs = router.from_client(
        stanza("<iq type='get' id='v' to='bob@localhost/b'><q xmlns='x'/></iq>", "alice@localhost/a"), sender
    )
    assert [c for c, _ in outs] == [bob]
    outs = router.from_client(
        stanza("<iq type='get' id='w' to='bob@localhost/gone'><q xmlns='x'/></iq>", "alice@localhost/a"),
        sender,
    )
    assert error_condition(stanzas(outs, sender)[0]) == "service-unavailable"


# == roster (RFC 6121 §2) ================================================================================


def test_roster_get_lists_the_items_on_the_roster_with_ask(accounts):
    sender = live("alice@localhost/a")
    roster_row(accounts["alice"], "bob@localhost", "to", name="Bob", groups=["Friends"])
    roster_row(accounts["alice"], "carol@localhost", ask=True)
    roster_row(accounts["alice"], "dave@localhost", pending_in=True, on_roster=False)  # only a request
    outs = Router(final=False).from_client(
        stanza("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>", "alice@localhost/a"), sender
    )
    items = {i.get("jid"): i for i in stanzas(outs, sender)[0].iter(f"{R}item")}
    assert set(items) == {"bob@localhost", "carol@localhost"}
    assert (
        items["bob@localhost"].get("subscription") == "to"
        and items["bob@localhost"].findtext(f"{R}group") == "Friends"
    )
    assert items["carol@localhost"].get("ask") == "subscribe"


def test_roster_set_is_pushed_to_every_session_of_the_account_and_answered(accounts):
    first, second = live("alice@localhost/a"), live("alice@localhost/b", available=False)
    outs = Router(final=False).from_client(
        stanza(
            SET_BOB,
            "alice@localhost/a",
        ),
        first,
    )
    pushes = [(c, s) for c, m in outs for s in [load(m["xml"])] if s.get("type") == "set"]
    assert {c for c, _ in pushes} == {first, second}
    assert [s.get("type") for s in stanzas(outs, first)] == ["set", "result"]
    assert RosterItem.objects.get(account=accounts["alice"]).name == "B"


def test_roster_remove_cancels_both_subscriptions_and_pushes_remove(accounts):
    sender = live("alice@localhost/a")
    bob = live("bob@localhost/b")
    roster_row(accounts["alice"], "bob@localhost", "both")
    roster_row(accounts["bob"], "alice@localhost", "both")
    outs = Router(final=False).from_client(
        stanza(
            REMOVE_BOB,
            "alice@localhost/a",
        ),
        sender,
    )
    assert not RosterItem.objects.filter(account=accounts["alice"]).exists()
    assert RosterItem.objects.get(account=accounts["bob"]).subscription == "none"  # RFC 6121 §2.5.2
    kinds = {s.get("type") for s in stanzas(outs, bob) if s.tag == f"{C}presence"}
    assert kinds == {"unsubscribe", "unsubscribed"}
    assert any(i.get("subscription") == "remove" for s in stanzas(outs, sender) for i in s.iter(f"{R}item"))


def test_removing_an_item_not_on_the_roster_is_item_not_found(accounts):
    sender = live("alice@localhost/a")
    outs = Router(final=False).from_client(
        stanza(
            REMOVE_BOB,
            "alice@localhost/a",
        ),
        sender,
    )
    assert error_condition(stanzas(outs, sender)[0]) == "item-not-found"


# == subscriptions and presence (RFC 6121 §3, §4) ========================================================


def test_subscription_request_to_an_offline_contact_waits_in_the_router_until_their_initial_presence(
    accounts,
):
    sender = live("alice@localhost/a")
    outs = Router(final=False).from_client(
        stanza("<presence type='subscribe' to='bob@localhost'/>", "alice@localhost/a"), sender
    )
    forwarded = [m for c, m in outs if c == ROUTER_CHANNEL]
    assert [m["step"] for m in forwarded] == ["inbound"]
    assert RosterItem.objects.get(account=accounts["alice"]).ask  # Pending Out, pushed to alice
    Router(final=True).routed(forwarded[0])
    item = RosterItem.objects.get(account=accounts["bob"])
    assert item.pending_in and not item.on_roster
    # bob logs in: his initial presence brings the request (RFC 6121 §3.1.3)
    bob = live("bob@localhost/b", available=False)
    presence = stanza("<presence/>", "bob@localhost/b")
    outs = Router(final=False).broadcast(presence, None, bob, initial=True)
    requests = [s for s in stanzas(outs, bob) if s.get("type") == "subscribe"]
    assert [r.get("from") for r in requests] == ["alice@localhost"]


def test_subscribe_from_an_approved_contact_is_answered_subscribed_by_the_server(accounts):
    sender = live("alice@localhost/a")
    live("bob@localhost/b")
    roster_row(accounts["bob"], "alice@localhost", "from")
    roster_row(accounts["alice"], "bob@localhost", "none", ask=False)
    outs = Router(final=False).from_client(
        stanza("<presence type='subscribe' to='bob@localhost'/>", "alice@localhost/a"), sender
    )
    assert RosterItem.objects.get(account=accounts["alice"]).subscription == "to"
    assert any(s.get("type") == "subscribed" for s in stanzas(outs, sender))


def test_presence_broadcast_reaches_from_and_both_subscribers_only(accounts):
    sender = live("alice@localhost/a")
    bob, carol = live("bob@localhost/b"), live("carol@localhost/c")
    roster_row(accounts["alice"], "bob@localhost", "from")
    roster_row(accounts["alice"], "carol@localhost", "to")
    outs = Router(final=False).broadcast(
        stanza("<presence/>", "alice@localhost/a"), None, sender, initial=False
    )
    assert [s.get("to") for s in stanzas(outs, bob)] == ["bob@localhost/b"]
    assert stanzas(outs, carol) == []


def test_initial_presence_probes_the_contacts_it_is_subscribed_to(accounts):
    sender = live("alice@localhost/a")
    bob, carol = live("bob@localhost/b"), live("carol@localhost/c")
    roster_row(accounts["alice"], "bob@localhost", "to")
    roster_row(accounts["alice"], "carol@localhost", "from")
    outs = Router(final=False).broadcast(
        stanza("<presence/>", "alice@localhost/a"), None, sender, initial=True
    )
    probes = [(c, m) for c, m in outs if m["type"] == "xmpp.presence_request"]
    assert [(c, m["to"], m["reply_channel"]) for c, m in probes] == [(bob, "alice@localhost/a", sender)]
    assert carol in {c for c, m in outs if m["type"] == "xmpp.stanza"}  # carol gets the presence itself


def test_initial_presence_at_negative_priority_leaves_offline_messages_stored(accounts):
    sender = live("bob@localhost/b", available=False)
    OfflineMessage.objects.create(
        account=accounts["bob"], stanza="<message xmlns='jabber:client'/>", sender="x"
    )
    shy = stanza("<presence><priority>-1</priority></presence>", "bob@localhost/b")
    assert Router(final=False).broadcast(shy, None, sender, initial=True) == []
    assert OfflineMessage.objects.count() == 1
    outs = Router(final=False).broadcast(stanza("<presence/>", "bob@localhost/b"), None, sender, initial=True)
    assert len(stanzas(outs, sender)) == 1


def test_offline_messages_stay_stored_until_the_stream_has_taken_them(accounts):
    """XEP-0160 delivery that survives a crash: read with their ids, deleted by the session once written."""
    sender = live("bob@localhost/b", available=False)
    kept = [
        OfflineMessage.objects.create(
            account=accounts["bob"], stanza=f"<message xmlns='jabber:client' id='{n}'/>"
        )
        for n in ("m1", "m2")
    ]
    outs = Router(final=False).broadcast(stanza("<presence/>", "bob@localhost/b"), None, sender, initial=True)
    offline = [m for c, m in outs if c == sender and "offline_id" in m]
    assert [m["offline_id"] for m in offline] == [row.id for row in kept]
    assert OfflineMessage.objects.count() == 2  # a crash now loses nothing
    assert router_module.offline_delivered([kept[0].id]) == 1
    assert list(OfflineMessage.objects.values_list("id", flat=True)) == [kept[1].id]


def test_a_stanza_a_full_channel_refused_goes_back_to_its_sender_as_resource_constraint(accounts):
    """RFC 6120 §8.3: never dropped in silence; §8.3.3.18 resource-constraint (type wait)."""
    sender = live("alice@localhost/a")
    refused = stanza("<message to='bob@localhost/b' id='full' type='chat'><body>x</body></message>", "")
    refused.set("from", "alice@localhost/a")
    message = {"type": "xmpp.stanza", "xml": router_module.dump(refused)}
    outs = router_module.bounce_refused(Router(final=True), message)  # the sender is looked up
    [(channel, bounce)] = outs
    reply = load(bounce["xml"])
    assert channel == sender and (reply.get("id"), reply.get("type")) == ("full", "error")
    assert error_condition(reply) == "resource-constraint"
    assert reply.find(f"{C}error").get("type") == "wait"


def test_a_refused_error_or_offline_message_is_not_bounced(accounts):
    live("alice@localhost/a")
    error = "<message xmlns='jabber:client' type='error' from='alice@localhost/a' to='bob@localhost'/>"
    plain = "<message xmlns='jabber:client' from='alice@localhost/a' to='bob@localhost'/>"
    router = Router(final=True)
    assert router_module.bounce_refused(router, {"type": "xmpp.stanza", "xml": error}) == []  # §8.3.1
    offline = {"type": "xmpp.stanza", "xml": plain, "offline_id": 3}  # still stored: the next login gets it
    assert router_module.bounce_refused(router, offline) == []


def test_a_new_login_ends_only_the_older_sessions_of_its_full_jid(accounts):
    old, new, newer = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    live("alice@localhost/desk", session_id=old, age=20)
    live("alice@localhost/desk", session_id=new, age=10)
    live("alice@localhost/desk", session_id=newer, age=0)
    live("alice@localhost/phone", age=30)
    assert [s.session_id for s in older_sessions("alice@localhost/desk", new)] == [old]
    assert older_sessions("alice@localhost/desk", old) == []  # a racing older login does not end the newer


def test_older_sessions_breaks_a_start_time_tie_by_id_and_skips_expired_rows(accounts):
    low, high = sorted((uuid.uuid4(), uuid.uuid4()), key=str)
    same = timezone.now() - timedelta(seconds=5)
    for session_id in (low, high):
        live("alice@localhost/desk", session_id=session_id)
        LiveSession.objects.filter(id=session_id).update(started_at=same)
    live("alice@localhost/desk", age=60, expired=True)  # a dead process's row: not a conflict
    live("Alice@localhost/desk", age=60)  # another full JID (resource and localpart compare exactly)
    # Exactly one of two logins that started in the same microsecond ends the other.
    assert [s.session_id for s in older_sessions("alice@localhost/desk", high, same)] == [low]
    assert older_sessions("alice@localhost/desk", low, same) == []
    # The start time read from the row gives the same answer as the one the bridge passes.
    assert [s.session_id for s in older_sessions("alice@localhost/desk", high)] == [low]
    found = older_sessions("alice@localhost/desk", high)[0]
    assert found.channel == f"specific.test!{low.hex}" and found.available and found.priority == 0


def test_older_sessions_of_an_unsaved_session_without_a_start_time_is_empty(accounts):
    live("alice@localhost/desk", age=20)
    assert older_sessions("alice@localhost/desk", uuid.uuid4()) == []


def test_broadcast_reads_every_contacts_sessions_in_one_query(accounts, domain):
    """Initial presence to N contacts is one registry query, not one per contact (twice: presence, probe)."""
    sender = live("alice@localhost/a")
    channels = {}
    for n in range(5):
        Account.objects.create(localpart=f"friend{n}", domain=domain)
        roster_row(accounts["alice"], f"friend{n}@localhost", "both")
        channels[f"friend{n}@localhost"] = live(f"friend{n}@localhost/r")
    with CaptureQueriesContext(connection) as queries:
        outs = Router(final=False).broadcast(
            stanza("<presence/>", "alice@localhost/a"), None, sender, initial=True
        )
    registry_reads = [q for q in queries if q["sql"].startswith("SELECT") and "livesession" in q["sql"]]
    assert len(registry_reads) == 1, registry_reads
    for contact, channel in channels.items():  # each one got the presence and a probe, as before
        kinds = sorted(m["type"] for c, m in outs if c == channel)
        assert kinds == ["xmpp.presence_request", "xmpp.stanza"], (contact, kinds)


# == [xmppauth] max_offline_messages (MongooseIM mod_offline access_max_user_messages) ====================


def test_offline_messages_past_the_per_user_limit_are_bounced_service_unavailable(accounts, xmpp_options):
    xmpp_options(max_offline_messages=2)
    sender = live("alice@localhost/a")
    conditions = []
    for n in range(3):
        message = stanza(f"<message to='bob@localhost' id='o{n}' type='chat'><body>{n}</body></message>", "")
        message.set("from", "alice@localhost/a")
        replies = stanzas(Router(final=True).from_client(message, sender), sender)
        conditions.append([error_condition(r) for r in replies])
    assert conditions == [[], [], ["service-unavailable"]]  # XEP-0160 §3
    assert OfflineMessage.objects.filter(account=accounts["bob"]).count() == 2


def test_a_zero_offline_limit_stores_nothing_and_bounces(accounts, xmpp_options):
    xmpp_options(max_offline_messages=0)
    sender = live("alice@localhost/a")
    message = stanza("<message to='bob@localhost' id='z' type='chat'><body>x</body></message>", "")
    message.set("from", "alice@localhost/a")
    [reply] = stanzas(Router(final=True).from_client(message, sender), sender)
    assert error_condition(reply) == "service-unavailable" and not OfflineMessage.objects.exists()
