"""The live sessions of this process, and the watcher that ends them on command from any process.

Specs: RFC 6120 §4.9.3.16 and §13.7.2.3 (a revoked or expired certificate ends its stream with ``reset``),
DESIGN §5 (within a second, whichever process holds the session).

Any transport (TCP, WebSocket, BOSH) binds a session with one call, :func:`bind_session`, on the reactor
thread (under daphne that is also the asyncio loop's thread), when the core asks (``BindRequest``)::

    handle = live.bind_session(live.sessions, full_jid=..., transport="websocket", ..., check=...,
                               close=close, admit=admit, bridge=bridge)
    ...
    handle.unregister()        # when the session ends, however it ends (idempotent)

No window between a revocation and a bound session (issue 11 point 6): the session enters the registry
first, on the reactor thread, so that every termination command applied from then on matches it; then one
worker thread re-checks its credentials (``check``: the certificate's expiry and revocation, the account)
and only then inserts its row. A revocation committed before that read is refused there; one committed
after it is a command the watcher applies to the registered session. ``admit()`` (the adapter sends the bind
result) runs only when the check passed and nothing ended the session meanwhile; otherwise the session ends
with the refusal's stream error (``close``) and never sees a bind result, however long the client waited
between SASL success and bind.

``close(condition, text)`` is called on the reactor thread when the session must end: the adapter sends the
stream error (``core.close_with_error(condition, text)``) and closes its transport. The registry writes the
``LiveSession`` row in a worker thread (never blocking the reactor), closes the session at its certificate's
``notAfter`` ("certificate expired"), and deletes the row at ``unregister``.

Each listener process runs :func:`start_session_services`: a :class:`TerminationWatcher` that polls the
``SessionTermination`` table every :data:`POLL_INTERVAL` seconds (one indexed query) and a heartbeat that
renews this process's leases. A command is also applied to sessions registered up to :data:`RECENT` seconds
after it, so a session whose login raced with a revocation is still ended. A CRL's commands name sessions
by id (``store.terminate_listed``: found by joining the session rows to the CRL's serials) and are applied
with a dict lookup; a session whose row was not yet inserted when that join ran is covered by the
revocation re-check at bind, not by this replay.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.utils import timezone
from twisted.internet.task import LoopingCall

from transport.sessions import terminations as store
from transport.sessions.models import SessionTermination
from transport.sessions.terminations import RESET, TEXT_EXPIRED, SessionFacts, Termination
from transport.workers import defer_to_database, defer_to_worker
from xmppauth import outage
from xmppauth.dbconn import with_fresh_connections
from xmppauth.outage import DATABASE_UNAVAILABLE, OutageLog

logger = logging.getLogger(__name__)
# The watcher polls five times a second: a database outage is one line when it starts, one when it ends.
database = OutageLog(logger, "database (session registry: termination watcher, leases)")


def _db_failed(what: str) -> Callable[[Any], None]:
    """An errback: a database outage goes to :data:`database`, anything else is logged with its traceback."""

    def errback(failure: Any) -> None:
        if failure.check(*DATABASE_UNAVAILABLE):
            database.failed(failure.value)
        else:
            logger.error("%s failed: %s", what, failure.getTraceback())

    return errback


POLL_INTERVAL = 0.2  # seconds between two looks at the SessionTermination table
HEARTBEAT_INTERVAL = 5.0  # seconds between two lease renewals at most (the lease is store.lease())
RECENT = timedelta(seconds=10)  # commands also apply to sessions registered this long after them

Closer = Callable[[str, str], None]  # close(condition, text), called on the reactor thread


_in_db_thread = with_fresh_connections


@dataclass(frozen=True)
class Admission:
    """What the bind's worker thread found: ``refusal`` (what ``check`` returned; None: the session may bind)
    and ``older`` (what ``after_save`` returned after the row's insert; None when it did not run)."""

    refusal: Any = None
    older: Any = None


def _admit(
    facts: SessionFacts,
    persist: bool,
    check: Callable[[], Any] | None,
    after_save: Callable[[SessionFacts], Any] | None,
) -> Admission:
    """In the worker thread: the check, then (if it passed) the row and ``after_save``."""
    refusal = check() if check is not None else None
    if refusal is not None or not persist:
        return Admission(refusal)
    store.save_session(facts)
    return Admission(None, after_save(facts) if after_save is not None else None)


def _default_reactor() -> Any:
    from twisted.internet import reactor  # installed by the command before this runs

    return reactor


@dataclass
class SessionHandle:
    """What ``register`` returns: the session's facts and its way out."""

    registry: LiveSessions
    facts: SessionFacts
    close: Closer
    expiry: Any = None  # the reactor call that ends the session at notAfter
    admitted: Any = None  # the Deferred of the worker thread's Admission (None: no thread hop)
    saved: Any = None  # that Deferred when a row may be inserted (the delete waits for it)
    closed: bool = False
    # A transport.im.bridge.SessionBridge deletes the row itself, first thing when the session ends, so that
    # nothing more is routed to it; the registry then leaves the row alone (one DELETE per logout, not two).
    row_deleted_by_bridge: bool = False

    @property
    def session_id(self) -> uuid.UUID:
        return self.facts.session_id

    def end(self, condition: str, text: str) -> None:
        """Ask the adapter to close the session (once)."""
        if self.closed:
            return
        self.closed = True
        logger.info("ending session %s (%s): %s %s", self.facts.full_jid, self.facts.peer, condition, text)
        try:
            self.close(condition, text)
        except Exception:
            logger.exception("closing session %s failed", self.facts.full_jid)

    def unregister(self) -> None:
        self.registry.unregister(self.session_id)


@dataclass
class LiveSessions:
    """This process's bound sessions by id. Touch it only from the reactor thread.

    Rows are written only once ``persist`` is set, which :func:`start_session_services` does: a row needs a
    heartbeat to stay, and a process without the services (a test's listener) keeps its sessions in memory.
    """

    reactor: Any = None
    persist: bool = False
    handles: dict[uuid.UUID, SessionHandle] = field(default_factory=dict)
    recent: list[Termination] = field(default_factory=list)

    def _reactor(self) -> Any:
        if self.reactor is None:
            self.reactor = _default_reactor()
        return self.reactor

    def _in_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        reactor = self._reactor()
        deferred = defer_to_database(reactor, function, *args)
        deferred.addErrback(lambda failure: logger.error("session registry: %s", failure.getTraceback()))
        return deferred

    def register(
        self,
        facts: SessionFacts,
        close: Closer,
        *,
        check: Callable[[], Any] | None = None,
        after_save: Callable[[SessionFacts], Any] | None = None,
    ) -> SessionHandle:
        """Add a session (see the module docstring); returns its handle.

        One worker thread (one hop per bind, not two) runs ``check()``, then, if it returned None and rows
        are kept, the row's insert and ``after_save(facts)``; ``handle.admitted`` fires with the
        :class:`Admission` (None if the thread failed).
        """
        handle = SessionHandle(self, facts, close)
        self.handles[facts.session_id] = handle
        reactor = self._reactor()
        if facts.cert_not_after is not None:
            delay = max(0.0, (facts.cert_not_after - timezone.now()).total_seconds())
            handle.expiry = reactor.callLater(delay, handle.end, RESET, TEXT_EXPIRED)
        if self.persist or check is not None:
            handle.admitted = self._in_thread(_admit, facts, self.persist, check, after_save)
            handle.saved = handle.admitted if self.persist else None
        for command in self.recent:
            if store.matches(command, facts):
                reactor.callLater(0, handle.end, command.condition, command.text)
                break
        return handle

    def unregister(self, session_id: uuid.UUID) -> None:
        handle = self.handles.pop(session_id, None)
        if handle is None:
            return
        if handle.expiry is not None and handle.expiry.active():
            handle.expiry.cancel()
        if self.persist and handle.saved is not None and not handle.row_deleted_by_bridge:
            handle.saved.addBoth(lambda _: self._in_thread(store.delete_session, session_id))

    def apply(self, command: Termination) -> int:
        """End the sessions ``command`` matches; returns how many.

        A command for one session (what a CRL makes, ``store.terminate_listed``) is a dict lookup: the
        reactor's work per CRL grows with the sessions it ends, not with the sessions held nor the CRL.
        """
        if command.target == SessionTermination.Target.SESSION:
            handle = self.handles.get(command.session_id) if command.session_id is not None else None
            if handle is None or handle.closed:
                return 0
            handle.end(command.condition, command.text)
            return 1
        self.recent.append(command)
        ended = 0
        for handle in list(self.handles.values()):
            if store.matches(command, handle.facts) and not handle.closed:
                handle.end(command.condition, command.text)
                ended += 1
        return ended

    def forget_older_than(self, horizon: Any) -> None:
        self.recent = [command for command in self.recent if command.created_at >= horizon]

    def __len__(self) -> int:
        return len(self.handles)


sessions = LiveSessions()  # the process's registry: every transport registers here


BIND_CHECK_FAILED = "internal-server-error"  # RFC 6120 §4.9.3.8: the check could not run; fail closed


def bind_session(
    registry: LiveSessions,
    *,
    full_jid: str,
    transport: str,
    peer: str,
    cert_fingerprint: str,
    cert_facts: Any,
    issuer_ca_id: int | None,
    check: Callable[[str], Any],
    close: Closer,
    admit: Callable[[], None],
    bridge: Any = None,
) -> SessionHandle:
    """What every transport does when its client asks to bind ``full_jid`` (see the module docstring).

    Registers the session (its certificate's serial, issuer and notAfter let revocation commands and expiry
    end it, DESIGN §5), runs ``check(full_jid)`` in the worker thread (None, or a refusal with ``condition``
    and ``reason``: ``CertificateAuthenticator.refusal_at_bind``), then on the reactor thread either ends the
    session with the refusal (``close``) or, given one, starts the routing bridge
    (``transport.im.bridge.SessionBridge``, whose conflict lookup rides on the row's insert) and calls
    ``admit()``, where the adapter sends the bind result.
    """
    handle = registry.register(
        SessionFacts(
            full_jid=full_jid,
            transport=transport,
            peer=peer,
            cert_fingerprint=cert_fingerprint,
            cert_serial=getattr(cert_facts, "serial", "") or "",
            issuer_ca_id=issuer_ca_id,
            cert_not_after=getattr(cert_facts, "not_after", None),
            channel_name=bridge.channel_name if bridge is not None else "",
        ),
        close,
        check=lambda: check(full_jid),
        after_save=bridge.older_than_me if bridge is not None else None,
    )

    def decide(admission: Admission | None) -> Admission | None:
        if handle.closed or registry.handles.get(handle.session_id) is not handle:
            return admission  # ended meanwhile (a termination command, expiry, the client went away)
        if admission is None:
            handle.end(BIND_CHECK_FAILED, "")
            handle.unregister()
        elif admission.refusal is not None:
            handle.end(admission.refusal.condition, admission.refusal.reason)
            handle.unregister()
        else:
            if bridge is not None:
                bridge.start(handle, admission.older)
            admit()
        return admission

    handle.admitted.addCallback(decide)
    return handle


class TerminationWatcher:
    """Polls ``SessionTermination`` and applies new commands to ``registry`` (see the module docstring)."""

    def __init__(self, registry: LiveSessions, reactor: Any, interval: float = POLL_INTERVAL) -> None:
        self.registry = registry
        self.reactor = reactor
        self.interval = interval
        self.last_id = 0
        self.started_at = timezone.now()
        self.applied: dict[int, Any] = {}  # command id -> created_at, within RECENT
        self.loop: LoopingCall | None = None

    def start(self) -> None:
        """Skip the commands that exist already (call at start-up, before the reactor runs), then poll."""
        self.last_id = _in_db_thread(store.last_termination_id)
        self.started_at = timezone.now()
        self.loop = LoopingCall(self.poll)
        self.loop.clock = self.reactor
        self.loop.start(self.interval, now=False)
        logger.info("session termination watcher polls every %g s", self.interval)

    def stop(self) -> None:
        if self.loop is not None and self.loop.running:
            self.loop.stop()

    def poll(self) -> Any:
        """One look at the table, in a worker thread; the commands are applied on the reactor thread."""
        horizon = max(self.started_at, timezone.now() - RECENT)
        deferred = defer_to_worker(
            self.reactor,
            _in_db_thread,
            store.terminations_since,
            self.last_id,
            horizon,
        )
        deferred.addCallback(self.apply, horizon)
        deferred.addErrback(_db_failed("termination poll"))
        return deferred

    def apply(self, commands: list[Termination], horizon: Any) -> None:
        database.ok()
        for command in commands:
            self.last_id = max(self.last_id, command.id)
            if command.id in self.applied:
                continue
            self.applied[command.id] = command.created_at
            ended = self.registry.apply(command)
            logger.info(
                "termination #%d (%s %s) ended %d local session(s)",
                command.id,
                command.target,
                command.text,
                ended,
            )
        self.applied = {key: when for key, when in self.applied.items() if when >= horizon}
        self.registry.forget_older_than(timezone.now() - RECENT)


@dataclass
class SessionServices:
    watcher: TerminationWatcher
    heartbeat: LoopingCall


_services: SessionServices | None = None


def start_session_services(reactor: Any, registry: LiveSessions | None = None) -> SessionServices:
    """Start the watcher and the heartbeat for this process (once; runc2s, runxmpp and daphne call it)."""
    global _services
    if _services is not None:
        return _services
    registry = registry or sessions
    registry.reactor = reactor
    registry.persist = True
    watcher = TerminationWatcher(registry, reactor)
    watcher.start()

    seen = {"outages": outage.outages["database"]}

    def beat() -> Any:
        deferred = defer_to_worker(reactor, _in_db_thread, store.heartbeat)

        def beaten(_: Any) -> Any:
            if outage.outages["database"] == seen["outages"]:
                return None
            # The first beat after a database outage (seen by any part of this process): our rows may have
            # expired and been purged meanwhile, and presence sent then was not recorded.
            seen["outages"] = outage.outages["database"]
            held = _held_sessions(registry)
            restored = defer_to_worker(reactor, _in_db_thread, store.restore_sessions, held)

            def not_restored(failure: Any) -> None:
                seen["outages"] = -1  # the next beat tries again
                _db_failed("restoring the session rows")(failure)

            def done(count: int) -> None:
                logger.warning("database back: %d session row(s) of this process restored", count)

            restored.addCallbacks(done, not_restored)
            return restored

        deferred.addCallbacks(beaten, _db_failed("session heartbeat"))
        return deferred

    heartbeat = LoopingCall(beat)
    heartbeat.clock = reactor
    # Renew well within the lease ([xmppauth] session_lease_seconds): three beats per lease at least.
    heartbeat.start(min(HEARTBEAT_INTERVAL, store.lease().total_seconds() / 3), now=True)
    reactor.addSystemEventTrigger("before", "shutdown", _forget_this_process, reactor)
    from transport.im import liveness  # imports the router, which needs the apps loaded

    liveness.start(reactor, registry)  # with Redis: no stanza lost to a dead listener (issue 16 point 1)
    _services = SessionServices(watcher, heartbeat)
    return _services


def _held_sessions(registry: LiveSessions) -> list[tuple[SessionFacts, int | None, str]]:
    """The admitted sessions of ``registry`` with their presence (from their routing bridge, if any), for
    ``store.restore_sessions``; on the reactor thread."""
    from transport.im import local  # here: the IM router imports this module
    from transport.im.router import presence_priority, presence_show

    held = []
    for handle in list(registry.handles.values()):
        if handle.closed or handle.saved is None or not handle.saved.called:
            continue  # not admitted yet: its own insert is on its way
        bridge = local.by_channel(handle.facts.channel_name) if handle.facts.channel_name else None
        presence = getattr(bridge, "presence", None)
        if presence is None:
            held.append((handle.facts, None, ""))
        else:
            held.append((handle.facts, presence_priority(presence), presence_show(presence)))
    return held


def start_if_installed(reactor: Any) -> SessionServices | None:
    """For daphne, which may serve a database that is not migrated: start the services when the registry's
    tables exist, else log why not and return None."""
    from django.db import connection

    try:
        tables = set(connection.introspection.table_names())
    finally:
        connection.close()
    if "transport_sessiontermination" not in tables:
        logger.warning("session registry tables missing (run migrate): revocations end no session here")
        return None
    return start_session_services(reactor)


def _forget_this_process(reactor: Any) -> Any:
    """At shutdown: this process's rows go now rather than when their lease runs out (in a thread; the
    reactor waits for the Deferred before it stops the pool)."""
    deferred = defer_to_worker(reactor, _in_db_thread, store.forget_process)
    deferred.addErrback(
        lambda failure: logger.error("could not delete this process's rows: %s", failure.value)
    )
    return deferred
