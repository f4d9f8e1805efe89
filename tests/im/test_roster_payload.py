"""RFC 6121 §2: parsing roster sets and building items."""

from __future__ import annotations

from xml.etree.ElementTree import fromstring

import pytest

from transport.xmpp.im.roster import GROUP, RosterSetError, item_element, parse_set


def query(inner: str):
    return fromstring(f"<query xmlns='jabber:iq:roster'>{inner}</query>")


def test_roster_set_with_name_and_groups():
    result = parse_set(query("<item jid='Bob@Example.com' name='Bob'><group>Friends</group></item>"), "a@x")
    assert (result.jid, result.name, result.groups, result.remove) == (
        "bob@example.com",
        "Bob",
        ("Friends",),
        False,
    )


def test_roster_set_with_subscription_remove_is_a_removal():
    assert parse_set(query("<item jid='bob@example.com' subscription='remove'/>"), "a@x").remove


def test_subscription_values_other_than_remove_are_ignored():
    assert not parse_set(query("<item jid='bob@example.com' subscription='both'/>"), "a@x").remove


@pytest.mark.parametrize(
    ("inner", "condition"),
    [
        ("", "bad-request"),
        ("<item jid='a@example.com'/><item jid='b@example.com'/>", "bad-request"),
        ("<item jid='bob@example.com/res'/>", "bad-request"),
        ("<item jid='@@'/>", "bad-request"),
        ("<item jid='bob@example.com'><group>g</group><group>g</group></item>", "bad-request"),
        ("<item jid='bob@example.com'><group> </group></item>", "not-acceptable"),
        ("<item jid='a@x'/>", "not-allowed"),
    ],
)
def test_bad_roster_sets_are_refused_with_the_rfc_condition(inner, condition):
    with pytest.raises(RosterSetError) as info:
        parse_set(query(inner), "a@x")
    assert info.value.condition == condition


def test_item_shows_ask_only_when_pending_out():
    assert item_element("b@x", ask=True).get("ask") == "subscribe"
    item = item_element("b@x", name="B", groups=["g1", "g2"], subscription="both")
    assert item.get("ask") is None and item.get("subscription") == "both"
    assert [g.text for g in item.findall(GROUP)] == ["g1", "g2"]
