"""RFC 6121 §8.5: delivery of messages, presence and IQs to local accounts."""

from __future__ import annotations

import pytest

from transport.xmpp.im.delivery import (
    Action,
    Resource,
    decide,
    iq_to_bare,
    iq_to_full,
    message_to_bare,
    message_to_full,
    presence_to_bare,
    presence_to_full,
    to_unknown_account,
)

PHONE = Resource("phone", 5, True)
LAPTOP = Resource("laptop", 10, True)
DESK = Resource("desk", 10, True)
AWAY = Resource("away", -1, True)  # negative priority: never gets bare-JID messages
BOUND = Resource("bound", 50, False)  # bound, no presence sent yet


def test_normal_message_to_bare_jid_goes_to_the_highest_priority_resources():
    decision = message_to_bare("normal", [PHONE, LAPTOP, DESK, AWAY, BOUND])
    assert decision.action is Action.DELIVER and set(decision.resources) == {"laptop", "desk"}


def test_message_without_type_is_normal():
    assert message_to_bare(None, [PHONE, LAPTOP]).resources == ("laptop",)


def test_chat_message_to_bare_jid_goes_to_every_non_negative_available_resource():
    decision = message_to_bare("chat", [PHONE, LAPTOP, AWAY, BOUND])
    assert set(decision.resources) == {"phone", "laptop"}


def test_headline_to_bare_jid_goes_to_every_non_negative_available_resource():
    assert set(message_to_bare("headline", [PHONE, AWAY]).resources) == {"phone"}


@pytest.mark.parametrize("kind", ["normal", "chat"])
def test_message_with_only_negative_or_unavailable_resources_is_stored_offline(kind):
    assert message_to_bare(kind, [AWAY, BOUND]).action is Action.STORE
    assert message_to_bare(kind, []).action is Action.STORE


def test_headline_with_no_available_resource_is_dropped():
    assert message_to_bare("headline", [AWAY]).action is Action.DROP


def test_groupchat_to_bare_jid_is_service_unavailable():
    decision = message_to_bare("groupchat", [LAPTOP])
    assert decision.action is Action.ERROR and decision.condition == "service-unavailable"


def test_error_message_to_bare_jid_is_dropped():
    assert message_to_bare("error", [LAPTOP]).action is Action.DROP


def test_message_to_a_connected_full_jid_goes_there_even_at_negative_priority_or_without_presence():
    assert message_to_full("chat", "away", [AWAY, LAPTOP]).resources == ("away",)
    assert message_to_full("groupchat", "bound", [BOUND]).resources == ("bound",)


def test_chat_to_a_missing_resource_is_treated_as_to_the_bare_jid():
    assert set(message_to_full("chat", "gone", [PHONE, LAPTOP]).resources) == {"phone", "laptop"}
    assert message_to_full("chat", "gone", []).action is Action.STORE


def test_groupchat_to_a_missing_resource_is_service_unavailable():
    assert message_to_full("groupchat", "gone", [LAPTOP]).action is Action.ERROR


def test_error_message_to_a_missing_resource_is_dropped():
    assert message_to_full("error", "gone", [LAPTOP]).action is Action.DROP


def test_presence_to_bare_jid_goes_to_every_available_resource_including_negative_priority():
    assert set(presence_to_bare(None, [AWAY, LAPTOP, BOUND]).resources) == {"away", "laptop"}


def test_subscription_request_with_no_available_resource_is_stored():
    assert presence_to_bare("subscribe", [BOUND]).action is Action.STORE


def test_available_presence_with_no_available_resource_is_dropped():
    assert presence_to_bare(None, []).action is Action.DROP
    assert presence_to_bare("unavailable", [BOUND]).action is Action.DROP


def test_probe_is_answered_by_the_server():
    assert presence_to_bare("probe", [LAPTOP]).action is Action.SERVER
    assert presence_to_full("probe", "laptop", [LAPTOP]).action is Action.SERVER


def test_directed_presence_to_a_connected_full_jid_is_delivered_and_to_a_missing_one_dropped():
    assert presence_to_full(None, "bound", [BOUND]).resources == ("bound",)
    assert presence_to_full("unavailable", "gone", [LAPTOP]).action is Action.DROP


def test_subscription_stanza_to_a_full_jid_is_handled_as_to_the_bare_jid():
    assert set(presence_to_full("subscribe", "gone", [LAPTOP, PHONE]).resources) == {"laptop", "phone"}


def test_iq_to_a_connected_full_jid_is_delivered_even_without_presence():
    assert iq_to_full("get", "bound", [BOUND]).resources == ("bound",)


def test_iq_get_or_set_to_a_missing_full_jid_is_service_unavailable():
    assert iq_to_full("get", "gone", [LAPTOP]).condition == "service-unavailable"
    assert iq_to_full("set", "gone", []).action is Action.ERROR


def test_iq_result_or_error_to_a_missing_full_jid_is_dropped():
    assert iq_to_full("result", "gone", []).action is Action.DROP
    assert iq_to_full("error", "gone", []).action is Action.DROP


def test_iq_to_bare_jid_is_the_servers_to_answer():
    assert iq_to_bare("get").action is Action.SERVER
    assert iq_to_bare("result").action is Action.DROP


@pytest.mark.parametrize(("stanza", "kind"), [("message", "chat"), ("message", None), ("iq", "get")])
def test_message_or_iq_to_an_unknown_account_is_service_unavailable(stanza, kind):
    decision = to_unknown_account(stanza, kind)
    assert decision.action is Action.ERROR and decision.condition == "service-unavailable"


@pytest.mark.parametrize("kind", [None, "subscribe", "probe", "unavailable"])
def test_presence_to_an_unknown_account_is_silently_ignored(kind):
    assert to_unknown_account("presence", kind).action is Action.DROP


def test_errors_to_an_unknown_account_are_never_answered():
    assert to_unknown_account("message", "error").action is Action.DROP
    assert to_unknown_account("iq", "result").action is Action.DROP


def test_decide_dispatches_on_stanza_and_resource():
    assert decide("message", "chat", None, [LAPTOP]).resources == ("laptop",)
    assert decide("presence", None, "laptop", [LAPTOP]).resources == ("laptop",)
    assert decide("iq", "get", "gone", [LAPTOP]).action is Action.ERROR
