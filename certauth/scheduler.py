"""The periodic jobs inside ``runxmpp`` when there is no Redis (DESIGN §1, embedded mode).

With Redis, ``celery -A xmppauth worker -B`` runs ``settings.CELERY_BEAT_SCHEDULE``; without it nothing
would, so the embedded server runs the same jobs itself: every ``TICK_SECONDS`` the due CRL sources are
fetched (``certauth.tasks.refresh_due_crl_sources``), and hourly our own CRLs are re-signed when due
(``republish_our_crls``), old auth events are purged (``purge_auth_events``) and the admins are told of
certificates about to expire (``warn_expiring_certificates``). The jobs block on the
network and the database, so each tick runs in the reactor's thread pool; the next tick waits until the
previous one is done.
"""

from __future__ import annotations

import logging
import time

from twisted.internet import threads
from twisted.internet.task import LoopingCall

from certauth import tasks
from xmppauth.dbconn import with_fresh_connections

logger = logging.getLogger(__name__)

TICK_SECONDS = 60.0
REPUBLISH_SECONDS = 3600.0


class InProcessJobs:
    """The state of the in-process schedule: when our CRLs were last looked at."""

    def __init__(self) -> None:
        self.last_republish: float | None = None

    def run_due_jobs(self) -> None:
        """One tick, in a worker thread: due CRL sources, and hourly our CRLs."""
        with_fresh_connections(self._tick)

    def _tick(self) -> None:
        refreshed = tasks.refresh_due_crl_sources()
        if refreshed:
            logger.info("refreshed %d CRL source(s)", refreshed)
        if self.last_republish is None or time.monotonic() - self.last_republish >= REPUBLISH_SECONDS:
            self.last_republish = time.monotonic()
            tasks.republish_our_crls()
            tasks.purge_auth_events()  # [xmppauth] auth_event_retention_days, hourly as with celery beat
            tasks.warn_expiring_certificates()  # [xmppauth] certificate_expiry_warning_days


def start_in_process_jobs(reactor, interval: float = TICK_SECONDS) -> LoopingCall:
    """Run the jobs every ``interval`` seconds on ``reactor`` (first tick now); returns the LoopingCall."""
    jobs = InProcessJobs()

    def tick():
        deferred = threads.deferToThreadPool(reactor, reactor.getThreadPool(), jobs.run_due_jobs)
        deferred.addErrback(lambda failure: logger.error("periodic jobs failed: %s", failure.getTraceback()))
        return deferred

    loop = LoopingCall(tick)
    loop.clock = reactor
    loop.start(interval, now=True)
    logger.info("periodic jobs run in this process every %g s (no REDIS_URL)", interval)
    return loop
