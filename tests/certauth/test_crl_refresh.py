"""certauth.crlfetch against a real HTTP distribution point on 127.0.0.1 (RFC 5280 §5, §6.3.3; DESIGN §5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from certauth import crlfetch, revocation
from certauth.models import CrlSource, RevokedSerial
from certauth.signals import external_revocations_found
from tests.certauth.crlhelpers import add_source, authenticator, make_crl, options
from tests.certauth.crlserver import CrlServer
from tests.certs import make_ca, make_client

pytestmark = pytest.mark.django_db

MIB = 1024 * 1024


def refresh(source: CrlSource, **kwargs) -> crlfetch.RefreshOutcome:
    kwargs.setdefault("options", options())
    outcome = crlfetch.refresh_source(source, **kwargs)
    source.refresh_from_db()
    return outcome


def serials_of(source: CrlSource) -> set[str]:
    return set(source.revoked_serials.values_list("serial", flat=True))


def accept_crl_number_1(server, ext_ca, ext_row, serials=(0xA1,)) -> CrlSource:
    source = add_source(ext_row, server.serve("/ca.crl", make_crl(ext_ca, serials, number=1)))
    assert refresh(source).ok
    return source


# --- accepted --------------------------------------------------------------------------------------------


def test_good_crl_is_accepted_and_its_serials_refuse_login(server, ext_ca, ext_row):
    alice = make_client(ext_ca, jids=["alice@localhost"], serial=0xABC123)
    bob = make_client(ext_ca, jids=["bob@localhost"], serial=0xB0B)
    this_update = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    url = server.serve("/ca.crl", make_crl(ext_ca, [0xABC123, 0x77], number=7, this_update=this_update))
    source = add_source(ext_row, url)
    assert authenticator().check_certificate([alice.der]).verified  # before the fetch

    outcome = refresh(source)

    assert outcome.ok, outcome.message
    assert outcome.message == "CRL #7 accepted: 2 revoked serial(s), 2 new"
    assert serials_of(source) == {"abc123", "77"}
    assert (source.state, source.crl_number, source.last_error) == (CrlSource.State.OK, 7, "")
    assert source.this_update == this_update
    assert source.next_update == this_update + timedelta(days=7)
    assert source.last_success_at is not None
    row = RevokedSerial.objects.get(source=source, serial="abc123")
    assert (row.ca, row.reason) == (ext_row, "key_compromise")
    check = authenticator().check_certificate([alice.der])
    assert not check.verified
    assert check.reason == f"revoked 2026-09-03 keyCompromise (CRL {url})"
    assert authenticator().check_certificate([bob.der]).verified


def test_pem_crl_is_accepted_like_der(server, ext_ca, ext_row):
    source = add_source(ext_row, server.serve("/ca.pem", make_crl(ext_ca, [0x5], pem=True)))
    assert refresh(source).ok
    assert serials_of(source) == {"5"}


def test_a_newer_crl_replaces_the_serials_held(server, ext_ca, ext_row):
    source = accept_crl_number_1(server, ext_ca, ext_row, serials=(0xA1, 0xA2))
    server.serve("/ca.crl", make_crl(ext_ca, [0xA2, 0xA3], number=2))
    assert refresh(source).ok
    assert serials_of(source) == {"a2", "a3"}
    assert source.crl_number == 2


def test_newly_listed_serials_are_announced_after_commit(
    server, ext_ca, ext_row, django_capture_on_commit_callbacks
):
    received: list[dict] = []

    def receiver(sender, **kwargs):
        received.append(kwargs)

    external_revocations_found.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            source = accept_crl_number_1(server, ext_ca, ext_row, serials=(0xA1,))
        server.serve("/ca.crl", make_crl(ext_ca, [0xA1, 0xB2], number=2))
        with django_capture_on_commit_callbacks(execute=True):
            assert refresh(source).ok
        server.serve("/ca.crl", make_crl(ext_ca, [0xA1, 0xB2], number=3))
        with django_capture_on_commit_callbacks(execute=True):
            assert refresh(source).ok  # nothing new: no signal
    finally:
        external_revocations_found.disconnect(receiver)
    assert [(item["ca"], item["serials"]) for item in received] == [(ext_row, ("a1",)), (ext_row, ("b2",))]


# --- refused, the CRL held is kept -----------------------------------------------------------------------


def test_crl_signed_by_another_key_is_refused_and_the_old_one_kept(server, ext_ca, ext_row):
    source = accept_crl_number_1(server, ext_ca, ext_row)
    impostor = make_ca("External CA")  # same name, other key
    server.serve("/ca.crl", make_crl(ext_ca, [], number=2, signing_key=impostor.key))

    outcome = refresh(source)

    assert not outcome.ok
    assert outcome.message == "signature does not verify against CA External CA"
    assert source.last_error == outcome.message
    assert source.state == CrlSource.State.FAILING
    assert (source.crl_number, serials_of(source)) == (1, {"a1"})
    assert source.failing_since is not None and source.consecutive_failures == 1


def test_crl_of_another_issuer_is_refused(server, ext_ca, ext_row):
    source = add_source(ext_row, server.serve("/other.crl", make_crl(make_ca("Other CA"), [0x1])))
    outcome = refresh(source)
    assert outcome.message == "CRL issuer CN=Other CA is not CA External CA"
    assert serials_of(source) == set()


def test_replayed_older_crl_is_refused_and_the_newer_one_kept(server, ext_ca, ext_row):
    source = add_source(ext_row, server.serve("/ca.crl", make_crl(ext_ca, [0x7], number=7)))
    assert refresh(source).ok
    server.serve("/ca.crl", make_crl(ext_ca, [0x5], number=5))

    outcome = refresh(source)

    assert outcome.message == "older than the CRL held (#5 < #7)"
    assert (source.crl_number, serials_of(source), source.state) == (7, {"7"}, CrlSource.State.FAILING)


def test_the_same_crl_fetched_again_is_accepted(server, ext_ca, ext_row):
    source = accept_crl_number_1(server, ext_ca, ext_row)
    assert refresh(source).ok
    assert source.state == CrlSource.State.OK


def crl_without_number(ca, this_update: datetime, serials=()) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(this_update)
        .next_update(this_update + timedelta(days=7))
    )
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(this_update).build()
        )
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(Encoding.DER)


def test_without_crl_numbers_an_earlier_this_update_is_a_replay(server, ext_ca, ext_row):
    now = datetime.now(UTC).replace(microsecond=0)
    source = add_source(ext_row, server.serve("/ca.crl", crl_without_number(ext_ca, now, [0x9])))
    assert refresh(source).ok
    assert source.crl_number is None
    server.serve("/ca.crl", crl_without_number(ext_ca, now - timedelta(days=1)))

    outcome = refresh(source)

    earlier, held = now - timedelta(days=1), now
    assert outcome.message == (
        f"older than the CRL held (thisUpdate {earlier:%Y-%m-%d %H:%M} < {held:%Y-%m-%d %H:%M})"
    )
    assert serials_of(source) == {"9"}


def test_delta_crl_is_refused(server, ext_ca, ext_row):
    now = datetime.now(UTC)
    delta = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ext_ca.cert.subject)
        .last_update(now)
        .next_update(now + timedelta(days=1))
        .add_extension(x509.CRLNumber(2), critical=False)
        .add_extension(x509.DeltaCRLIndicator(1), critical=True)  # RFC 5280 §5.2.4
        .sign(ext_ca.key, hashes.SHA256())
    )
    source = accept_crl_number_1(server, ext_ca, ext_row)
    server.serve("/ca.crl", delta.public_bytes(Encoding.DER))
    assert refresh(source).message == "a delta CRL: only full CRLs are supported"
    assert serials_of(source) == {"a1"}


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1:9/ca.crl"])
def test_redirect_away_from_http_is_not_followed(server, ext_row, target):
    source = add_source(ext_row, server.redirect("/moved.crl", target))
    outcome = refresh(source)
    assert not outcome.ok
    assert outcome.message.startswith("HTTP 302 Found")
    assert source.state == CrlSource.State.FAILING


def test_redirect_to_another_http_url_is_followed(server, ext_ca, ext_row):
    server.serve("/new.crl", make_crl(ext_ca, [0x3]))
    source = add_source(ext_row, server.redirect("/old.crl", server.url("/new.crl")))
    assert refresh(source).ok
    assert serials_of(source) == {"3"}


def test_truncated_download_is_refused(server, ext_ca, ext_row):
    source = accept_crl_number_1(server, ext_ca, ext_row)
    der = make_crl(ext_ca, [], number=2)
    server.serve("/ca.crl", der[:-20], announce=len(der))
    outcome = refresh(source)
    assert outcome.message == f"truncated download: {len(der) - 20} of {len(der)} bytes"
    assert (source.crl_number, serials_of(source)) == (1, {"a1"})


def test_truncated_crl_without_length_is_not_a_crl(server, ext_ca, ext_row):
    source = add_source(ext_row, server.serve("/ca.crl", make_crl(ext_ca, [0x1])[:-20]))
    outcome = refresh(source)
    assert not outcome.ok
    assert outcome.message.startswith("not a CRL (PEM or DER")


def test_download_announced_larger_than_10_mib_is_refused_unread(server, ext_ca, ext_row):
    source = add_source(ext_row, server.serve("/big.crl", b"x" * 1000, announce=11 * MIB))
    outcome = refresh(source)
    assert outcome.message == f"download larger than 10 MiB ({11 * MIB} bytes announced)"
    assert source.state == CrlSource.State.FAILING


def test_streamed_download_past_the_cap_is_abandoned_before_its_end(server, ext_ca, ext_row):
    total = 256 * MIB
    answer = server.stream("/endless.crl", total=total)
    source = add_source(ext_row, server.url("/endless.crl"))

    outcome = refresh(source, max_bytes=MIB)

    assert outcome.message == "download larger than 1 MiB"
    assert answer.finished.wait(20)
    assert answer.written < total


def test_download_that_does_not_answer_times_out(server, ext_ca, ext_row):
    source = add_source(ext_row, server.hang("/slow.crl"))
    outcome = refresh(source, timeout=0.3)
    assert outcome.message == "timed out after 0.3 s"
    assert source.state == CrlSource.State.FAILING


def test_default_timeout_is_10_seconds():
    assert crlfetch.FETCH_TIMEOUT == 10.0
    assert crlfetch.MAX_CRL_BYTES == 10 * MIB


def test_http_error_is_refused_with_its_status(server, ext_row):
    source = add_source(ext_row, server.url("/missing.crl"))
    outcome = refresh(source)
    assert outcome.message == f"HTTP 404 Not Found from {server.url('/missing.crl')}"


def test_connection_refused_keeps_the_source_failing(ext_row):
    with CrlServer() as gone:
        url = gone.url("/ca.crl")
    source = add_source(ext_row, url)
    outcome = refresh(source)
    assert outcome.message.startswith(f"cannot fetch {url}:")
    assert source.state == CrlSource.State.FAILING


# --- scheduling after a fetch ----------------------------------------------------------------------------


def test_next_refresh_after_success_is_half_way_to_next_update_within_bounds(server, ext_ca, ext_row):
    now = datetime.now(UTC).replace(microsecond=0)  # CRL dates have whole seconds
    url = server.serve("/ca.crl", make_crl(ext_ca, [], this_update=now, next_update=now + timedelta(hours=1)))
    source = add_source(ext_row, url)
    refresh(source, now=now, options=options(crl_refresh_min_seconds=60, crl_refresh_max_seconds=7200))
    assert source.next_refresh_at == now + timedelta(minutes=30)


def test_failures_back_off_exponentially_within_bounds(ext_row):
    source = add_source(ext_row, "http://127.0.0.1:9/none.crl")
    opts = options(crl_refresh_min_seconds=60, crl_refresh_max_seconds=300)
    now = datetime.now(UTC)
    delays = []
    for _ in range(5):
        refresh(source, now=now, options=opts, timeout=2)
        delays.append((source.next_refresh_at - now).total_seconds())
    assert delays == [60, 120, 240, 300, 300]
    assert source.consecutive_failures == 5


def test_success_ends_the_failure_run(server, ext_ca, ext_row):
    source = add_source(ext_row, server.url("/ca.crl"))
    assert not refresh(source).ok
    server.serve("/ca.crl", make_crl(ext_ca, []))
    assert refresh(source).ok
    assert (source.failing_since, source.consecutive_failures, source.last_error) == (None, 0, "")


# --- the stale policy at login ---------------------------------------------------------------------------


def test_failed_fetch_past_next_update_and_grace_marks_stale_and_refuses_login(server, ext_ca, ext_row):
    next_update = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    url = server.url("/ca.crl")
    source = add_source(ext_row, url, next_update=next_update, last_success_at=next_update, crl_number=3)
    now = next_update + timedelta(hours=2)

    refresh(source, now=now)

    assert source.state == CrlSource.State.STALE
    reason = revocation.crl_staleness(ext_row, now=now, grace=timedelta(hours=1))
    assert reason == (
        f"revocation status unknown: CRL {url} outdated since 2026-11-28 10:00 UTC (nextUpdate):"
        " CRL of CA External CA stale, fail closed"
    )


def test_stale_crl_refuses_login_with_the_reason(ext_ca, ext_row):
    add_source(ext_row, "http://crl.test/ca.crl", next_update=datetime.now(UTC) - timedelta(hours=2))
    check = authenticator().check_certificate([make_client(ext_ca).der])
    assert not check.verified
    assert check.reason.endswith("CRL of CA External CA stale, fail closed")


def test_stale_crl_accepts_when_the_config_fails_open(ext_ca, ext_row):
    add_source(ext_row, "http://crl.test/ca.crl", next_update=datetime.now(UTC) - timedelta(hours=2))
    assert authenticator(options(crl_fail_open=True)).check_certificate([make_client(ext_ca).der]).verified


def test_stale_crl_accepts_when_the_source_fails_open(ext_ca, ext_row):
    stale = datetime.now(UTC) - timedelta(hours=2)
    add_source(ext_row, "http://crl.test/ca.crl", next_update=stale, fail_open=True)
    assert authenticator().check_certificate([make_client(ext_ca).der]).verified


def test_source_never_tried_does_not_refuse(ext_ca, ext_row):
    add_source(ext_row, "http://crl.test/ca.crl")
    assert authenticator().check_certificate([make_client(ext_ca).der]).verified


def test_source_never_fetched_failing_within_grace_does_not_refuse(ext_ca, ext_row):
    add_source(ext_row, "http://crl.test/ca.crl", failing_since=datetime.now(UTC) - timedelta(minutes=30))
    assert authenticator().check_certificate([make_client(ext_ca).der]).verified


def test_source_never_fetched_failing_past_grace_refuses(ext_ca, ext_row):
    since = datetime.now(UTC) - timedelta(hours=2)
    add_source(ext_row, "http://crl.test/ca.crl", failing_since=since, state=CrlSource.State.FAILING)
    check = authenticator().check_certificate([make_client(ext_ca).der])
    assert not check.verified
    assert check.reason == (
        f"revocation status unknown: CRL http://crl.test/ca.crl never fetched, failing since"
        f" {since:%Y-%m-%d %H:%M} UTC: CRL of CA External CA stale, fail closed"
    )


def test_fresh_source_outweighs_a_dead_one(ext_ca, ext_row):
    add_source(ext_row, "http://dead/ca.crl", failing_since=datetime.now(UTC) - timedelta(days=2))
    add_source(ext_row, "http://live/ca.crl", next_update=datetime.now(UTC) + timedelta(days=1))
    assert authenticator().check_certificate([make_client(ext_ca).der]).verified


def test_mark_stale_sources_flags_sources_past_grace_for_the_admin(ext_row):
    now = datetime.now(UTC)
    old = add_source(ext_row, "http://old/ca.crl", state="ok", next_update=now - timedelta(hours=2))
    fresh = add_source(ext_row, "http://new/ca.crl", state="ok", next_update=now + timedelta(hours=2))
    assert crlfetch.mark_stale_sources(options=options()) == 1
    old.refresh_from_db()
    fresh.refresh_from_db()
    assert (old.state, fresh.state) == (CrlSource.State.STALE, CrlSource.State.OK)
