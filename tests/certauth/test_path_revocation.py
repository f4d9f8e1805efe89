"""Every certificate on the verified path is checked (issue 11 point 3; RFC 5280 §6.1.3 (a)(3)), and the
distribution points of a path are attached to the right CA (point 5; RFC 5280 §4.2.1.13).

A client sends leaf + intermediate; the root is a trusted CA row. The leaf is checked against the
intermediate's CRL, the intermediate against the root's; freshness (DESIGN §5) applies to both;
``[xmppauth] require_revocation`` refuses a path with a CA (not ours) that holds no CRL. CRLs are real,
signed, and fetched over HTTP from ``tests.certauth.crlserver`` through ``certauth.crlfetch``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Account, Domain
from certauth import crlfetch, crlsources, learning, services, trust
from certauth.models import AuthEvent, CertificateAuthority, CrlSource
from certauth.revocation import PathLink, crl_staleness, path_revocation_problem
from tests.certauth.crlhelpers import GRACE, add_ca_row, add_source, authenticator, make_crl, options
from tests.certs import make_client, make_intermediate, make_root

pytestmark = pytest.mark.django_db

ROOT_DP = "http://pki.test/root.crl"  # named in the intermediate: the root's CRL
INTER_DP = "http://pki.test/inter.crl"  # named in the leaves: the intermediate's CRL
INTER_SERIAL = 0x1A7E
NOW = datetime.now(UTC)


@pytest.fixture(autouse=True)
def _clean_state(monkeypatch):
    """Fresh trust cache; learning is called synchronously by these tests (no background thread writing
    outside the test's transaction): ``offers`` collects what the authenticator offered."""
    trust.invalidate()
    learning.forget()
    offers: list = []
    monkeypatch.setattr(
        learning, "offer", lambda path, known, fingerprints=None: offers.append(tuple(path)) or True
    )
    yield offers
    trust.invalidate()


@pytest.fixture(scope="module")
def root():
    return make_root("Path Root")


@pytest.fixture(scope="module")
def inter(root):
    return make_intermediate(root, "Path Inter", crl_url=ROOT_DP, serial=INTER_SERIAL)


@pytest.fixture
def root_row(root):
    return add_ca_row(root, "Path Root")


def leaf(inter, serial: int | None = None, jid: str = "alice@localhost"):
    return make_client(inter, jids=[jid], serial=serial, crl_url=INTER_DP)


def sent(client) -> list[bytes]:
    """What a TLS client sends: the leaf and its intermediates, without the root."""
    return [cert.public_bytes(Encoding.DER) for cert in client.chain[:-1]]


def fetched(server, ca_row, ca, path: str, serials=(), **crl) -> CrlSource:
    """A source of ``ca_row`` holding the CRL of ``ca`` listing ``serials``, fetched over HTTP."""
    url = server.serve(path, make_crl(ca, serials, **crl))
    source = CrlSource.objects.filter(ca=ca_row, location=url).first() or add_source(ca_row, url)
    outcome = crlfetch.refresh_source(source, options=options())
    assert outcome.ok, outcome.message
    source.refresh_from_db()
    return source


def learn(inter, root) -> CertificateAuthority:
    """What the learning thread does after a login through ``inter``; returns the intermediate's row."""
    learning.learn_path([leaf(inter).cert, inter.cert, root.cert])
    return CertificateAuthority.objects.get(fingerprint_sha256=inter.facts.fingerprint_sha256)


def last_event() -> AuthEvent:
    return AuthEvent.objects.order_by("-pk").first()


# --- the intermediate against the root's CRL --------------------------------------------------------------


def test_leaf_sent_with_an_intermediate_the_roots_crl_revokes_is_refused(server, root, inter, root_row):
    source = fetched(server, root_row, root, "/root.crl", [INTER_SERIAL, 0x99])
    check = authenticator().check_certificate(sent(leaf(inter)))
    assert not check.verified
    expected = (
        "chain through intermediate CA CN=Path Inter, which is revoked 2026-09-03 keyCompromise"
        f" (CRL {source.location})"
    )
    assert check.reason == expected
    assert (last_event().outcome, last_event().reason) == ("failure", f"certificate refused: {expected}")


def test_leaf_sent_with_an_intermediate_the_roots_crl_holds_is_refused(server, root, inter, root_row):
    source = fetched(server, root_row, root, "/root.crl", [INTER_SERIAL], reason="certificate_hold")
    check = authenticator().check_certificate(sent(leaf(inter)))
    assert not check.verified  # RFC 5280 §5.3.1 certificateHold: revoked while it lasts
    assert check.reason == (
        "chain through intermediate CA CN=Path Inter, which is on hold since 2026-09-03"
        f" (CRL {source.location})"
    )


def test_leaf_sent_with_an_intermediate_the_roots_crl_does_not_list_is_accepted(
    server, root, inter, root_row
):
    fetched(server, root_row, root, "/root.crl", [INTER_SERIAL + 1])
    assert authenticator().check_certificate(sent(leaf(inter))).verified


def test_the_intermediates_serial_in_another_cas_crl_does_not_count(server, root, inter, root_row):
    """A (CA, serial) pair, not a serial alone: the same serial revoked by an unrelated CA is not ours."""
    other = make_root("Other Root")
    other_row = add_ca_row(other, "Other Root")
    fetched(server, other_row, other, "/other.crl", [INTER_SERIAL])
    assert authenticator().check_certificate(sent(leaf(inter))).verified


def test_intermediate_revoked_by_the_root_refuses_at_external_too(server, root, inter, root_row):
    """Revocation re-checked at SASL time covers the whole path (it may change after the handshake)."""
    auth = authenticator()
    client = leaf(inter)
    assert auth.check_certificate(sent(client)).verified
    fetched(server, root_row, root, "/root.crl", [INTER_SERIAL])
    result = auth.authenticate_external(client.facts, None, "localhost")
    assert result.condition == "not-authorized"
    assert last_event().reason.startswith(
        "certificate chain through intermediate CA CN=Path Inter, which is revoked 2026-09-03"
    )


# --- the leaf against the intermediate's CRL, learnt from the leaf's CDP ---------------------------------


def test_leaf_revoked_in_the_intermediates_crl_is_refused_once_learnt_and_fetched(
    server, root, inter, root_row, _clean_state
):
    revoked, sibling = leaf(inter, serial=0xBAD), leaf(inter, serial=0x600D)
    assert authenticator().check_certificate(sent(revoked)).verified  # intermediate unknown: not refused yet
    [offered] = _clean_state  # the verified path, leaf first and anchor last, offered to learning
    assert [c.subject.rfc4514_string() for c in offered[1:]] == ["CN=Path Inter", "CN=Path Root"]
    assert offered[0] == revoked.cert

    learnt = learning.learn_path(offered)
    inter_row = CertificateAuthority.objects.get(fingerprint_sha256=inter.facts.fingerprint_sha256)
    assert learnt.cas == [inter_row]
    sources = set(CrlSource.objects.values_list("ca_id", "location"))
    assert sources == {(inter_row.pk, INTER_DP), (root_row.pk, ROOT_DP)}  # each CDP to its issuer
    source = CrlSource.objects.get(ca=inter_row)
    server.serve("/inter.crl", make_crl(inter, [0xBAD]))
    CrlSource.objects.filter(pk=source.pk).update(location=server.url("/inter.crl"))  # the test's host
    assert crlfetch.refresh_source(source, options=options()).ok

    check = authenticator().check_certificate(sent(revoked))
    assert not check.verified
    assert check.reason == f"revoked 2026-09-03 keyCompromise (CRL {server.url('/inter.crl')})"
    assert authenticator().check_certificate(sent(sibling)).verified


def test_an_intermediate_learnt_after_the_handshake_counts_at_the_next_check(server, root, inter, root_row):
    """The connection re-resolves an issuer that became a row since its handshake: its CRL refuses at SASL
    time, and the session would record that issuer (``issuer_ca_id``, what CRL terminations match)."""
    auth, client = authenticator(), leaf(inter, serial=0xBAD)
    assert auth.check_certificate(sent(client)).verified
    assert auth.issuer_ca_id is None  # the intermediate is no row yet
    inter_row = learn(inter, root)
    fetched(server, inter_row, inter, "/inter.crl", [0xBAD])

    result = auth.authenticate_external(client.facts, None, "localhost")

    assert result.condition == "not-authorized"
    assert last_event().reason.startswith(
        "certificate revoked 2026-09-03 keyCompromise (CRL http://127.0.0.1:"
    )
    assert auth.issuer_ca_id == inter_row.pk


def test_stale_crl_of_the_intermediate_refuses_and_a_fresh_one_accepts(server, root, inter, root_row):
    inter_row = learn(inter, root)
    source = fetched(
        server,
        inter_row,
        inter,
        "/inter.crl",
        this_update=NOW - timedelta(days=3),
        next_update=NOW - timedelta(hours=2),
    )
    check = authenticator().check_certificate(sent(leaf(inter)))
    assert not check.verified
    assert check.reason == (
        f"revocation status unknown: CRL {source.location} outdated since "
        f"{source.next_update:%Y-%m-%d %H:%M} UTC (nextUpdate): CRL of CA {inter_row.name} stale, fail closed"
    )
    assert last_event().reason == f"certificate refused: {check.reason}"
    fetched(server, inter_row, inter, "/inter.crl", number=2)
    assert authenticator().check_certificate(sent(leaf(inter))).verified


def test_stale_crl_of_the_root_refuses_a_leaf_of_the_intermediate(root, inter, root_row):
    stale = NOW - timedelta(hours=2)
    add_source(root_row, ROOT_DP, next_update=stale, last_success_at=stale - timedelta(days=1))
    check = authenticator().check_certificate(sent(leaf(inter)))
    assert not check.verified
    assert check.reason.endswith("CRL of CA Path Root stale, fail closed")


# --- several sources: stale ones refuse unless every stale one is fail-open ------------------------------


def test_ca_with_several_stale_sources_only_some_fail_open_is_refused(root_row, root):
    """Changing the ``all(...)`` in crl_staleness to ``any(...)`` lets this CA in: this test then fails."""
    stale = NOW - timedelta(hours=3)
    add_source(root_row, "http://a.test/root.crl", next_update=stale, fail_open=True)
    add_source(root_row, "http://b.test/root.crl", next_update=stale - timedelta(hours=1), fail_open=False)
    add_source(root_row, "http://c.test/root.crl", next_update=stale, fail_open=True)
    direct = make_client(root)
    check = authenticator().check_certificate([direct.der])
    assert not check.verified
    assert check.reason.startswith("revocation status unknown: CRL http://")
    assert check.reason.endswith("CRL of CA Path Root stale, fail closed")
    assert crl_staleness(root_row.pk, now=NOW, grace=GRACE) is not None


def test_ca_whose_stale_sources_are_all_fail_open_is_accepted(root_row, root):
    stale = NOW - timedelta(hours=3)
    add_source(root_row, "http://a.test/root.crl", next_update=stale, fail_open=True)
    add_source(root_row, "http://b.test/root.crl", next_update=stale, fail_open=True)
    assert authenticator().check_certificate([make_client(root).der]).verified


# --- require_revocation ------------------------------------------------------------------------------------


def test_require_revocation_refuses_an_intermediate_not_learnt_yet(server, root, inter, root_row):
    fetched(server, root_row, root, "/root.crl")
    strict = options(require_revocation=True)
    check = authenticator(strict).check_certificate(sent(leaf(inter)))
    assert not check.verified
    assert check.reason == (
        "revocation required (require_revocation) and CA CN=Path Inter is not known yet: no CRL of it held"
    )
    assert last_event().reason == f"certificate refused: {check.reason}"
    assert authenticator().check_certificate(sent(leaf(inter))).verified  # the default: not refused


def test_require_revocation_refuses_a_ca_without_crl_and_accepts_once_one_is_held(
    server, root, inter, root_row
):
    inter_row = learn(inter, root)
    fetched(server, root_row, root, "/root.crl")
    strict = options(require_revocation=True)
    check = authenticator(strict).check_certificate(sent(leaf(inter)))
    assert not check.verified
    assert check.reason == f"revocation required (require_revocation) and CA {inter_row.name} has no CRL"

    fetched(server, inter_row, inter, "/inter.crl")
    assert authenticator(strict).check_certificate(sent(leaf(inter))).verified


def test_require_revocation_refuses_a_root_without_crl(root, root_row):
    strict = options(require_revocation=True)
    check = authenticator(strict).check_certificate([make_client(root).der])
    assert check.reason == "revocation required (require_revocation) and CA Path Root has no CRL"
    assert authenticator().check_certificate([make_client(root).der]).verified


def test_require_revocation_accepts_our_own_ca_without_any_source(settings):
    settings.XMPPAUTH_PUBLIC_URL = "http://xmpp.example"
    ours = services.create_ca("Our CA")
    account = Account.objects.create(localpart="alice", domain=Domain.objects.create(name="localhost"))
    issued = services.issue_for_account(account, ca=ours)
    strict = options(require_revocation=True)
    assert authenticator(strict).check_certificate([issued.certificate]).verified


# --- the check itself ------------------------------------------------------------------------------------


def test_a_path_is_one_statement_when_nothing_is_wrong(server, root, inter, root_row):
    """One statement (besides the change feed's read, at most every changefeed.POLL_INTERVAL), and none
    while the acceptance is held (accounts.changefeed)."""
    inter_row = learn(inter, root)
    fetched(server, root_row, root, "/root.crl")
    fetched(server, inter_row, inter, "/inter.crl")
    client = leaf(inter)
    links = [
        PathLink.of(client.cert, inter.cert, inter_row.pk, is_leaf=True),
        PathLink.of(inter.cert, root.cert, root_row.pk, is_leaf=False),
    ]
    for expected in (1, 0):
        with CaptureQueriesContext(connection) as captured:
            assert path_revocation_problem(links, now=NOW, grace=GRACE, require_revocation=True) is None
        statements = [q["sql"] for q in captured if "accounts_changefeed" not in q["sql"]]
        assert len(statements) == expected, statements


def test_a_learnt_intermediate_is_no_trust_anchor(root, inter):
    add_ca_row(make_root("Unrelated Root"), "Unrelated Root")
    row = learn(inter, root)  # the root is no row: not trusted
    assert (row.origin, row.trusted_for_client_auth) == (CertificateAuthority.Origin.LEARNED, False)
    check = authenticator().check_certificate(sent(leaf(inter)))
    assert (check.verified, check.reason) == (False, "issuer not trusted")


# --- distribution points belong to the issuer (RFC 5280 §4.2.1.13) ----------------------------------------


def test_learning_attaches_each_cdp_to_the_issuer_and_is_idempotent(root, inter, root_row):
    path = [leaf(inter).cert, inter.cert, root.cert]
    first = learning.learn_path(path)
    second = learning.learn_path([leaf(inter).cert, inter.cert, root.cert])
    inter_row = CertificateAuthority.objects.get(fingerprint_sha256=inter.facts.fingerprint_sha256)
    sources = set(CrlSource.objects.values_list("ca_id", "location", "kind"))
    assert sources == {
        (inter_row.pk, INTER_DP, CrlSource.Kind.DISTRIBUTION_POINT),
        (root_row.pk, ROOT_DP, CrlSource.Kind.DISTRIBUTION_POINT),
    }
    assert [ca.pk for ca in first.cas] == [inter_row.pk]
    assert (second.cas, second.sources) == ([], [])


def test_a_ca_certificates_own_cdp_is_a_source_of_its_issuer_not_of_itself(root, inter, root_row):
    inter_row = add_ca_row(inter, "Imported Inter", trusted=True)  # post_save: its CDP goes to the root
    assert set(CrlSource.objects.values_list("ca_id", "location")) == {(root_row.pk, ROOT_DP)}
    crlsources.sync_crl_sources(options_config())
    assert not CrlSource.objects.filter(ca=inter_row).exists()


def test_sync_removes_the_sources_the_old_rule_attached_and_keeps_the_right_ones(root, inter, root_row):
    inter_row = add_ca_row(inter, "Imported Inter", trusted=True)
    wrong = add_source(inter_row, ROOT_DP, kind=CrlSource.Kind.DISTRIBUTION_POINT)  # the old rule's source
    operator = add_source(inter_row, "http://operator.test/inter.crl")
    result = crlsources.sync_crl_sources(options_config())
    assert result.removed == [ROOT_DP]
    assert not CrlSource.objects.filter(pk=wrong.pk).exists()
    assert CrlSource.objects.filter(pk=operator.pk).exists()
    assert CrlSource.objects.filter(ca=root_row, location=ROOT_DP).exists()


def test_sync_keeps_a_cas_cdp_that_its_issued_certificates_also_name(root, root_row):
    """A self-issued root's own CDP does name its own CRL; it stays."""
    own = make_root("Self Root")
    row = add_ca_row(own, "Self Root")
    source = add_source(row, "http://self.test/root.crl", kind=CrlSource.Kind.DISTRIBUTION_POINT)
    crlsources.sync_crl_sources(options_config())
    assert CrlSource.objects.filter(pk=source.pk).exists()


def test_our_own_cas_learn_no_source_from_a_leaf(settings):
    settings.XMPPAUTH_PUBLIC_URL = "http://xmpp.example"
    ours = services.create_ca("Our CA")
    account = Account.objects.create(localpart="bob", domain=Domain.objects.create(name="localhost"))
    issued = services.issue_for_account(account, ca=ours)
    ca_cert = services.ca_certificate(ours)
    assert learning.learn_path([issued.certificate, ca_cert]).sources == []
    assert not CrlSource.objects.exists()


def options_config():
    from xmppauth.config import Config

    return Config()
