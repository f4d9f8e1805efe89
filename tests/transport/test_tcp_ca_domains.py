"""End to end over TCP: per-CA domains (issue 11 point 10) with slixmpp, real TLS and the real listener.

Two hosted domains, ``localhost`` and ``b.localhost``. A CA limited to ``localhost`` vouches for JIDs there
and gets ``not-authorized`` (RFC 6120 §6.5.10) for a JID in ``b.localhost``, with the CA and the domain in
the AuthEvent; an unlimited CA vouches for both. The same for a ``tls.cacertfile`` CA limited by
``tls.cacert_domains``.
"""

from __future__ import annotations

import pytest

from accounts.models import Account
from certauth.models import AuthEvent, CertificateAuthority
from tests.certs import make_ca, make_client
from tests.transport.test_tcp_slixmpp import MODE_IDS, MODES, assert_bound, assert_refused
from tests.transport.xmppclient import slixmpp_login

pytestmark = pytest.mark.django_db(transaction=True)

HOSTS = ("localhost", "b.localhost")
CA_ROW = "test client CA"  # the row the c2s fixture imports for pki.ca


def limit_test_ca(*domains: str) -> None:
    row = CertificateAuthority.objects.get(name=CA_ROW)
    row.allowed_domains = list(domains)
    row.save()  # post_save: the listener's cached anchors are rebuilt


def last_event() -> AuthEvent:
    return AuthEvent.objects.order_by("-pk").first()


@pytest.mark.parametrize(("mode", "direct"), MODES, ids=MODE_IDS)
def test_ca_limited_to_localhost_logs_in_a_jid_of_localhost(c2s, tmp_path, pki, mode, direct):
    limit_test_ca("localhost")
    port = c2s(mode, hosts=HOSTS)
    outcome = slixmpp_login(port, tmp_path, make_client(pki.ca, jids=["alice@localhost"]), direct_tls=direct)
    assert_bound(outcome, "alice@localhost")


@pytest.mark.parametrize(("mode", "direct"), MODES, ids=MODE_IDS)
def test_ca_limited_to_localhost_asserting_a_jid_of_another_hosted_domain_is_not_authorized(
    c2s, tmp_path, pki, mode, direct
):
    limit_test_ca("localhost")
    port = c2s(mode, hosts=HOSTS)
    bob = make_client(pki.ca, jids=["bob@b.localhost"])
    outcome = slixmpp_login(port, tmp_path, bob, jid="bob@b.localhost", direct_tls=direct)
    assert_refused(outcome, "not-authorized")
    event = last_event()
    assert (event.outcome, event.condition, event.jid_requested) == (
        AuthEvent.Outcome.FAILURE,
        "not-authorized",
        "bob@b.localhost",
    )
    assert event.reason == f"CA {CA_ROW!r} may vouch only for localhost, not for b.localhost"
    assert not Account.objects.filter(localpart="bob").exists()


@pytest.mark.parametrize("jid", ["alice@localhost", "bob@b.localhost"])
def test_unlimited_ca_logs_in_a_jid_of_either_hosted_domain(c2s, tmp_path, pki, jid):
    port = c2s("starttls", hosts=HOSTS)
    outcome = slixmpp_login(port, tmp_path, make_client(pki.ca, jids=[jid]), jid=jid)
    assert_bound(outcome, jid)


# The c2s fixture advertises only pki.ca in the handshake; with disconnect_on_failure = false the handshake
# lets the file CA's client through and our own verification (trust anchors: the file plus the rows) decides.
FILE_TLS = {"disconnect_on_failure": False, "cacert_domains": ("b.localhost",)}


@pytest.fixture(scope="module")
def file_ca(tmp_path_factory):
    ca = make_ca("cacertfile CA")
    path = tmp_path_factory.mktemp("cacertfile") / "ca.pem"
    path.write_bytes(ca.pem)
    return ca, str(path)


def test_cacertfile_ca_limited_by_cacert_domains_logs_in_a_jid_of_its_domain(c2s, tmp_path, file_ca):
    ca, path = file_ca
    port = c2s("starttls", hosts=HOSTS, cacertfile=path, **FILE_TLS)
    outcome = slixmpp_login(port, tmp_path, make_client(ca, jids=["bob@b.localhost"]), jid="bob@b.localhost")
    assert_bound(outcome, "bob@b.localhost")


def test_cacertfile_ca_limited_by_cacert_domains_asserting_another_domain_is_not_authorized(
    c2s, tmp_path, file_ca
):
    ca, path = file_ca
    port = c2s("starttls", hosts=HOSTS, cacertfile=path, **FILE_TLS)
    outcome = slixmpp_login(port, tmp_path, make_client(ca, jids=["alice@localhost"]))
    assert_refused(outcome, "not-authorized")
    event = last_event()
    assert event.condition == "not-authorized"
    expected = "CA 'cacertfile CA' may vouch only for b.localhost, not for localhost"  # the config CA's row
    assert event.reason == expected
