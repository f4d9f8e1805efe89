"""End to end over real TLS on loopback (slixmpp over TCP): every certificate on the path is checked
(issue 11 points 3 and 5; RFC 5280 §6.1.3 (a)(3) and §4.2.1.13).

The client sends leaf + intermediate; the listener trusts only the root (a CA row, as the ``c2s`` fixture
imports it). The intermediate names the root's CRL as its distribution point, the leaves the
intermediate's; both CRLs are served by ``tests.certauth.crlserver`` and fetched by the normal job
(``certauth.tasks.refresh_due_crl_sources``). The intermediate becomes a row only through the background
learning (``certauth.learning``) after a login: no row, no source is made by hand here.
"""

from __future__ import annotations

import dataclasses

import pytest

from certauth import crlfetch, learning, tasks, trust
from certauth.models import AuthEvent, CertificateAuthority, CrlSource
from certauth.userstatus import TEXT_REVOKED
from tests.certauth.crlhelpers import make_crl
from tests.certauth.crlserver import CrlServer
from tests.certs import make_client, make_intermediate, make_root
from tests.transport.rawxmpp import auth_external, sasl, sasl_failure_condition, starttls
from tests.transport.tlsclient import client_context, make_pki
from tests.transport.xmppclient import slixmpp_login
from xmppauth.config import XmppauthOptions

pytestmark = pytest.mark.django_db(transaction=True)

MODES = [("starttls", False), ("tls", True)]
MODE_IDS = ["starttls", "direct_tls"]
INTER_SERIAL = 0x1A7E5


@pytest.fixture(scope="module")
def crl_server():
    with CrlServer() as server:
        yield server


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The transport tests' PKI with a root that may sign an intermediate (``c2s`` trusts ``pki.ca``)."""
    root = make_root("E2E Path Root")
    return dataclasses.replace(make_pki(tmp_path_factory.mktemp("pki")), ca=root)


@pytest.fixture(scope="module")
def inter(pki, crl_server):
    return make_intermediate(
        pki.ca, "E2E Path Inter", crl_url=crl_server.url("/root.crl"), serial=INTER_SERIAL
    )


@pytest.fixture(autouse=True)
def _fresh():
    learning.forget()  # a new database: nothing of it was offered yet
    trust.invalidate()
    yield
    assert learning.wait_idle(10)
    trust.invalidate()


def leaf(inter, crl_server, serial: int, jid: str = "alice@localhost"):
    return make_client(inter, jids=[jid], serial=serial, crl_url=crl_server.url("/inter.crl"))


def last_event() -> AuthEvent:
    return AuthEvent.objects.order_by("-pk").first()


def login_learns_the_path(port: int, tmp_path, client, direct: bool) -> CertificateAuthority:
    """A first login through the intermediate: accepted (no CRL of it yet), and learnt in the background."""
    outcome = slixmpp_login(port, tmp_path, client, direct_tls=direct)
    assert outcome.bound_jid is not None and outcome.bound_jid.startswith("alice@localhost/"), outcome
    assert learning.wait_idle(10)
    row = CertificateAuthority.objects.get(fingerprint_sha256=client.issuer.facts.fingerprint_sha256)
    assert (row.origin, row.trusted_for_client_auth) == (CertificateAuthority.Origin.LEARNED, False)
    return row


def run_crl_job() -> None:
    """The periodic job, as celery beat or runxmpp run it: learnt sources are unscheduled, so due now."""
    assert tasks.refresh_due_crl_sources() == CrlSource.objects.count()
    for source in CrlSource.objects.all():
        assert source.state == CrlSource.State.OK, (source.location, source.last_error)


@pytest.mark.parametrize(("mode", "direct"), MODES, ids=MODE_IDS)
def test_leaf_with_an_intermediate_the_roots_crl_revokes_is_refused(
    c2s, tmp_path, pki, inter, crl_server, mode, direct
):
    crl_server.serve("/root.crl", make_crl(pki.ca, [INTER_SERIAL]))
    crl_server.serve("/inter.crl", make_crl(inter, []))
    port = c2s(mode, disconnect_on_failure=False)
    root_row = CertificateAuthority.objects.get(fingerprint_sha256=pki.ca.facts.fingerprint_sha256)
    login_learns_the_path(port, tmp_path, leaf(inter, crl_server, 0x100), direct)  # before the root's CRL
    # The intermediate's CDP became a source of the ROOT's row (RFC 5280 §4.2.1.13), not of its own.
    assert set(CrlSource.objects.values_list("ca_id", "location")) == {
        (root_row.pk, crl_server.url("/root.crl")),
        (CertificateAuthority.objects.get(origin="learned").pk, crl_server.url("/inter.crl")),
    }
    run_crl_job()

    outcome = slixmpp_login(port, tmp_path, leaf(inter, crl_server, 0x101), direct_tls=direct)

    assert outcome.bound_jid is None and outcome.no_usable_mechanism, outcome  # EXTERNAL not offered
    assert last_event().reason == (
        "certificate refused: chain through intermediate CA CN=E2E Path Inter, which is revoked 2026-09-03"
        f" keyCompromise (CRL {crl_server.url('/root.crl')})"
    )


@pytest.mark.parametrize(("mode", "direct"), MODES, ids=MODE_IDS)
def test_leaf_with_an_unrevoked_intermediate_logs_in_after_both_crls_are_fetched(
    c2s, tmp_path, pki, inter, crl_server, mode, direct
):
    crl_server.serve("/root.crl", make_crl(pki.ca, [INTER_SERIAL + 1]))
    crl_server.serve("/inter.crl", make_crl(inter, [0x999]))
    port = c2s(mode, disconnect_on_failure=False)
    login_learns_the_path(port, tmp_path, leaf(inter, crl_server, 0x200), direct)
    run_crl_job()

    outcome = slixmpp_login(port, tmp_path, leaf(inter, crl_server, 0x201), direct_tls=direct)

    assert outcome.bound_jid is not None and outcome.bound_jid.startswith("alice@localhost/"), outcome
    assert (last_event().outcome, last_event().jid_granted) == ("success", "alice@localhost")


@pytest.mark.parametrize(("mode", "direct"), MODES, ids=MODE_IDS)
def test_leaf_revoked_in_the_learnt_intermediates_crl_is_refused_once_fetched(
    c2s, tmp_path, pki, inter, crl_server, mode, direct
):
    revoked = leaf(inter, crl_server, 0xBAD)
    crl_server.serve("/root.crl", make_crl(pki.ca, []))
    crl_server.serve("/inter.crl", make_crl(inter, [0xBAD]))
    port = c2s(mode, disconnect_on_failure=False)
    # The intermediate is no row yet and its CRL unknown: like a source not tried yet, not refused.
    login_learns_the_path(port, tmp_path, revoked, direct)
    run_crl_job()

    outcome = slixmpp_login(port, tmp_path, revoked, direct_tls=direct)

    assert outcome.bound_jid is None and outcome.sasl_failures == [], outcome
    # the leaf's own status (issue 18 §5), not which CRL said so
    assert outcome.stream_errors == [("not-authorized", TEXT_REVOKED)], outcome
    assert last_event().reason == (
        f"certificate refused: revoked 2026-09-03 keyCompromise (CRL {crl_server.url('/inter.crl')})"
    )
    sibling = slixmpp_login(port, tmp_path, leaf(inter, crl_server, 0x600D), direct_tls=direct)
    assert sibling.bound_jid is not None, sibling


def test_intermediate_revoked_between_handshake_and_external_gets_not_authorized(
    c2s, tmp_path, pki, inter, crl_server
):
    crl_server.serve("/root.crl", make_crl(pki.ca, [], number=1))
    crl_server.serve("/inter.crl", make_crl(inter, []))
    port = c2s("starttls", disconnect_on_failure=False)
    login_learns_the_path(port, tmp_path, leaf(inter, crl_server, 0x300), False)
    run_crl_job()
    sock, features = starttls(port, client_context(tmp_path, leaf(inter, crl_server, 0x301)))
    with sock:
        assert b"EXTERNAL" in features
        crl_server.serve("/root.crl", make_crl(pki.ca, [INTER_SERIAL], number=2))
        root_source = CrlSource.objects.get(location=crl_server.url("/root.crl"))
        assert crlfetch.refresh_source(root_source).ok

        assert sasl_failure_condition(sasl(sock, auth_external("="))) == "not-authorized"
    assert last_event().reason.startswith(
        "certificate chain through intermediate CA CN=E2E Path Inter, which is revoked 2026-09-03"
    )


def test_require_revocation_refuses_a_path_through_an_intermediate_without_crl(
    c2s, tmp_path, pki, inter, crl_server
):
    crl_server.serve("/root.crl", make_crl(pki.ca, []))
    crl_server.serve("/inter.crl", make_crl(inter, []))
    strict = XmppauthOptions(require_revocation=True)
    port = c2s("starttls", disconnect_on_failure=False, xmpp_options=strict)
    outcome = slixmpp_login(port, tmp_path, leaf(inter, crl_server, 0x400))
    assert outcome.bound_jid is None and outcome.no_usable_mechanism, outcome
    assert last_event().reason == (
        "certificate refused: revocation required (require_revocation) and CA CN=E2E Path Inter is not known"
        " yet: no CRL of it held"
    )
    assert learning.wait_idle(10)  # refused, yet the verified chain was learnt: the next step is its CRL
    run_crl_job()
    outcome = slixmpp_login(port, tmp_path, leaf(inter, crl_server, 0x401))
    assert outcome.bound_jid is not None, outcome


def test_offering_a_chain_learns_it_once_without_the_caller_waiting(pki, inter, crl_server):
    """``learning.offer`` is what a login calls: the same chain is offered once per process; the rows appear
    through the background thread (PostgreSQL) or the caller's own thread after its decision (SQLite)."""
    direct = make_client(pki.ca, crl_url=crl_server.url("/root.crl"))
    assert learning.offer([direct.cert, pki.ca.cert], {}) is False  # its issuer is no row known here
    path = [leaf(inter, crl_server, 0x500).cert, inter.cert, pki.ca.cert]
    assert learning.offer(path, {}) is True
    assert learning.offer(path, {}) is False  # deduplicated: nothing new to teach
    assert learning.wait_idle(10)
    row = CertificateAuthority.objects.get(fingerprint_sha256=inter.facts.fingerprint_sha256)
    assert row.origin == CertificateAuthority.Origin.LEARNED
    assert CrlSource.objects.filter(ca=row, location=crl_server.url("/inter.crl")).exists()
    known = {row.fingerprint_sha256: row.pk}
    another_leaf = [leaf(inter, crl_server, 0x501).cert, inter.cert, pki.ca.cert]
    assert learning.offer(another_leaf, known) is False  # same intermediate, same distribution point
