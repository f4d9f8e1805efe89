"""The session registry: every live XMPP session of every process, and durable commands to end sessions.

Specs: RFC 6120 §7 (a session is a bound full JID), §4.9.3.16 and §13.7.2.3 (``reset`` when the certificate
that authenticated a stream is revoked), DESIGN §5 and §6 (live sessions listed and ended from the admin).

``LiveSession`` rows are written by the process that holds the session (``transport.sessions.registry``) and
kept alive by
that process's heartbeat (``lease_expires_at``); a process that dies leaves rows whose lease runs out, and any
process purges them. ``SessionTermination`` rows are commands: every listener process polls the new ones and
closes the matching sessions it holds (``transport.sessions.registry.TerminationWatcher``).
"""

from __future__ import annotations

import uuid

from django.db import models


class LiveSession(models.Model):
    """One bound session (full JID) held by one process; the router will add presence and priority."""

    class Transport(models.TextChoices):
        TCP = "tcp", "TCP (STARTTLS)"
        TLS = "tls", "TCP (direct TLS)"
        WEBSOCKET = "websocket", "WebSocket"
        BOSH = "bosh", "BOSH"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    full_jid = models.CharField(max_length=3071)
    bare_jid = models.CharField(max_length=2047, db_index=True)
    resource = models.CharField(max_length=1023)
    transport = models.CharField(max_length=16, choices=Transport.choices)
    peer = models.CharField(max_length=255, blank=True, help_text="Client address host:port.")
    cert_fingerprint = models.CharField(max_length=64, blank=True, db_index=True, help_text="SHA-256, hex.")
    cert_serial = models.CharField(max_length=64, blank=True, help_text="Lower hex, no leading zeros.")
    issuer_ca_id = models.BigIntegerField(null=True, blank=True, help_text="CertificateAuthority pk.")
    cert_not_after = models.DateTimeField(null=True, blank=True)
    channel_name = models.CharField(max_length=255, blank=True, help_text="Channels name, if any.")
    process_id = models.CharField(max_length=255, db_index=True, help_text="host:pid:start of the holder.")
    started_at = models.DateTimeField()
    lease_expires_at = models.DateTimeField(db_index=True)
    priority = models.SmallIntegerField(null=True, blank=True)  # RFC 6121 §4.7.2.3, for the router
    presence = models.CharField(max_length=16, blank=True)  # RFC 6121 §4.7.2.1 show, for the router

    class Meta:
        ordering = ["bare_jid", "resource"]
        indexes = [models.Index(fields=["issuer_ca_id", "cert_serial"], name="livesession_issuer_serial")]

    def __str__(self) -> str:
        return self.full_jid


class SessionTermination(models.Model):
    """A command to end sessions, matched by every listener process against the sessions it holds."""

    class Target(models.TextChoices):
        FINGERPRINT = "fingerprint", "certificate fingerprint"
        ISSUER_SERIAL = "issuer_serial", "issuer and serial"
        BARE_JID = "bare_jid", "account (bare JID)"
        SESSION = "session", "one session"

    created_at = models.DateTimeField(db_index=True)
    target = models.CharField(max_length=16, choices=Target.choices)
    fingerprint = models.CharField(max_length=64, blank=True)
    issuer_ca_id = models.BigIntegerField(null=True, blank=True)
    serial = models.CharField(max_length=64, blank=True)
    bare_jid = models.CharField(max_length=2047, blank=True)
    session_id = models.UUIDField(null=True, blank=True)
    condition = models.CharField(max_length=32, default="reset", help_text="RFC 6120 §4.9.3 stream error.")
    text = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.get_target_display()}: {self.text or self.condition}"
