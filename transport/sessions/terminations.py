"""The session registry's database side: session rows with leases, termination commands, and their matching.

Specs: RFC 6120 §4.9.3.16 and §13.7.2.3 (a stream whose certificate is revoked ends with ``reset``), DESIGN §5
(revoked certificates end live sessions within a second, in whichever process holds them).

Everything here is synchronous Django code: adapters call it from a worker thread
(``transport.sessions.registry`` does),
never from the reactor thread. ``matches`` is pure and decides which sessions a command ends.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from transport.sessions.models import LiveSession, SessionTermination
from xmppauth import fastsql

logger = logging.getLogger(__name__)

RESET = "reset"  # RFC 6120 §4.9.3.16: the credentials of the stream are no longer valid
LEASE = timedelta(seconds=30)  # default: a row whose process stops heartbeating is purged this long after
TERMINATION_KEEP = timedelta(days=1)  # how long commands stay in the table (the admin shows them)
TEXT_EXPIRED = "certificate expired"
TEXT_OPERATOR = "ended by the operator"
TEXT_ACCOUNT_DISABLED = "account disabled"

_PROCESS_ID = f"{socket.gethostname()}:{os.getpid()}:{int(time.time())}"


def lease() -> timedelta:
    """``[xmppauth] session_lease_seconds`` of the config (default :data:`LEASE`)."""
    from django.conf import settings

    options = getattr(getattr(settings, "XMPP", None), "options", None)
    seconds = getattr(options, "session_lease_seconds", None)
    return timedelta(seconds=seconds) if seconds else LEASE


def process_id() -> str:
    """This process as ``host:pid:start`` (the start time keeps a reused pid apart)."""
    return _PROCESS_ID


@dataclass(frozen=True)
class SessionFacts:
    """What the registry knows of one live session; ``session_id`` is its ``LiveSession`` primary key."""

    full_jid: str
    transport: str
    peer: str = ""
    cert_fingerprint: str = ""
    cert_serial: str = ""
    issuer_ca_id: int | None = None
    cert_not_after: datetime | None = None
    channel_name: str = ""
    session_id: uuid.UUID = field(default_factory=uuid.uuid4)
    started_at: datetime = field(default_factory=timezone.now)

    @property
    def bare_jid(self) -> str:
        return self.full_jid.split("/", 1)[0]

    @property
    def resource(self) -> str:
        return self.full_jid.split("/", 1)[1] if "/" in self.full_jid else ""


@dataclass(frozen=True)
class Termination:
    """A ``SessionTermination`` row as plain values (what the watcher matches on the reactor thread)."""

    id: int
    created_at: datetime
    target: str
    condition: str
    text: str
    fingerprint: str = ""
    issuer_ca_id: int | None = None
    serial: str = ""
    bare_jid: str = ""
    session_id: uuid.UUID | None = None


def matches(command: Termination, session: SessionFacts) -> bool:
    """Whether ``command`` ends ``session`` (an empty fingerprint or serial never matches)."""
    target = SessionTermination.Target
    if command.target == target.FINGERPRINT:
        return bool(command.fingerprint) and command.fingerprint == session.cert_fingerprint
    if command.target == target.ISSUER_SERIAL:
        return (
            bool(command.serial)
            and command.issuer_ca_id is not None
            and (command.issuer_ca_id, command.serial) == (session.issuer_ca_id, session.cert_serial)
        )
    if command.target == target.BARE_JID:
        return bool(command.bare_jid) and command.bare_jid == session.bare_jid.lower()
    if command.target == target.SESSION:
        return command.session_id == session.session_id
    return False


# --- session rows --------------------------------------------------------------------------------------


def save_session(session: SessionFacts, process: str | None = None) -> None:
    """Insert (or refresh) the row of a session this process holds."""
    fields = {
        "full_jid": session.full_jid,
        "bare_jid": session.bare_jid.lower(),
        "resource": session.resource,
        "transport": session.transport,
        "peer": session.peer,
        "cert_fingerprint": session.cert_fingerprint,
        "cert_serial": session.cert_serial,
        "issuer_ca_id": session.issuer_ca_id,
        "cert_not_after": session.cert_not_after,
        "channel_name": session.channel_name,
        "process_id": process or process_id(),
        "started_at": session.started_at,
        "lease_expires_at": timezone.now() + lease(),
    }
    # A new session's id is new: try the INSERT alone (lean: it runs at every login, xmppauth.fastsql).
    if not fastsql.insert_new(LiveSession, id=session.session_id, **fields):
        LiveSession.objects.filter(id=session.session_id).update(**fields)


def restore_sessions(sessions: list[tuple[SessionFacts, int | None, str]]) -> int:
    """After a database outage: the rows of the sessions this process still holds, each with its presence
    (priority and show, '' when unavailable). A row the outage let expire, and that another process purged,
    is inserted again; one that survived gets its lease and the presence sent meanwhile. Returns how many."""
    for facts, priority, presence in sessions:
        save_session(facts)
        LiveSession.objects.filter(id=facts.session_id).update(priority=priority, presence=presence)
    return len(sessions)


def delete_session(session_id: uuid.UUID) -> None:
    fastsql.delete_rows(LiveSession, "id", session_id)


def forget_process(process: str | None = None) -> int:
    """Delete the rows of a process that stops (its sessions end with it)."""
    deleted, _ = LiveSession.objects.filter(process_id=process or process_id()).delete()
    return deleted


def heartbeat(process: str | None = None) -> int:
    """Extend the leases of this process's sessions; purge expired rows and old commands. Returns purged."""
    now = timezone.now()
    LiveSession.objects.filter(process_id=process or process_id()).update(lease_expires_at=now + lease())
    purged, _ = LiveSession.objects.filter(lease_expires_at__lt=now).delete()
    if purged:
        logger.info("purged %d live session row(s) whose process stopped renewing its lease", purged)
    SessionTermination.objects.filter(created_at__lt=now - TERMINATION_KEEP).delete()
    return purged


# --- termination commands ------------------------------------------------------------------------------


def _command(target: str, text: str, condition: str = RESET, **fields: object) -> SessionTermination:
    row = SessionTermination.objects.create(
        created_at=timezone.now(), target=target, condition=condition, text=text[:255], **fields
    )
    logger.info("session termination #%d requested: %s", row.pk, row)
    return row


def terminate_certificate(fingerprint: str, text: str) -> SessionTermination:
    """End every session authenticated with the certificate of this SHA-256 fingerprint (hex)."""
    return _command(SessionTermination.Target.FINGERPRINT, text, fingerprint=fingerprint.lower())


def terminate_serials(issuer_ca_id: int, serials: Iterable[str], text: str) -> list[SessionTermination]:
    """End the sessions of certificates issued by CA row ``issuer_ca_id`` with one of ``serials`` (hex).

    One command per serial, each matched by every listener against every session it holds: for a handful
    of serials only. A CRL goes through :func:`terminate_listed`.
    """
    target = SessionTermination.Target.ISSUER_SERIAL
    return [_command(target, text, issuer_ca_id=issuer_ca_id, serial=serial.lower()) for serial in serials]


def terminate_listed(
    issuer_ca_id: int, source_id: int, new_serials: Collection[str], text: str
) -> list[SessionTermination]:
    """End the live sessions whose certificate a CRL newly lists: one command per session it ends, not per
    serial (RFC 6120 §13.7.2.3; issue 11 point 7, ``bench/crl_scale.py``).

    The sessions are found with one query joining the ``LiveSession`` rows of CA ``issuer_ca_id`` to the
    ``RevokedSerial`` rows now held for CRL source ``source_id``; of those, only the serials in
    ``new_serials`` (listed by no earlier CRL of the CA) get a command, by session id. What the query returns
    grows with the CA's live sessions, never with the CRL. A session whose row is inserted after the query
    (a bind racing with the refresh) is covered by the revocation re-check at bind, which reads the same
    ``RevokedSerial`` rows after the row's insert; sessions of a process that keeps no rows are not seen.
    """
    from certauth.models import RevokedSerial  # transport's models do not depend on certauth

    listed = RevokedSerial.objects.filter(source_id=source_id, ca_id=issuer_ca_id).values("serial")
    matched = LiveSession.objects.filter(issuer_ca_id=issuer_ca_id, cert_serial__in=listed).values_list(
        "id", "cert_serial"
    )
    rows = list(matched)
    fresh = set(new_serials) if rows else set()
    now = timezone.now()
    commands = [
        SessionTermination(
            created_at=now,
            target=SessionTermination.Target.SESSION,
            condition=RESET,
            text=text[:255],
            session_id=session_id,
            issuer_ca_id=issuer_ca_id,  # for the record (the admin, the logs): the command matches by id
            serial=serial,
        )
        for session_id, serial in rows
        if serial in fresh
    ]
    SessionTermination.objects.bulk_create(commands)
    logger.info(
        "CRL source #%d of CA #%d newly lists %d serial(s): %d live session(s) to end",
        source_id,
        issuer_ca_id,
        len(new_serials),
        len(commands),
    )
    return commands


def terminate_issued_by(issuer_ca_ids: Collection[int], text: str) -> list[SessionTermination]:
    """End every live session whose certificate a CA in ``issuer_ca_ids`` issued (an intermediate its own
    issuer's CRL now revokes): one query for the sessions, one command per session, as ``terminate_listed``.
    Sessions further below (a leaf under a second intermediate) are not found here; their next bind or
    login is refused by the path check."""
    if not issuer_ca_ids:
        return []
    rows = list(
        LiveSession.objects.filter(issuer_ca_id__in=list(issuer_ca_ids)).values_list(
            "id", "issuer_ca_id", "cert_serial"
        )
    )
    now = timezone.now()
    commands = [
        SessionTermination(
            created_at=now,
            target=SessionTermination.Target.SESSION,
            condition=RESET,
            text=text[:255],
            session_id=session_id,
            issuer_ca_id=issuer_ca_id,
            serial=serial,
        )
        for session_id, issuer_ca_id, serial in rows
    ]
    SessionTermination.objects.bulk_create(commands)
    logger.info(
        "CA(s) %s revoked: %d live session(s) below them to end", sorted(issuer_ca_ids), len(commands)
    )
    return commands


def terminate_account(bare_jid: str, text: str = TEXT_ACCOUNT_DISABLED) -> SessionTermination:
    return _command(SessionTermination.Target.BARE_JID, text, bare_jid=bare_jid.lower())


def terminate_session(session_id: uuid.UUID, text: str = TEXT_OPERATOR) -> SessionTermination:
    return _command(SessionTermination.Target.SESSION, text, session_id=session_id)


def last_termination_id() -> int:
    row = SessionTermination.objects.order_by("-id").values_list("id", flat=True).first()
    return row or 0


def terminations_since(after_id: int, horizon: datetime) -> list[Termination]:
    """Commands with an id above ``after_id`` or created since ``horizon`` (one indexed query).

    The horizon catches a row whose id was taken before a higher one but committed after it (PostgreSQL
    sequences); the caller drops the ids it has applied already.
    """
    rows = SessionTermination.objects.filter(Q(id__gt=after_id) | Q(created_at__gte=horizon)).order_by("id")
    return [
        Termination(
            id=row.id,
            created_at=row.created_at,
            target=row.target,
            condition=row.condition,
            text=row.text,
            fingerprint=row.fingerprint,
            issuer_ca_id=row.issuer_ca_id,
            serial=row.serial,
            bare_jid=row.bare_jid,
            session_id=row.session_id,
        )
        for row in rows
    ]
