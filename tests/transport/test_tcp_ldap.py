"""End to end over TCP: auth method ``ldap`` against a real slapd, with slixmpp as the client.

PLAIN binds as the user's entry; EXTERNAL is allowed only for users in the directory (and, with
``match_certificate``, only with a certificate listed in the entry); a directory that is down answers
``temporary-auth-failure`` and logins come back when it does. Specs: MongooseIM's LDAP method
(doc/authentication-methods/ldap.md), RFC 4513 §5.1.3, RFC 6120 §6.5.12, issue 15 points 1-2.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from accounts.models import Account
from certauth.ldapdir import directory_for
from certauth.models import AuthEvent
from tests.certs import Issued, make_client
from tests.ldapserver import USERS_BASE, LdapUser, Slapd, pool_options
from tests.transport.rawxmpp import starttls
from tests.transport.tlsclient import client_context
from tests.transport.xmppclient import slixmpp_login
from xmppauth.config import AuthConfig, LdapAuthOptions

pytestmark = pytest.mark.django_db(transaction=True)

ALICE_PASSWORD = "alice in the directory"
BOB_PASSWORD = "bob in the directory"


class Certificates:
    def __init__(self, ca: Issued) -> None:
        self.alice = make_client(ca, jids=["alice@localhost"])  # listed in alice's entry
        self.bob = make_client(ca, jids=["bob@localhost"])  # bob's entry lists no certificate
        self.mallory = make_client(ca, jids=["mallory@localhost"])  # trusted CA, no entry


@pytest.fixture(scope="module")
def certificates(pki) -> Certificates:
    return Certificates(pki.ca)


@pytest.fixture(scope="module")
def slapd(certificates) -> Iterator[Slapd]:
    server = Slapd(
        [
            LdapUser("alice", ALICE_PASSWORD, certificates_der=[certificates.alice.der]),
            LdapUser("bob", BOB_PASSWORD),
        ]
    )
    server.start()
    yield server
    server.remove()


def ldap_auth(server: Slapd, *, match_certificate: bool = False, **pool_changes: object) -> AuthConfig:
    search = pool_options(server, **pool_changes)
    bind = replace(search, rootdn="", password="")
    options = LdapAuthOptions(
        base=USERS_BASE, pools=(("default", search), ("bind", bind)), match_certificate=match_certificate
    )
    return AuthConfig(methods=("ldap",), sasl_mechanisms=("plain", "external"), ldap=options)


@pytest.fixture(autouse=True)
def fresh_pools() -> Iterator[None]:
    directory_for.cache_clear()
    yield
    directory_for.cache_clear()


def bound(outcome, bare: str) -> bool:
    return outcome.bound_jid is not None and outcome.bound_jid.startswith(bare + "/")


def last_event() -> AuthEvent:
    return AuthEvent.objects.order_by("-id").first()


def test_password_of_a_directory_user_logs_in_and_creates_the_local_account(c2s, tmp_path, slapd):
    port = c2s("starttls", auth=ldap_auth(slapd), disconnect_on_failure=False)
    outcome = slixmpp_login(port, tmp_path, None, mechanism="PLAIN", password=ALICE_PASSWORD)
    assert bound(outcome, "alice@localhost"), outcome
    account = Account.objects.get(localpart="alice")
    assert account.created_by == Account.Origin.FIRST_LOGIN
    event = last_event()
    assert (event.outcome, event.jid_granted) == (AuthEvent.Outcome.SUCCESS, "alice@localhost")


@pytest.mark.parametrize(
    ("jid", "password"),
    [("alice@localhost", "wrong"), ("mallory@localhost", "anything")],
    ids=["wrong_password", "not_in_directory"],
)
def test_wrong_password_and_unknown_user_are_not_authorized(c2s, tmp_path, slapd, jid, password):
    port = c2s("starttls", auth=ldap_auth(slapd), disconnect_on_failure=False)
    outcome = slixmpp_login(port, tmp_path, None, jid=jid, mechanism="PLAIN", password=password)
    assert outcome.bound_jid is None and outcome.sasl_failures == ["not-authorized"], outcome
    assert last_event().outcome == AuthEvent.Outcome.FAILURE
    assert not Account.objects.filter(localpart=jid.partition("@")[0]).exists()


def test_scram_is_not_offered_with_ldap_only(c2s, tmp_path, slapd, pki):
    port = c2s("starttls", auth=ldap_auth(slapd), disconnect_on_failure=False)
    sock, features = starttls(port, client_context(tmp_path, pki.valid))
    sock.close()
    mechanisms = [m.decode() for m in re.findall(rb"<mechanism>([^<]+)</mechanism>", features)]
    assert mechanisms == ["PLAIN", "EXTERNAL"]


def test_certificate_of_a_directory_user_logs_in_and_of_an_absent_one_does_not(
    c2s, tmp_path, slapd, certificates
):
    port = c2s("starttls", auth=ldap_auth(slapd), disconnect_on_failure=False)
    assert bound(slixmpp_login(port, tmp_path, certificates.bob), "bob@localhost")
    outcome = slixmpp_login(port, tmp_path, certificates.mallory, jid="mallory@localhost")
    assert outcome.bound_jid is None and outcome.sasl_failures == ["not-authorized"], outcome
    event = last_event()
    assert event.jid_requested == "mallory@localhost" and "not in the directory" in event.reason
    assert not Account.objects.filter(localpart="mallory").exists()


def test_match_certificate_needs_the_certificate_in_the_entry(c2s, tmp_path, slapd, certificates):
    port = c2s("starttls", auth=ldap_auth(slapd, match_certificate=True), disconnect_on_failure=False)
    assert bound(slixmpp_login(port, tmp_path, certificates.alice), "alice@localhost")
    outcome = slixmpp_login(port, tmp_path, certificates.bob, jid="bob@localhost")
    assert outcome.bound_jid is None and outcome.sasl_failures == ["not-authorized"], outcome
    assert "not among the 0 listed" in last_event().reason
    # Another certificate for alice, from the same trusted CA, is not the one in her entry.
    other = make_client(certificates.alice.issuer, jids=["alice@localhost"])  # type: ignore[arg-type]
    outcome = slixmpp_login(port, tmp_path, other)
    assert outcome.bound_jid is None and outcome.sasl_failures == ["not-authorized"], outcome


def test_an_account_disabled_here_stays_refused(c2s, tmp_path, slapd, certificates):
    port = c2s("starttls", auth=ldap_auth(slapd), disconnect_on_failure=False)
    assert bound(slixmpp_login(port, tmp_path, certificates.bob, jid="bob@localhost"), "bob@localhost")
    Account.objects.filter(localpart="bob").update(active=False)
    outcome = slixmpp_login(port, tmp_path, certificates.bob, jid="bob@localhost")
    assert outcome.bound_jid is None and outcome.sasl_failures == ["not-authorized"], outcome
    outcome = slixmpp_login(
        port, tmp_path, None, jid="bob@localhost", mechanism="PLAIN", password=BOB_PASSWORD
    )
    assert outcome.bound_jid is None and outcome.sasl_failures == ["account-disabled"], outcome


def test_over_ldaps_and_starttls(c2s, tmp_path, slapd):
    ldaps = ldap_auth(slapd, port=slapd.tls_port, encrypt="tls", tls_cacertfile=slapd.ca_file)
    port = c2s("starttls", auth=ldaps, disconnect_on_failure=False)
    assert bound(
        slixmpp_login(port, tmp_path, None, mechanism="PLAIN", password=ALICE_PASSWORD), "alice@localhost"
    )
    directory_for.cache_clear()
    start_tls = ldap_auth(slapd, encrypt="starttls", tls_cacertfile=slapd.ca_file)
    port = c2s("starttls", auth=start_tls, disconnect_on_failure=False)
    assert bound(
        slixmpp_login(port, tmp_path, None, mechanism="PLAIN", password=ALICE_PASSWORD), "alice@localhost"
    )


def test_directory_down_is_a_temporary_failure_and_logins_return_with_it(c2s, tmp_path, certificates):
    server = Slapd([LdapUser("alice", ALICE_PASSWORD), LdapUser("bob", BOB_PASSWORD)])
    server.start()
    try:
        port = c2s("starttls", auth=ldap_auth(server), disconnect_on_failure=False)
        assert bound(
            slixmpp_login(port, tmp_path, None, mechanism="PLAIN", password=ALICE_PASSWORD), "alice@localhost"
        )
        server.stop()
        for outcome in (
            slixmpp_login(port, tmp_path, None, mechanism="PLAIN", password=ALICE_PASSWORD),
            slixmpp_login(port, tmp_path, certificates.bob, jid="bob@localhost"),
        ):
            assert outcome.bound_jid is None and outcome.sasl_failures == ["temporary-auth-failure"], outcome
            event = last_event()
            assert event.condition == "temporary-auth-failure" and "directory unavailable" in event.reason
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the listener is still serving
        server.start()
        deadline = time.monotonic() + 10
        while True:
            outcome = slixmpp_login(port, tmp_path, None, mechanism="PLAIN", password=ALICE_PASSWORD)
            if bound(outcome, "alice@localhost") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert bound(outcome, "alice@localhost"), outcome
        assert bound(slixmpp_login(port, tmp_path, certificates.bob, jid="bob@localhost"), "bob@localhost")
    finally:
        server.remove()
