"""The session registry: which commands end which sessions, leases, expiry, and what creates the commands.

Specs: RFC 6120 §4.9.3.16 and §13.7.2.3 (``reset`` when the stream's certificate is revoked), DESIGN §5.
The reactor side runs on Twisted's ``Clock``; the database side on pytest-django's database.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from twisted.internet.task import Clock

from accounts.models import Account, Domain
from certauth import services
from certauth.models import RevocationReason
from transport.sessions import terminations as sessions
from transport.sessions.models import LiveSession, SessionTermination
from transport.sessions.registry import Admission, LiveSessions, TerminationWatcher
from transport.sessions.terminations import SessionFacts, Termination, matches

FINGERPRINT = "ab" * 32
Target = SessionTermination.Target


def facts(**overrides) -> SessionFacts:
    values = {
        "full_jid": "alice@localhost/phone",
        "transport": "tcp",
        "peer": "127.0.0.1:40000",
        "cert_fingerprint": FINGERPRINT,
        "cert_serial": "c0ffee",
        "issuer_ca_id": 7,
        "cert_not_after": timezone.now() + timedelta(days=30),
        **overrides,
    }
    return SessionFacts(**values)


def command(target: str, *, command_id: int = 1, **fields) -> Termination:
    return Termination(
        id=command_id, created_at=timezone.now(), target=target, condition="reset", text="why", **fields
    )


# --- matching ------------------------------------------------------------------------------------------


def test_fingerprint_command_ends_the_session_of_that_certificate_only():
    assert matches(command(Target.FINGERPRINT, fingerprint=FINGERPRINT), facts())
    assert not matches(command(Target.FINGERPRINT, fingerprint="cd" * 32), facts())


def test_empty_fingerprint_ends_no_session_without_a_certificate():
    assert not matches(command(Target.FINGERPRINT, fingerprint=""), facts(cert_fingerprint=""))


def test_serial_command_needs_the_same_issuer():
    assert matches(command(Target.ISSUER_SERIAL, issuer_ca_id=7, serial="c0ffee"), facts())
    assert not matches(command(Target.ISSUER_SERIAL, issuer_ca_id=8, serial="c0ffee"), facts())
    assert not matches(command(Target.ISSUER_SERIAL, issuer_ca_id=7, serial="c0ffef"), facts())


def test_serial_command_ends_no_session_whose_issuer_is_not_a_ca_row():
    assert not matches(command(Target.ISSUER_SERIAL, issuer_ca_id=None, serial="c0ffee"), facts())
    assert not matches(
        command(Target.ISSUER_SERIAL, issuer_ca_id=7, serial="c0ffee"), facts(issuer_ca_id=None)
    )


def test_account_command_ends_every_resource_of_the_bare_jid():
    assert matches(command(Target.BARE_JID, bare_jid="alice@localhost"), facts())
    assert matches(command(Target.BARE_JID, bare_jid="alice@localhost"), facts(full_jid="alice@localhost/pc"))
    assert not matches(command(Target.BARE_JID, bare_jid="bob@localhost"), facts())


def test_session_command_ends_that_session_only():
    session = facts()
    assert matches(command(Target.SESSION, session_id=session.session_id), session)
    assert not matches(command(Target.SESSION, session_id=uuid.uuid4()), session)


# --- the reactor side ----------------------------------------------------------------------------------


class Closes:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, condition: str, text: str) -> None:
        self.calls.append((condition, text))


def test_matching_command_closes_the_local_session_with_reset_and_its_text():
    registry, closes = LiveSessions(reactor=Clock()), Closes()
    registry.register(facts(), closes)
    assert registry.apply(command(Target.FINGERPRINT, fingerprint=FINGERPRINT)) == 1
    assert closes.calls == [("reset", "why")]


def test_command_for_another_certificate_leaves_the_session_alone():
    registry, closes = LiveSessions(reactor=Clock()), Closes()
    registry.register(facts(), closes)
    assert registry.apply(command(Target.FINGERPRINT, fingerprint="cd" * 32)) == 0
    assert closes.calls == []


def test_unregistered_session_is_not_closed():
    registry, closes = LiveSessions(reactor=Clock()), Closes()
    handle = registry.register(facts(), closes)
    handle.unregister()
    registry.apply(command(Target.FINGERPRINT, fingerprint=FINGERPRINT))
    assert closes.calls == [] and len(registry) == 0


def test_session_is_closed_once_even_when_two_commands_match():
    registry, closes = LiveSessions(reactor=Clock()), Closes()
    registry.register(facts(), closes)
    registry.apply(command(Target.FINGERPRINT, fingerprint=FINGERPRINT))
    registry.apply(command(Target.BARE_JID, command_id=2, bare_jid="alice@localhost"))
    assert closes.calls == [("reset", "why")]


def test_session_ends_with_reset_when_its_certificate_expires():
    clock, closes = Clock(), Closes()
    registry = LiveSessions(reactor=clock)
    registry.register(facts(cert_not_after=timezone.now() + timedelta(seconds=60)), closes)
    clock.advance(59)
    assert closes.calls == []
    clock.advance(2)
    assert closes.calls == [("reset", "certificate expired")]


def test_unregistering_cancels_the_expiry():
    clock, closes = Clock(), Closes()
    registry = LiveSessions(reactor=clock)
    handle = registry.register(facts(cert_not_after=timezone.now() + timedelta(seconds=60)), closes)
    handle.unregister()
    clock.advance(120)
    assert closes.calls == [] and clock.getDelayedCalls() == []


def test_session_registered_just_after_a_matching_command_is_closed_too():
    """A login that raced with the revocation (checked before, bound after the command was applied)."""
    clock, closes = Clock(), Closes()
    registry = LiveSessions(reactor=clock)
    registry.apply(command(Target.FINGERPRINT, fingerprint=FINGERPRINT))
    registry.register(facts(), closes)
    clock.advance(0)
    assert closes.calls == [("reset", "why")]


def test_session_registered_after_an_unrelated_command_stays():
    clock, closes = Clock(), Closes()
    registry = LiveSessions(reactor=clock)
    registry.apply(command(Target.FINGERPRINT, fingerprint="cd" * 32))
    registry.register(facts(), closes)
    clock.advance(0)
    assert closes.calls == []


def test_old_commands_are_forgotten_for_new_sessions():
    clock, closes = Clock(), Closes()
    registry = LiveSessions(reactor=clock)
    registry.apply(command(Target.FINGERPRINT, fingerprint=FINGERPRINT))
    registry.forget_older_than(timezone.now() + timedelta(seconds=1))
    registry.register(facts(), closes)
    clock.advance(0)
    assert closes.calls == []


# --- the database side ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_watcher_applies_each_new_command_once_and_skips_older_ones():
    sessions.terminate_certificate(FINGERPRINT, "before start")
    registry, closes = LiveSessions(reactor=Clock()), Closes()
    watcher = TerminationWatcher(registry, Clock())
    watcher.last_id = sessions.last_termination_id()
    watcher.started_at = timezone.now()
    registry.register(facts(), closes)
    horizon = watcher.started_at
    watcher.apply(sessions.terminations_since(watcher.last_id, horizon), horizon)
    assert closes.calls == []  # the command older than the watcher is not applied
    sessions.terminate_certificate(FINGERPRINT, "certificate revoked (keyCompromise)")
    watcher.apply(sessions.terminations_since(watcher.last_id, horizon), horizon)
    watcher.apply(sessions.terminations_since(watcher.last_id, horizon), horizon)
    assert closes.calls == [("reset", "certificate revoked (keyCompromise)")]


@pytest.mark.django_db
def test_terminations_since_returns_a_recent_command_with_a_lower_id():
    """A row whose id was taken before the last seen one but committed later (PostgreSQL sequences)."""
    early = sessions.terminate_account("alice@localhost")
    late = sessions.terminate_account("bob@localhost")
    horizon = timezone.now() - timedelta(seconds=5)
    assert [c.id for c in sessions.terminations_since(late.pk, horizon)] == [early.pk, late.pk]
    assert sessions.terminations_since(late.pk, timezone.now() + timedelta(seconds=5)) == []


@pytest.mark.django_db
def test_heartbeat_renews_this_process_and_purges_a_dead_one():
    mine, theirs = facts(), facts(full_jid="bob@localhost/pc")
    sessions.save_session(mine)
    sessions.save_session(theirs, process="elsewhere:1:1")
    past = timezone.now() - timedelta(seconds=1)
    LiveSession.objects.update(lease_expires_at=past)
    assert sessions.heartbeat() == 1
    row = LiveSession.objects.get()
    assert row.id == mine.session_id and row.lease_expires_at > timezone.now()
    assert (row.bare_jid, row.resource, row.process_id) == ("alice@localhost", "phone", sessions.process_id())


@pytest.mark.django_db
def test_saving_a_session_again_refreshes_its_one_row():
    session = facts()
    sessions.save_session(session)
    LiveSession.objects.update(lease_expires_at=timezone.now() - timedelta(seconds=1), peer="old")
    sessions.save_session(session)
    row = LiveSession.objects.get()
    assert row.id == session.session_id
    assert row.peer == "127.0.0.1:40000" and row.lease_expires_at > timezone.now()


@pytest.mark.django_db
def test_deleted_session_leaves_no_row():
    session = facts()
    sessions.save_session(session)
    sessions.delete_session(session.session_id)
    assert not LiveSession.objects.exists()


# --- what creates commands -----------------------------------------------------------------------------


@pytest.fixture
def our_certificate(db):
    ca = services.create_ca("sessions test CA")
    domain = Domain.objects.create(name="localhost")
    account = Account.objects.create(localpart="alice", domain=domain)
    return services.issue_for_account(account, ca=ca).row


@pytest.mark.django_db(transaction=True)
def test_revoking_a_certificate_orders_its_sessions_ended_with_the_reason(our_certificate):
    services.revoke(our_certificate, RevocationReason.KEY_COMPROMISE)
    row = SessionTermination.objects.get()
    assert (row.target, row.fingerprint) == (Target.FINGERPRINT, our_certificate.fingerprint_sha256)
    assert (row.condition, row.text) == ("reset", "certificate revoked (keyCompromise)")


@pytest.mark.django_db(transaction=True)
def test_holding_a_certificate_orders_its_sessions_ended(our_certificate):
    services.hold(our_certificate)
    assert SessionTermination.objects.get().text == "certificate on hold"


@pytest.mark.django_db(transaction=True)
def test_releasing_a_certificate_orders_nothing(our_certificate):
    services.hold(our_certificate)
    services.release(our_certificate)
    assert SessionTermination.objects.count() == 1


# A CRL's newly listed serials: tests/transport/test_crl_session_join.py.


@pytest.mark.django_db(transaction=True)
def test_disabling_an_account_orders_its_sessions_ended():
    account = Account.objects.create(localpart="Alice", domain=Domain.objects.create(name="localhost"))
    assert not SessionTermination.objects.exists()  # saved active: nothing to end
    account.active = False
    account.save()
    row = SessionTermination.objects.get()
    assert (row.target, row.bare_jid, row.text) == (Target.BARE_JID, "alice@localhost", "account disabled")


# --- admin ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_lists_live_sessions_and_ends_one_by_its_id(staff_client):
    session = facts()
    sessions.save_session(session)
    listing = staff_client.get("/admin/transport/livesession/")
    assert listing.status_code == 200 and b"alice@localhost/phone" in listing.content
    staff_client.post(
        "/admin/transport/livesession/",
        {"action": "end_sessions", "_selected_action": [str(session.session_id)]},
    )
    row = SessionTermination.objects.get()
    assert (row.target, row.session_id, row.condition, row.text) == (
        Target.SESSION,
        session.session_id,
        "reset",
        "ended by the operator",
    )


@pytest.mark.django_db
def test_admin_lists_the_commands_with_what_they_match(staff_client):
    sessions.terminate_serials(7, ["c0ffee"], "certificate revoked (listed in the CRL of X)")
    listing = staff_client.get("/admin/transport/sessiontermination/")
    assert listing.status_code == 200 and b"CA #7 serial c0ffee" in listing.content


@pytest.mark.django_db
def test_admin_offers_no_bulk_delete_of_live_sessions(staff_client):
    """A deleted row would hide a session that still lives: ending is the only way out."""
    sessions.save_session(facts())
    listing = staff_client.get("/admin/transport/livesession/")
    assert b"end_sessions" in listing.content and b"delete_selected" not in listing.content


def test_registry_leaves_the_row_of_a_bridged_session_to_the_bridge(monkeypatch):
    from twisted.internet import defer

    registry = LiveSessions(reactor=Clock(), persist=True)
    calls: list[str] = []

    def record(function, *args):
        calls.append(function.__name__)
        return defer.succeed(None)

    monkeypatch.setattr(registry, "_in_thread", record)
    bridged = registry.register(facts(), lambda condition, text: None)
    bridged.row_deleted_by_bridge = True  # what SessionBridge.start does for a persisted session
    plain = registry.register(facts(full_jid="bob@localhost/pc"), lambda condition, text: None)
    bridged.unregister()
    plain.unregister()
    assert calls == ["_admit", "_admit", "delete_session"]  # one DELETE, for the plain one


@pytest.mark.django_db
def test_after_save_runs_in_the_same_call_once_the_row_exists_and_its_answer_is_saved(monkeypatch):
    """One thread hop per bind: the conflict lookup runs right after the insert, with our row there."""
    from twisted.internet import defer

    registry = LiveSessions(reactor=Clock(), persist=True)
    hops: list[str] = []

    def inline(function, *args):
        hops.append(function.__name__)
        return defer.maybeDeferred(function, *args)

    monkeypatch.setattr(registry, "_in_thread", inline)
    seen: list[list[str]] = []

    def after_save(saved_facts: SessionFacts) -> str:
        seen.append([str(pk) for pk in LiveSession.objects.values_list("id", flat=True)])
        return "older sessions"

    handle = registry.register(facts(), lambda condition, text: None, after_save=after_save)
    results: list[object] = []
    handle.admitted.addCallback(results.append)
    assert hops == ["_admit"] and seen == [[str(handle.session_id)]]
    assert results == [Admission(None, "older sessions")]
    plain = registry.register(facts(full_jid="bob@localhost/pc"), lambda condition, text: None)
    plain.admitted.addCallback(results.append)
    assert results[1] == Admission(None, None) and LiveSession.objects.count() == 2


# --- bind: register first, re-check in the worker thread, then the bind result (issue 11 point 6) -----------


class Refusal:
    def __init__(self, condition: str, reason: str) -> None:
        self.condition, self.reason = condition, reason


class HeldThread:
    """Stands in for the worker-thread hop: runs the function when the test says so."""

    def __init__(self) -> None:
        from twisted.internet import defer

        self.pending: list[tuple[object, tuple, object]] = []
        self._defer = defer

    def __call__(self, function, *args):
        deferred = self._defer.Deferred()
        self.pending.append((function, args, deferred))
        return deferred

    def run(self) -> None:
        for function, args, deferred in self.pending:
            deferred.callback(function(*args))
        self.pending = []

    def fail(self) -> None:
        for _, _, deferred in self.pending:
            deferred.callback(None)  # what _in_thread's errback leaves after logging the failure
        self.pending = []


def bind(registry: LiveSessions, check, closes: Closes, admitted: list[str]):
    from transport.sessions.registry import bind_session

    return bind_session(
        registry,
        full_jid="alice@localhost/phone",
        transport="tcp",
        peer="127.0.0.1:40000",
        cert_fingerprint=FINGERPRINT,
        cert_facts=None,
        issuer_ca_id=7,
        check=check,
        close=closes,
        admit=lambda: admitted.append("bind result"),
    )


def test_bind_result_is_sent_only_after_the_check_passed(monkeypatch):
    registry, closes, admitted, thread = LiveSessions(reactor=Clock()), Closes(), [], HeldThread()
    monkeypatch.setattr(registry, "_in_thread", thread)
    asked: list[str] = []
    handle = bind(registry, lambda jid: asked.append(jid), closes, admitted)
    assert admitted == [] and len(registry) == 1  # registered before the check, no result yet
    thread.run()
    assert asked == ["alice@localhost/phone"] and admitted == ["bind result"] and closes.calls == []
    assert registry.handles[handle.session_id] is handle


def test_refused_check_ends_the_session_with_its_condition_and_never_binds(monkeypatch):
    registry, closes, admitted, thread = LiveSessions(reactor=Clock()), Closes(), [], HeldThread()
    monkeypatch.setattr(registry, "_in_thread", thread)
    bind(registry, lambda jid: Refusal("reset", "bind refused: certificate revoked"), closes, admitted)
    thread.run()
    assert closes.calls == [("reset", "bind refused: certificate revoked")] and admitted == []
    assert len(registry) == 0


def test_revocation_applied_while_the_check_runs_ends_the_session_and_never_binds(monkeypatch):
    """The race the order closes: the check read the database before the revocation committed, and the
    watcher applies the command before the check's answer is back: the registered session is ended."""
    registry, closes, admitted, thread = LiveSessions(reactor=Clock()), Closes(), [], HeldThread()
    monkeypatch.setattr(registry, "_in_thread", thread)
    bind(registry, lambda jid: None, closes, admitted)
    assert registry.apply(command(Target.FINGERPRINT, fingerprint=FINGERPRINT)) == 1
    thread.run()  # the check saw nothing (it read before the revocation)
    assert closes.calls == [("reset", "why")] and admitted == []


def test_revocation_applied_just_before_the_bind_ends_it_and_never_binds(monkeypatch):
    """A command applied moments before the session entered the registry (within RECENT)."""
    clock = Clock()
    registry, closes, admitted, thread = LiveSessions(reactor=clock), Closes(), [], HeldThread()
    monkeypatch.setattr(registry, "_in_thread", thread)
    registry.apply(command(Target.BARE_JID, bare_jid="alice@localhost"))
    bind(registry, lambda jid: None, closes, admitted)
    clock.advance(0)
    thread.run()
    assert closes.calls == [("reset", "why")] and admitted == []


def test_check_that_cannot_run_ends_the_session_fail_closed(monkeypatch):
    registry, closes, admitted, thread = LiveSessions(reactor=Clock()), Closes(), [], HeldThread()
    monkeypatch.setattr(registry, "_in_thread", thread)
    bind(registry, lambda jid: None, closes, admitted)
    thread.fail()
    assert closes.calls == [("internal-server-error", "")] and admitted == [] and len(registry) == 0


def test_client_gone_before_the_check_answers_is_not_bound(monkeypatch):
    registry, closes, admitted, thread = LiveSessions(reactor=Clock()), Closes(), [], HeldThread()
    monkeypatch.setattr(registry, "_in_thread", thread)
    handle = bind(registry, lambda jid: None, closes, admitted)
    handle.unregister()
    thread.run()
    assert admitted == [] and closes.calls == []


@pytest.mark.django_db
def test_refused_bind_inserts_no_session_row(monkeypatch):
    from twisted.internet import defer

    registry, closes, admitted = LiveSessions(reactor=Clock(), persist=True), Closes(), []
    monkeypatch.setattr(registry, "_in_thread", lambda function, *args: defer.maybeDeferred(function, *args))
    bind(registry, lambda jid: Refusal("not-authorized", "bind refused: account disabled"), closes, admitted)
    assert closes.calls == [("not-authorized", "bind refused: account disabled")]
    assert not LiveSession.objects.exists()
    bind(registry, lambda jid: None, closes, admitted)
    assert LiveSession.objects.count() == 1 and admitted == ["bind result"]
