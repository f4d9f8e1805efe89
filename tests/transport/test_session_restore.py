"""After a database outage a listener puts its sessions' rows back (issue 16 point 4): a row that expired and
was purged by another process is inserted again, and every row gets the presence its session sent meanwhile
(RFC 6121 §4.7.2: the router reads availability and priority from the registry). End to end, with PostgreSQL
stopped under a listener: ``tests/faults/test_postgres_outage.py``."""

from __future__ import annotations

import pytest

from transport.sessions import terminations as store
from transport.sessions.models import LiveSession
from transport.sessions.terminations import SessionFacts

pytestmark = pytest.mark.django_db


def test_a_purged_row_is_inserted_again_and_a_surviving_one_gets_the_presence_sent_meanwhile():
    purged = SessionFacts(full_jid="alice@localhost/a", transport="tcp", channel_name="specific.x!a")
    kept = SessionFacts(full_jid="bob@localhost/b", transport="tcp", channel_name="specific.x!b")
    store.save_session(kept)
    assert store.restore_sessions([(purged, 5, "away"), (kept, None, "")]) == 2
    rows = {row.full_jid: (row.priority, row.presence) for row in LiveSession.objects.all()}
    assert rows == {"alice@localhost/a": (5, "away"), "bob@localhost/b": (None, "")}
    assert LiveSession.objects.get(full_jid="alice@localhost/a").process_id == store.process_id()
