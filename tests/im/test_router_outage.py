"""The router while the database is unavailable (issue 16 point 4): a stanza handed to it waits for the
database instead of being lost (XEP-0160: what reaches the router is stored or delivered), for a bounded time.
"""

from __future__ import annotations

import pytest
from django.db import OperationalError

from transport.im import router as router_module
from transport.im.router import routed_when_possible

pytestmark = pytest.mark.django_db  # between tries the router closes broken connections


@pytest.fixture(autouse=True)
def _outage_log_reset():
    """The outage log is the process's: each test starts and ends with the database answering."""
    router_module.database_outage.down = False
    yield
    router_module.database_outage.down = False


class FlakyRouter:
    """A router whose database fails ``failures`` times, then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def routed(self, message: dict) -> list:
        self.calls += 1
        if self.calls <= self.failures:
            raise OperationalError("connection refused")
        return [("specific.x!y", message)]


def test_a_stanza_waits_for_the_database_and_is_routed_once_it_answers(caplog):
    router = FlakyRouter(failures=2)
    message = {"type": "xmpp.route", "xml": "<message/>", "step": "stanza"}
    assert routed_when_possible(router, message, retry_seconds=30) == [("specific.x!y", message)]
    assert router.calls == 3
    assert caplog.text.count("database (router) unavailable") == 1  # once per outage, not per retry
    assert "database (router) answers again" in caplog.text


def test_past_the_bound_the_failure_is_raised_to_be_logged():
    with pytest.raises(OperationalError):
        routed_when_possible(FlakyRouter(failures=10**6), {"type": "xmpp.route", "xml": ""}, retry_seconds=0)
