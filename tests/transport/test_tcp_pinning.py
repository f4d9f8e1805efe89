"""``selfsigned_peer`` pinning end to end: slixmpp over real TLS on loopback against the real listener,
core, authenticator and database (issue 12 point 3).

A first self-signed login pins its certificate to the account; another self-signed certificate naming the
same account is refused with ``not-authorized``; after an admin clears the pins (through the admin pages),
the next self-signed login pins again.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from accounts.models import Account, Domain
from certauth.models import AuthEvent, SelfSignedPin
from tests.certs import make_self_signed
from tests.transport.rawxmpp import auth_external, sasl, sasl_failure_condition, starttls
from tests.transport.tlsclient import client_context
from tests.transport.xmppclient import slixmpp_login

pytestmark = pytest.mark.django_db(transaction=True)

CAROL = "carol@localhost"
MODES = [("starttls", False), ("tls", True)]
MODE_IDS = ["starttls", "direct_tls"]


def assert_bound_as(outcome, bare: str) -> None:
    assert outcome.bound_jid is not None, outcome
    assert outcome.bound_jid.partition("/")[0] == bare, outcome


def assert_refused(outcome, condition: str) -> None:
    assert outcome.bound_jid is None, outcome
    assert outcome.sasl_failures == [condition], outcome


def last_event() -> AuthEvent:
    return AuthEvent.objects.order_by("-pk").first()


def pinned() -> set[str]:
    return set(SelfSignedPin.objects.values_list("fingerprint_sha256", flat=True))


@pytest.mark.parametrize(("mode", "direct"), MODES, ids=MODE_IDS)
def test_first_self_signed_login_pins_and_another_certificate_is_refused(c2s, tmp_path, mode, direct):
    port = c2s(mode, verify_mode="selfsigned_peer")
    first, other = make_self_signed(jids=[CAROL]), make_self_signed(jids=[CAROL])

    assert_bound_as(slixmpp_login(port, tmp_path, first, jid=CAROL, direct_tls=direct), CAROL)
    event = last_event()
    assert event.outcome == AuthEvent.Outcome.SUCCESS
    assert f"pinned to {CAROL} at first login (trust on first use)" in event.reason
    pin = SelfSignedPin.objects.get()
    assert pin.fingerprint_sha256 == first.facts.fingerprint_sha256
    assert pin.account == Account.objects.by_jid(CAROL) and pin.origin == SelfSignedPin.Origin.FIRST_LOGIN
    assert pin.peer.startswith("127.0.0.1:")

    assert_refused(slixmpp_login(port, tmp_path, other, jid=CAROL, direct_tls=direct), "not-authorized")
    event = last_event()
    assert event.outcome == AuthEvent.Outcome.FAILURE and event.condition == "not-authorized"
    assert event.cert_fingerprint == other.facts.fingerprint_sha256
    assert f"is not pinned to {CAROL}" in event.reason

    assert_bound_as(slixmpp_login(port, tmp_path, first, jid=CAROL, direct_tls=direct), CAROL)
    assert pinned() == {first.facts.fingerprint_sha256}


def test_client_refused_by_a_pin_reads_the_generic_failure_and_the_reason_stays_in_the_event(c2s, tmp_path):
    port = c2s("starttls", verify_mode="selfsigned_peer")
    first, other = make_self_signed(jids=[CAROL]), make_self_signed(jids=[CAROL])
    assert_bound_as(slixmpp_login(port, tmp_path, first, jid=CAROL), CAROL)
    sock, features = starttls(port, client_context(tmp_path, other))
    with sock:
        assert b"<mechanism>EXTERNAL</mechanism>" in features  # the certificate passed; the pin decides
        answer = sasl(sock, auth_external("="))
    assert sasl_failure_condition(answer) == "not-authorized"
    assert b"pinned" not in answer and other.facts.fingerprint_sha256[:16].encode() not in answer
    event = last_event()
    assert event.condition == "not-authorized" and f"is not pinned to {CAROL}" in event.reason


def test_admin_clears_the_pin_and_the_next_self_signed_login_pins_again(c2s, tmp_path, staff_client):
    port = c2s("starttls", verify_mode="selfsigned_peer")
    first, second = make_self_signed(jids=[CAROL]), make_self_signed(jids=[CAROL])
    assert_bound_as(slixmpp_login(port, tmp_path, first, jid=CAROL), CAROL)
    assert_refused(slixmpp_login(port, tmp_path, second, jid=CAROL), "not-authorized")

    carol = Account.objects.by_jid(CAROL)
    response = staff_client.post(reverse("admin:accounts_account_clear_pins", args=[carol.pk]))
    assert response.status_code == 302
    assert pinned() == set()

    assert_bound_as(slixmpp_login(port, tmp_path, second, jid=CAROL), CAROL)
    assert pinned() == {second.facts.fingerprint_sha256}
    assert "at first login (trust on first use)" in last_event().reason
    assert_refused(slixmpp_login(port, tmp_path, first, jid=CAROL), "not-authorized")


def test_admin_pin_by_fingerprint_before_any_login(c2s, tmp_path, staff_client):
    port = c2s("tls", verify_mode="selfsigned_peer")
    device, stranger = make_self_signed(jids=[CAROL]), make_self_signed(jids=[CAROL])
    domain = Domain.objects.get_or_create(name="localhost")[0]
    carol = Account.objects.create(localpart="carol", domain=domain)
    url = reverse("admin:accounts_account_pin", args=[carol.pk])
    assert staff_client.post(url, {"fingerprint": device.facts.fingerprint_sha256}).status_code == 302

    assert_refused(slixmpp_login(port, tmp_path, stranger, jid=CAROL, direct_tls=True), "not-authorized")
    assert_bound_as(slixmpp_login(port, tmp_path, device, jid=CAROL, direct_tls=True), CAROL)
    assert pinned() == {device.facts.fingerprint_sha256}  # the refused one was not pinned on first use


def test_ca_issued_certificate_logs_in_on_a_selfsigned_peer_listener_whatever_the_pins(c2s, tmp_path, pki):
    port = c2s("starttls", verify_mode="selfsigned_peer")
    own = make_self_signed(jids=["alice@localhost"])
    assert_bound_as(slixmpp_login(port, tmp_path, own), "alice@localhost")  # pins alice's self-signed one
    assert_bound_as(slixmpp_login(port, tmp_path, pki.valid), "alice@localhost")  # CA-issued: not pinned
    assert pinned() == {own.facts.fingerprint_sha256}
