"""The login path's caches under one change feed (issue 17 §1; ``accounts.changefeed``).

A login of a known account with a known certificate runs one statement (its auth event) once the caches hold
the account, the hosted domains, the path's revocation verdict and the trust anchors; the change feed's
counter is read at most every ``changefeed.POLL_INTERVAL``. A change in another process (emulated here by SQL
on the rows plus the bump of the counter, which is what another process's ``changefeed.changed()`` commits,
without any signal reaching this process) is seen as soon as this process reads the counter again, and the
next login is refused with its exact condition; a change through the ORM's bulk paths (``QuerySet.update()``,
``bulk_create``) in this process applies at once. With the database unreachable the caches are not used:
``temporary-auth-failure``, not an acceptance from memory.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext

from accounts import changefeed
from accounts.models import Account, Domain
from certauth.authenticator import REASON_DEFERRED, CertificateAuthenticator
from certauth.models import Certificate, CertificateAuthority, CrlSource, RevokedSerial
from tests.certauth.crlhelpers import add_ca_row
from tests.certauth.test_authenticator import authenticator, make_account, register
from tests.certs import make_ca, make_client
from xmppauth import fastsql
from xmppauth.config import AuthConfig, Config, TlsOptions, XmppauthOptions

pytestmark = pytest.mark.django_db

DOMAIN = "localhost"
JID = "alice@localhost"
NOT_AUTHORIZED = "not-authorized"
TEMPORARY = "temporary-auth-failure"
WAIT = 30.0  # seconds at most for the feed to be read again (a guard against a hang, not a measure)


@pytest.fixture
def ca():
    issued = make_ca("Feed CA")
    add_ca_row(issued, name="Feed CA")
    return issued


@pytest.fixture
def alice(ca):
    cert = make_client(ca, jids=[JID])
    register(cert, account=make_account(JID))
    return cert


def login(cert, *, methods=("pki",), auth: CertificateAuthenticator | None = None):
    auth = auth or authenticator(methods=methods)
    check = auth.check_certificate([cert.der])
    return check, auth.authenticate_external(check.facts, None, DOMAIN)


def feed_sql(model, assignment: str, where: str) -> str:
    return f"UPDATE {fastsql.table(model)} SET {assignment} WHERE {where}"


def elsewhere(sql: str, params: list) -> None:
    """A change committed by another process: the rows and the counter's bump, by SQL (no signal here)."""
    feed = changefeed._feed_model()
    column = fastsql.column(feed, "generation")
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        cursor.execute(f"UPDATE {fastsql.table(feed)} SET {column} = {column} + 1 WHERE id = 1")


def wait_for_the_feed(before: int) -> None:
    """Until this process has read the counter again and forgotten its caches (the bound is the feed's
    POLL_INTERVAL; nothing here measures it)."""
    deadline = time.monotonic() + WAIT
    while changefeed.generation() == before:
        assert time.monotonic() < deadline, "the change feed was not read again"
        time.sleep(0.02)


def warm(cert, methods=("pki",)) -> int:
    """A login and its bind (they fill the caches); the generation the caches hold."""
    auth = authenticator(methods=methods)
    check, result = login(cert, auth=auth)
    assert result.jid == JID, result.reason
    assert auth.refusal_at_bind(f"{JID}/warm") is None
    return changefeed.generation()


# --- a cached accept still accepts, with one statement -------------------------------------------------


@pytest.mark.parametrize("method", ["pki", "db"])
def test_a_warm_login_runs_only_its_auth_event_insert(alice, method):
    warm(alice, (method,))
    auth = authenticator(methods=(method,))
    with CaptureQueriesContext(connection) as captured:
        check, result = login(alice, auth=auth)
        refusal = auth.refusal_at_bind(f"{JID}/phone")
    assert check.verified and result.jid == JID and refusal is None, result.reason
    # the auth event goes through xmppauth.fastsql; an executemany is logged as "1 times: INSERT ..."
    statements = [
        q["sql"].removeprefix("1 times: ") for q in captured if "accounts_changefeed" not in q["sql"]
    ]
    # xmppauth.groupcommit writes it with a COPY on PostgreSQL, an INSERT on SQLite
    assert len(statements) == 1 and statements[0].startswith(("INSERT INTO", "COPY ")), statements
    assert "certauth_authevent" in statements[0]


# --- a change elsewhere, or through a bulk path here, refuses the next login ---------------------------


def revoke_certificate(alice, how):
    now = datetime.now(UTC)
    if how == "orm":
        Certificate.objects.filter(fingerprint_sha256=alice.facts.fingerprint_sha256).update(
            status=Certificate.Status.REVOKED, revoked_at=now
        )
        return
    status, revoked_at = (fastsql.column(Certificate, name) for name in ("status", "revoked_at"))
    sql = feed_sql(
        Certificate, f"{status} = %s, {revoked_at} = %s", f"{fastsql.column(Certificate, 'serial')} = %s"
    )
    elsewhere(sql, ["revoked", fastsql.param(Certificate, "revoked_at", now), alice.facts.serial])


def disable_account(alice, how):
    if how == "orm":
        Account.objects.filter(localpart="alice").update(active=False)
        return
    sql = feed_sql(
        Account, f"{fastsql.column(Account, 'active')} = %s", f"{fastsql.column(Account, 'localpart')} = %s"
    )
    elsewhere(sql, [False, "alice"])


def distrust_ca(alice, how):
    if how == "orm":
        CertificateAuthority.objects.update(trusted_for_client_auth=False)
        return
    column = fastsql.column(CertificateAuthority, "trusted_for_client_auth")
    elsewhere(feed_sql(CertificateAuthority, f"{column} = %s", "1 = 1"), [False])


def disable_domain(alice, how):
    if how == "orm":
        Domain.objects.filter(name=DOMAIN).update(enabled=False)
        return
    column = fastsql.column(Domain, "enabled")
    elsewhere(feed_sql(Domain, f"{column} = %s", f"{fastsql.column(Domain, 'name')} = %s"), [False, DOMAIN])


def list_in_crl(alice, how):
    ca_row = CertificateAuthority.objects.get()
    source = CrlSource.objects.get(ca=ca_row)
    now = datetime.now(UTC)
    if how == "orm":
        RevokedSerial.objects.bulk_create(
            [RevokedSerial(source=source, ca=ca_row, serial=alice.facts.serial, revoked_at=now)]
        )
        return
    columns = ", ".join(
        fastsql.column(RevokedSerial, name) for name in ("source", "ca", "serial", "revoked_at", "reason")
    )
    sql = f"INSERT INTO {fastsql.table(RevokedSerial)} ({columns}) VALUES (%s, %s, %s, %s, %s)"
    elsewhere(
        sql, [source.pk, ca_row.pk, alice.facts.serial, fastsql.param(RevokedSerial, "revoked_at", now), ""]
    )


CHANGES = {
    # change -> (where the next login is refused, its SASL condition, the start of its reason)
    "certificate revoked": (revoke_certificate, "sasl", NOT_AUTHORIZED, "certificate revoked"),
    "account disabled": (disable_account, "sasl", NOT_AUTHORIZED, "pki: account alice@localhost is disabled"),
    "CA distrusted": (distrust_ca, "handshake", NOT_AUTHORIZED, "no verified client certificate"),
    "domain disabled": (
        disable_domain,
        "sasl",
        NOT_AUTHORIZED,
        "'alice@localhost' is not in a domain we host",
    ),
    "serial listed in a CRL": (list_in_crl, "sasl", NOT_AUTHORIZED, "certificate revoked"),
}


@pytest.mark.parametrize("how", ["elsewhere", "orm"])
@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_reaches_the_cache_and_the_next_login_is_refused(alice, ca, change, how):
    make, stage, condition, reason = CHANGES[change]
    if make is list_in_crl:
        CrlSource.objects.create(
            ca=CertificateAuthority.objects.get(),
            kind=CrlSource.Kind.OPERATOR_URL,
            location="http://crl.test/feed.crl",
            state=CrlSource.State.OK,
            last_success_at=datetime.now(UTC),
            next_update=datetime.now(UTC) + timedelta(days=1),
        )
    auth = authenticator()
    handshake = auth.check_certificate([alice.der])  # a client between handshake and SASL meanwhile
    assert handshake.verified, handshake.reason
    before = warm(alice)  # the caches hold the acceptance, the account, the domains, the anchors
    make(alice, how)
    wait_for_the_feed(before)
    if stage == "sasl":
        result = auth.authenticate_external(handshake.facts, None, DOMAIN)
    else:
        check, result = login(alice)
        assert not check.verified, check.reason
    assert result.jid is None
    assert result.condition == condition
    assert reason in result.reason, result.reason
    check, fresh = login(alice)  # a new connection too
    assert fresh.jid is None and fresh.condition == condition, fresh.reason


def test_a_revocation_by_sql_that_skips_the_feed_is_seen_within_max_age(alice, monkeypatch):
    """The backstop for a change made outside the application without the counter's bump (changefeed.MAX_AGE,
    shortened here): the caches are forgotten anyway and the next login is refused."""
    monkeypatch.setattr(changefeed, "MAX_AGE", 0.5)
    before = warm(alice)
    status = fastsql.column(Certificate, "status")
    with connection.cursor() as cursor:  # no bump: the counter does not move
        cursor.execute(
            feed_sql(Certificate, f"{status} = %s", f"{fastsql.column(Certificate, 'serial')} = %s"),
            ["revoked", alice.facts.serial],
        )
    wait_for_the_feed(before)
    check, result = login(alice)
    assert not check.verified and "revoked" in check.reason, check.reason
    assert result.jid is None and result.condition == "not-authorized", result.reason


def test_a_registered_certificate_given_to_another_account_elsewhere_no_longer_logs_in_its_old_owner(alice):
    """The ``db`` method's cached registration (certauth.authmethods) follows its row: the neighbour of the
    cached acceptance: a certificate moved to bob no longer logs alice in."""
    before = warm(alice, ("db",))
    bob = make_account("bob@localhost")
    account, serial = fastsql.column(Certificate, "account"), fastsql.column(Certificate, "serial")
    elsewhere(feed_sql(Certificate, f"{account} = %s", f"{serial} = %s"), [bob.pk, alice.facts.serial])
    wait_for_the_feed(before)
    check, result = login(alice, methods=("db",))
    assert check.verified and result.jid is None, result.reason
    assert result.condition == NOT_AUTHORIZED and "belongs to bob@localhost" in result.reason, result.reason


def test_an_account_disabled_elsewhere_is_refused_at_bind(alice):
    auth = authenticator()
    check, result = login(alice, auth=auth)
    assert result.jid == JID
    before = changefeed.generation()
    disable_account(alice, "elsewhere")
    wait_for_the_feed(before)
    refusal = auth.refusal_at_bind(f"{JID}/phone")
    assert refusal is not None and refusal.condition == "not-authorized", refusal


def test_a_cached_acceptance_ends_when_the_crl_turns_stale_by_the_clock(alice, ca):
    """No change in the database: only time passes beyond the CRL's nextUpdate plus grace (1 h here)."""
    now = datetime.now(UTC)
    CrlSource.objects.create(
        ca=CertificateAuthority.objects.get(),
        kind=CrlSource.Kind.OPERATOR_URL,
        location="http://crl.test/clock.crl",
        state=CrlSource.State.OK,
        last_success_at=now,
        next_update=now + timedelta(minutes=10),
    )
    clock = {"now": now}

    def at(moment):
        clock["now"] = moment
        config = Config(
            hosts=(DOMAIN,),
            auth=AuthConfig(methods=("pki",), sasl_mechanisms=("external",)),
            options=XmppauthOptions(crl_grace_seconds=3600),
        )
        return CertificateAuthenticator(
            config, TlsOptions(verify_mode="peer"), "tcp", "127.0.0.1:40000", clock=lambda: clock["now"]
        )

    assert login(alice, auth=at(now))[1].jid == JID  # cached: good until nextUpdate + grace
    assert login(alice, auth=at(now + timedelta(minutes=69)))[1].jid == JID
    check, result = login(alice, auth=at(now + timedelta(minutes=71)))
    assert not check.verified and check.reason.startswith(
        "revocation status unknown: CRL http://crl.test/clock.crl"
    )
    assert result.condition == NOT_AUTHORIZED


# --- the feed unreachable: no acceptance from memory ---------------------------------------------------


def test_with_the_database_unreachable_the_cache_is_not_used_temporary_auth_failure(alice):
    assert login(alice)[1].jid == JID
    assert login(alice)[1].jid == JID  # the caches hold everything this login needs but its auth event
    time.sleep(changefeed.POLL_INTERVAL)  # the feed's last read is now older than the bound

    def unreachable(execute, sql, params, many, context):
        raise OperationalError("connection refused")

    with connection.execute_wrapper(unreachable):
        auth = authenticator()
        check = auth.check_certificate([alice.der])
        assert check.verified and check.reason == REASON_DEFERRED  # nothing decided from memory
        result = auth.authenticate_external(check.facts, None, DOMAIN)
    assert result.jid is None and result.condition == TEMPORARY
    assert login(alice)[1].jid == JID  # the database answers again


def test_caches_are_bounded():
    cache = changefeed.FeedCache("test", 3)
    gen = changefeed.generation()
    for key in range(10):
        cache.put(key, key, gen)
    assert len(cache) == 3 and cache.get(0, gen) is None and cache.get(9, gen) == 9
    changefeed.forget()
    assert cache.get(9, changefeed.generation()) is None  # another generation: nothing held
