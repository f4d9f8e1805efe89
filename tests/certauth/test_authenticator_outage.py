"""certauth.authenticator while the database cannot be reached (issue 16 point 4; RFC 6120 §6.5.12).

A check that cannot ask the database never passes: the handshake's verdict waits for SASL time, where the
login fails with ``temporary-auth-failure`` until the database answers, then runs the whole check (and may
still refuse). The end-to-end proof, with a PostgreSQL server stopped under a listener, is
``tests/faults/test_postgres_outage.py``; here the outage is one raised ``OperationalError``.
"""

from __future__ import annotations

import pytest
from django.db import InterfaceError, OperationalError, connection

from certauth import authenticator as module
from certauth.authenticator import REASON_DEFERRED
from certauth.models import AuthEvent
from tests.certauth.crlhelpers import add_ca_row
from tests.certauth.test_authenticator import authenticator
from tests.certs import make_ca, make_client
from transport.xmpp.events import PasswordStepRequest
from xmppauth import limits

pytestmark = pytest.mark.django_db

TEMPORARY = "temporary-auth-failure"


@pytest.fixture
def ca():
    issued = make_ca("Outage CA")
    add_ca_row(issued, name="Outage CA")
    return issued


@pytest.fixture
def database_down(monkeypatch):
    """The check's database reads (trust anchors, revocation) fail while ``state["down"]``."""
    state = {"down": True, "error": OperationalError("connection refused")}

    def failing(real):
        def call(*args, **kwargs):
            if state["down"]:
                raise state["error"]
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(module, "trust_anchors", failing(module.trust_anchors))
    monkeypatch.setattr(module, "path_revocation_problem", failing(module.path_revocation_problem))
    return state


@pytest.mark.parametrize("error", [OperationalError("connection refused"), InterfaceError("closed")])
def test_database_down_at_the_handshake_defers_the_check_and_sasl_is_temporary(ca, database_down, error):
    database_down["error"] = error
    auth = authenticator()
    check = auth.check_certificate([make_client(ca, jids=["alice@localhost"]).der])
    assert check.verified and check.reason == REASON_DEFERRED  # EXTERNAL is offered, nothing decided
    events = AuthEvent.objects.count()
    result = auth.authenticate_external(check.facts, None, "localhost")
    assert result.jid is None and result.condition == TEMPORARY
    assert AuthEvent.objects.count() == events  # nothing to write it in
    assert limits.auth_failures.count(limits.address_of(auth.peer)) == 0  # our outage, not their failure


def test_database_back_at_sasl_time_runs_the_whole_check_and_logs_in(ca, database_down):
    auth = authenticator()
    check = auth.check_certificate([make_client(ca, jids=["alice@localhost"]).der])
    database_down["down"] = False
    result = auth.authenticate_external(check.facts, None, "localhost")
    assert result.jid == "alice@localhost", result.reason


def test_a_deferred_check_that_fails_at_sasl_time_is_not_authorized(database_down):
    stranger = make_client(make_ca("Unknown CA"), jids=["alice@localhost"])  # no anchor for it
    auth = authenticator()
    check = auth.check_certificate([stranger.der])
    assert check.verified and check.reason == REASON_DEFERRED
    database_down["down"] = False
    result = auth.authenticate_external(check.facts, None, "localhost")
    assert result.jid is None and result.condition == "not-authorized"


def test_a_password_step_with_the_database_down_is_temporary_auth_failure(monkeypatch):
    def down(config):
        raise OperationalError("connection refused")

    monkeypatch.setattr(module, "_hosted_domains", down)
    auth = authenticator(sasl_mechanisms=("plain",), methods=("rdbms",))
    step = PasswordStepRequest("PLAIN", b"\0alice\0secret", "localhost", True, {}, False)
    result = auth.authenticate_password(step)
    assert result.jid is None and result.condition == TEMPORARY


def test_an_auth_event_that_cannot_be_written_does_not_turn_a_refusal_into_an_error(monkeypatch):
    def down(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(module.groupcommit.fastsql, "insert_many", down)
    auth = authenticator()
    check = auth.check_certificate([make_client(make_ca("Unknown CA")).der])
    assert not check.verified and check.reason.startswith("issuer not trusted")


@pytest.mark.skipif(
    connection.vendor != "sqlite", reason="the direct path (xmppauth.fastsql._run) is SQLite's"
)
def test_a_success_whose_auth_event_sqlite_refuses_on_the_direct_path_is_temporary_auth_failure(ca):
    """No fault injected in Python: SQLite itself refuses the write (``PRAGMA query_only``) on the statement
    that ``fastsql`` runs on the open connection, and the login must not succeed without its auth event."""
    auth = authenticator()
    check = auth.check_certificate([make_client(ca, jids=["alice@localhost"]).der])
    assert check.verified
    events = AuthEvent.objects.count()
    connection.ensure_connection()
    connection.connection.execute("PRAGMA query_only = ON")
    try:
        assert not connection.execute_wrappers and not connection.queries_logged  # the direct path runs
        result = auth.authenticate_external(check.facts, None, "localhost")
    finally:
        connection.connection.execute("PRAGMA query_only = OFF")
    assert result.jid is None and result.condition == TEMPORARY, result
    assert AuthEvent.objects.count() == events
