"""The admin shows rosters and offline messages (RFC 6121, XEP-0160) but adds none by hand."""

from __future__ import annotations

import pytest

from accounts.models import Account, Domain, OfflineMessage, RosterItem

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice() -> Account:
    return Account.objects.create(localpart="alice", domain=Domain.objects.create(name="localhost"))


def test_operator_sees_roster_items_and_offline_messages(staff_client, alice):
    RosterItem.objects.create(account=alice, jid="bob@localhost", subscription="both")
    OfflineMessage.objects.create(account=alice, stanza="<message/>", sender="carol@localhost/x")
    roster = staff_client.get("/admin/accounts/rosteritem/")
    offline = staff_client.get("/admin/accounts/offlinemessage/")
    assert roster.status_code == 200 and b"bob@localhost" in roster.content
    assert offline.status_code == 200 and b"carol@localhost/x" in offline.content


@pytest.mark.parametrize("model", ["rosteritem", "offlinemessage"])
def test_operator_cannot_add_them_by_hand(staff_client, model):
    assert staff_client.get(f"/admin/accounts/{model}/add/").status_code == 403


@pytest.mark.parametrize("model", ["rosteritem", "offlinemessage"])
def test_anonymous_users_do_not_see_them(client, model):
    assert client.get(f"/admin/accounts/{model}/").status_code == 302  # to the login page
