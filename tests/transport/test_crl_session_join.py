"""A new CRL ends only the live sessions whose certificates it lists (issue 11 point 7; RFC 6120 §13.7.2.3).

The refresh (``certauth.crlfetch.refresh_source``, as the Celery worker runs it, on a ``file`` source) stores
the CRL's serials in bulk; the receiver of ``external_revocations_found`` then joins the ``LiveSession`` rows
of that CA to the serials now held for the source in one query and writes one ``session`` command per session
it ends, never one per serial. The listener's watcher applies them by session id. The database side runs on
pytest-django's database (both legs); the last test runs ``manage.py runc2s`` with real TLS sessions.
How long a 100,000-serial CRL takes is measured by ``bench/crl_scale.py``, not asserted here.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from twisted.internet.task import Clock

from certauth import crlfetch, trust
from certauth.models import CertificateAuthority, CrlSource, RevokedSerial
from tests.certauth.crlhelpers import add_ca_row, add_source, make_crl, options
from tests.certauth.test_crl_celery_worker import run_python
from tests.certs import Issued, make_ca, make_client, make_intermediate, make_root
from tests.processes import Managed
from tests.transport.sessionclient import Refused, login
from tests.transport.test_session_termination_processes import (  # the fixture, and its helpers
    migrated_database,  # noqa: F401
    scratch,
    stop,
)
from tests.transport.tlsclient import client_context
from transport.sessions import terminations as sessions
from transport.sessions.models import SessionTermination
from transport.sessions.registry import LiveSessions, TerminationWatcher
from transport.sessions.terminations import SessionFacts

Target = SessionTermination.Target
OTHERS = range(0x10_0000, 0x10_0000 + 2500)  # serials of certificates that hold no session here


@pytest.fixture(autouse=True)
def _fresh_trust_cache():
    trust.invalidate()
    yield
    trust.invalidate()


class Ca:
    """An external CA: its certificate and key, its row, and one ``file`` CRL source."""

    def __init__(self, directory: Path, name: str, issued: Issued | None = None) -> None:
        self.issued = issued or make_ca(name)
        self.row: CertificateAuthority = add_ca_row(self.issued, name)
        self.path = directory / f"{name.replace(' ', '_')}.crl"
        self.source: CrlSource = add_source(self.row, str(self.path), kind=CrlSource.Kind.FILE)
        self.number = 0

    def publish(self, serials, *, reason: str = "key_compromise") -> crlfetch.RefreshOutcome:
        """Write the next CRL listing ``serials`` and refresh the source from it, as the worker does."""
        self.number += 1
        self.path.write_bytes(make_crl(self.issued, list(serials), number=self.number, reason=reason))
        outcome = crlfetch.refresh_source(self.source, options=options())
        assert outcome.ok, outcome.message
        return outcome

    def session(self, localpart: str, *, serial: int | None = None) -> tuple[SessionFacts, Issued]:
        """A live session row of a certificate this CA issued (as a listener that persists writes it)."""
        return session_under(self.issued, self.row, localpart, serial=serial)


def session_under(
    issuer: Issued, issuer_row: CertificateAuthority, localpart: str, *, serial: int | None = None
) -> tuple[SessionFacts, Issued]:
    """A live session row of a certificate ``issuer`` issued (as a listener that persists writes it)."""
    cert = make_client(issuer, jids=[f"{localpart}@localhost"], serial=serial)
    facts = SessionFacts(
        full_jid=f"{localpart}@localhost/live",
        transport="tls",
        peer="127.0.0.1:40000",
        cert_fingerprint=cert.facts.fingerprint_sha256,
        cert_serial=format(cert.cert.serial_number, "x"),
        issuer_ca_id=issuer_row.pk,
        cert_not_after=timezone.now() + timedelta(days=30),
    )
    sessions.save_session(facts)
    return facts, cert


def commands() -> list[SessionTermination]:
    return list(SessionTermination.objects.order_by("id"))


def ended_ids() -> set:
    return {row.session_id for row in commands()}


@pytest.fixture
def ca(tmp_path, transactional_db) -> Ca:
    return Ca(tmp_path, "Scale CA")


# --- which sessions a CRL ends ----------------------------------------------------------------------------


def test_a_crl_listing_two_live_sessions_among_many_serials_ends_exactly_those_two(ca):
    alice, alice_cert = ca.session("alice")
    bob, bob_cert = ca.session("bob")
    carol, _ = ca.session("carol")  # same CA, not listed: lives on
    outcome = ca.publish([*OTHERS, alice_cert.cert.serial_number, bob_cert.cert.serial_number])
    assert outcome.entries == len(OTHERS) + 2 and len(outcome.new_serials) == len(OTHERS) + 2
    rows = commands()
    assert {row.session_id for row in rows} == {alice.session_id, bob.session_id}
    assert len(rows) == 2  # one command per session ended, not one per serial listed
    assert carol.session_id not in ended_ids()
    for row in rows:
        assert (row.target, row.condition) == (Target.SESSION, "reset")  # RFC 6120 §4.9.3.16
        assert row.text == "certificate revoked (listed in the CRL of Scale CA)"
        assert row.issuer_ca_id == ca.row.pk


def test_a_crl_listing_no_live_session_makes_no_command(ca):
    ca.session("alice")
    ca.publish(OTHERS)
    assert commands() == []


def test_a_serial_listed_in_the_previous_crl_makes_no_new_termination(ca):
    alice, alice_cert = ca.session("alice")
    bob, bob_cert = ca.session("bob")
    ca.publish([alice_cert.cert.serial_number])
    assert ended_ids() == {alice.session_id}
    ca.publish([alice_cert.cert.serial_number, bob_cert.cert.serial_number])  # alice again, bob new
    assert [row.session_id for row in commands()] == [alice.session_id, bob.session_id]
    ca.publish([alice_cert.cert.serial_number, bob_cert.cert.serial_number])  # nothing new
    assert len(commands()) == 2


def test_the_same_serial_in_another_cas_crl_ends_nothing(ca, tmp_path):
    other = Ca(tmp_path, "Other CA")
    serial = 0xC0FFEE
    alice, _ = ca.session("alice", serial=serial)
    other.publish([serial])  # another CA revoking its own certificate with that serial
    assert commands() == []
    ca.publish([serial])  # the session's own CA listing it: ended
    assert ended_ids() == {alice.session_id}


def test_a_serial_another_source_of_the_same_ca_listed_already_makes_no_new_termination(ca, tmp_path):
    alice, alice_cert = ca.session("alice")
    bob, bob_cert = ca.session("bob")
    ca.publish([alice_cert.cert.serial_number])  # the first distribution point
    mirror = add_source(ca.row, str(tmp_path / "mirror.crl"), kind=CrlSource.Kind.FILE)  # a second one
    (tmp_path / "mirror.crl").write_bytes(
        make_crl(ca.issued, [alice_cert.cert.serial_number, bob_cert.cert.serial_number], number=2)
    )
    assert crlfetch.refresh_source(mirror, options=options()).new_serials == (bob.cert_serial,)
    assert [row.session_id for row in commands()] == [alice.session_id, bob.session_id]


def test_the_join_is_one_query_whatever_the_crl_lists(ca):
    """The receiver's lookup is one query joining the CA's session rows to the source's serials, plus one
    insert of the commands: it never walks the CRL's serials against the database."""
    alice, alice_cert = ca.session("alice")
    listed = [*OTHERS, alice_cert.cert.serial_number]
    ca.path.write_bytes(make_crl(ca.issued, listed, number=1))
    crlfetch.refresh_source(ca.source, options=options())  # stored; the receiver ran after commit
    SessionTermination.objects.all().delete()
    new = tuple(format(serial, "x") for serial in listed)
    with CaptureQueriesContext(connection) as queries:
        made = sessions.terminate_listed(ca.row.pk, ca.source.pk, new, "certificate revoked")
    assert [row.session_id for row in made] == [alice.session_id]
    selects = [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1, selects
    assert "certauth_revokedserial" in selects[0] and "transport_livesession" in selects[0]


# --- the CRL is stored whole, in bulk ------------------------------------------------------------------


def test_a_large_crl_is_stored_whole_with_dates_and_reasons(ca):
    ca.publish(OTHERS)
    rows = RevokedSerial.objects.filter(source=ca.source)
    assert rows.count() == len(OTHERS)
    assert set(rows.values_list("serial", flat=True)) == {format(serial, "x") for serial in OTHERS}
    one = rows.get(serial=format(OTHERS[-1], "x"))
    assert (one.ca_id, one.reason) == (ca.row.pk, "key_compromise")
    assert one.revoked_at == datetime(2026, 9, 3, tzinfo=UTC)  # what make_crl writes
    ca.publish([OTHERS[0]])  # the next CRL replaces the rows held
    assert list(RevokedSerial.objects.filter(source=ca.source).values_list("serial", flat=True)) == [
        format(OTHERS[0], "x")
    ]


def inserts_and_deletes(queries: CaptureQueriesContext) -> list[str]:
    return [
        q["sql"]
        for q in queries.captured_queries
        if "certauth_revokedserial" in q["sql"] and q["sql"].lstrip().upper().startswith(("INSERT", "DELETE"))
    ]


def test_a_crl_repeating_the_serials_held_rewrites_none_of_them(ca):
    ca.publish(OTHERS)
    with CaptureQueriesContext(connection) as queries:
        outcome = ca.publish(OTHERS)
    assert outcome.ok and outcome.new_serials == ()
    assert inserts_and_deletes(queries) == []
    assert RevokedSerial.objects.filter(source=ca.source).count() == len(OTHERS)


def test_a_held_serial_revoked_for_good_gets_its_new_reason_and_no_second_command(ca):
    alice, alice_cert = ca.session("alice")
    serial = alice_cert.cert.serial_number
    ca.publish([*OTHERS[:10], serial], reason="certificate_hold")
    assert ended_ids() == {alice.session_id}  # a hold ends the session too (RFC 5280 §5.3.1)
    ca.publish([*OTHERS[:10], serial], reason="key_compromise")
    reasons = set(RevokedSerial.objects.filter(source=ca.source).values_list("reason", flat=True))
    assert reasons == {"key_compromise"}
    assert len(commands()) == 1


def test_serials_no_longer_listed_are_dropped_and_the_others_kept(ca):
    ca.publish(OTHERS)
    ca.publish(OTHERS[1200:])  # 1,200 holds released (RFC 5280 §5.3.1 removeFromCRL): more than one DELETE
    held = set(RevokedSerial.objects.filter(source=ca.source).values_list("serial", flat=True))
    assert held == {format(serial, "x") for serial in OTHERS[1200:]}


# --- the listener side ---------------------------------------------------------------------------------


class Closes:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, condition: str, text: str) -> None:
        self.calls.append((condition, text))


def test_the_watcher_ends_the_listed_sessions_it_holds_and_no_other(ca):
    clock = Clock()
    registry = LiveSessions(reactor=clock)
    held = {}
    for name in ("alice", "bob", "carol"):
        facts, cert = ca.session(name)
        closes = Closes()
        registry.register(facts, closes)
        held[name] = (cert, closes)
    watcher = TerminationWatcher(registry, clock)
    watcher.last_id = sessions.last_termination_id()
    ca.publish([*OTHERS[:50], held["alice"][0].cert.serial_number, held["bob"][0].cert.serial_number])
    horizon = timezone.now() - timedelta(seconds=10)
    watcher.apply(sessions.terminations_since(watcher.last_id, horizon), horizon)
    text = "certificate revoked (listed in the CRL of Scale CA)"
    assert held["alice"][1].calls == [("reset", text)]
    assert held["bob"][1].calls == [("reset", text)]
    assert held["carol"][1].calls == []


def test_a_session_command_is_applied_by_id_and_ends_only_that_session():
    registry = LiveSessions(reactor=Clock())
    first, second = Closes(), Closes()
    one = SessionFacts(full_jid="alice@localhost/a", transport="tls")
    registry.register(one, first)
    registry.register(SessionFacts(full_jid="alice@localhost/b", transport="tls"), second)
    command = sessions.Termination(
        id=1, created_at=timezone.now(), target=Target.SESSION, condition="reset", text="why",
        session_id=one.session_id,
    )  # fmt: skip
    assert registry.apply(command) == 1
    assert registry.apply(command) == 0  # closed already
    assert (first.calls, second.calls) == ([("reset", "why")], [])


# --- an intermediate revoked by its issuer's CRL ends the sessions below it ------------------------------


def test_a_crl_revoking_an_intermediate_ends_the_sessions_of_its_leaves_and_no_other(
    tmp_path, transactional_db
):
    root = Ca(tmp_path, "Path Root", make_root("Path Root"))
    revoked_int = make_intermediate(root.issued, "Revoked Int", serial=0x777)
    kept_int = make_intermediate(root.issued, "Kept Int", serial=0x778)
    revoked_row = add_ca_row(revoked_int, "Revoked Int", trusted=False)  # as learnt from a client's chain
    kept_row = add_ca_row(kept_int, "Kept Int", trusted=False)
    alice, _ = session_under(revoked_int, revoked_row, "alice")
    bob, _ = session_under(kept_int, kept_row, "bob")
    carol, _ = root.session("carol")  # issued by the root itself
    root.publish([*OTHERS[:50], 0x777])
    rows = commands()
    assert {row.session_id for row in rows} == {alice.session_id}
    assert rows[0].text == "issuing CA revoked (Revoked Int)" and rows[0].condition == "reset"


def test_the_same_serial_on_a_ca_of_another_issuer_is_not_revoked_by_this_crl(tmp_path, transactional_db):
    root = Ca(tmp_path, "Path Root", make_root("Path Root"))
    other_root = make_root("Other Root")
    lookalike = make_intermediate(other_root, "Other Int", serial=0x777)  # same serial, another issuer
    lookalike_row = add_ca_row(lookalike, "Other Int", trusted=False)
    dave, _ = session_under(lookalike, lookalike_row, "dave")
    root.publish([0x777])
    assert dave.session_id not in ended_ids()


# --- end to end: runc2s holds real TLS sessions, another process refreshes the CRL --------------------


REFRESH = """
    import django, json, os
    django.setup()
    from certauth import crlfetch
    from certauth.models import CrlSource
    outcome = crlfetch.refresh_source(CrlSource.objects.get(pk=int(os.environ["SOURCE_ID"])))
    print(json.dumps({"ok": outcome.ok, "message": outcome.message}))
"""

SETUP = """
    import django, json, os
    django.setup()
    from certauth import services
    from certauth.models import CrlSource
    ca = services.import_ca(open(os.environ["CA_PEM"], "rb").read(), name="Scale CA")
    source = CrlSource.objects.create(ca=ca, kind="file", location=os.environ["CRL_FILE"])
    print(json.dumps({"source": source.pk}))
"""


def test_runc2s_ends_the_two_listed_tls_sessions_and_keeps_the_third(tmp_path, migrated_database):  # noqa: F811
    crl_file = tmp_path / "scale.crl"
    # The CA is a database row; its CRL file is in the config, as start-up keeps only the listed file sources.
    env, pki, port = scratch(tmp_path, migrated_database, cacertfile=False, crl_files=(crl_file,))
    crl_file.write_bytes(make_crl(pki.ca, OTHERS, number=1))
    env.update(CA_PEM=str(tmp_path / "ca.pem"), CRL_FILE=str(crl_file))
    env["SOURCE_ID"] = str(json.loads(run_python(SETUP, env))["source"])
    assert json.loads(run_python(REFRESH, env))["ok"]  # CRL #1: none of the three is listed
    clients = {name: make_client(pki.ca, jids=[f"{name}@localhost"]) for name in ("alice", "bob", "carol")}
    server = Managed(env, "runc2s")
    try:
        server.wait_for(f"runc2s ready: 127.0.0.1:{port}\n")
        held = {name: login(port, client_context(tmp_path, cert)) for name, cert in clients.items()}
        try:
            listed = [clients["alice"].cert.serial_number, clients["bob"].cert.serial_number]
            crl_file.write_bytes(make_crl(pki.ca, [*OTHERS, *listed], number=2))
            outcome = json.loads(run_python(REFRESH, env))  # another process, as the Celery worker
            assert outcome["ok"] and "2 new" in outcome["message"], outcome
            for name in ("alice", "bob"):
                end = held[name].wait_for_end()
                assert end.condition == "reset", end.raw[-500:]  # RFC 6120 §13.7.2.3
                assert end.text == "certificate revoked (listed in the CRL of Scale CA)", end.raw[-500:]
            carol = held["carol"]
            carol.sock.sendall(b"<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
            assert b"p1" in carol.read_until(b"</iq>", b"/>")  # same CA, not listed: lives on
            with pytest.raises(Refused):
                login(port, client_context(tmp_path, clients["alice"]))
        finally:
            for session in held.values():
                session.close()
    finally:
        output = stop(server)
    assert "Traceback" not in output


def test_the_admin_shows_which_serial_ended_a_session(ca, staff_client):
    alice, alice_cert = ca.session("alice")
    ca.publish([*OTHERS[:10], alice_cert.cert.serial_number])
    listing = staff_client.get("/admin/transport/sessiontermination/")
    expected = f"session {alice.session_id} (CA #{ca.row.pk} serial {alice.cert_serial})"
    assert listing.status_code == 200 and expected.encode() in listing.content
