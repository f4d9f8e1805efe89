"""Certificate authorities, certificates, revocation state, CRL sources and the auth event log.

Issuing, revoking and CRL publishing are done by ``certauth.services``; the admin, the ``pki`` command and
the jobs are thin callers of it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import models
from django.db.models.signals import pre_delete, pre_save
from django.dispatch import receiver

from accounts.changefeed import FeedQuerySet, watch


class RevocationReason(models.TextChoices):
    """RFC 5280 §5.3.1 CRLReason values (the names cryptography's ``x509.ReasonFlags`` uses)."""

    UNSPECIFIED = "unspecified", "unspecified"
    KEY_COMPROMISE = "key_compromise", "keyCompromise"
    CA_COMPROMISE = "ca_compromise", "cACompromise"
    AFFILIATION_CHANGED = "affiliation_changed", "affiliationChanged"
    SUPERSEDED = "superseded", "superseded"
    CESSATION_OF_OPERATION = "cessation_of_operation", "cessationOfOperation"
    CERTIFICATE_HOLD = "certificate_hold", "certificateHold"
    PRIVILEGE_WITHDRAWN = "privilege_withdrawn", "privilegeWithdrawn"
    AA_COMPROMISE = "aa_compromise", "aACompromise"


class CertificateAuthority(models.Model):
    """A trust anchor or an intermediate, however it reached us: one kind of object, one revocation policy.

    ``origin`` says how: ours (we hold its key, encrypted at rest), imported in the admin, read from a
    listener's ``tls.cacertfile`` (read-only in the admin; the file is the source of truth), or learnt from a
    chain a client sent (an intermediate CA, kept so its CRL and its own revocation can be checked).
    """

    class Origin(models.TextChoices):
        OURS = "ours", "ours (we hold the key)"
        IMPORTED = "imported", "imported in the admin"
        CONFIG = "config", "tls.cacertfile (config)"
        LEARNED = "learned", "intermediate learnt from a client chain"

    name = models.CharField(max_length=200, unique=True)
    origin = models.CharField(max_length=16, choices=Origin.choices, default=Origin.IMPORTED)
    config_files = models.JSONField(
        default=list, blank=True, help_text="The tls.cacertfile paths that list this CA (config CAs only)."
    )
    allowed_domains = models.JSONField(
        default=list,
        blank=True,
        help_text="Hosted domains this CA may vouch for; empty means every hosted domain.",
    )
    certificate_pem = models.TextField()
    # Our CAs only: the private key, encrypted with settings.KEY_ENCRYPTION_KEY (certauth.pki.keys).
    encrypted_private_key = models.BinaryField(null=True, blank=True, editable=False)
    trusted_for_client_auth = models.BooleanField(
        default=True, help_text="Client certificates chaining to this CA may log in."
    )
    subject = models.CharField(max_length=1000)
    fingerprint_sha256 = models.CharField(max_length=64, unique=True)
    not_before = models.DateTimeField()
    not_after = models.DateTimeField()
    # Our CAs: the CRL we publish (DER), regenerated on every revocation or hold.
    crl_number = models.PositiveBigIntegerField(default=0)
    crl_der = models.BinaryField(null=True, blank=True, editable=False)
    crl_updated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = FeedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name = "certificate authority"
        verbose_name_plural = "certificate authorities"

    def __str__(self) -> str:
        return self.name

    @property
    def is_ours(self) -> bool:
        return bool(self.encrypted_private_key)


class CertificateQuerySet(FeedQuerySet):
    def expiring(self, now: datetime, days: int) -> CertificateQuerySet:
        """Active certificates whose notAfter is within ``days`` from ``now``: the one question the dashboard
        and the warning job ask (``[xmppauth] certificate_expiry_warning_days``)."""
        return self.filter(
            status=Certificate.Status.ACTIVE, not_after__gte=now, not_after__lt=now + timedelta(days=days)
        )

    def delete(self) -> tuple[int, dict[str, int]]:
        """Refuse before deleting anything when a selected row is revoked or held (see the receiver below).

        Checked here too, not only in the pre_delete receiver, so that the refusal comes before Django's
        delete transaction, as an on_delete=PROTECT refusal does, and leaves a caller's transaction usable.
        """
        refused = self.exclude(status=Certificate.Status.ACTIVE).first()
        if refused is not None:
            raise models.ProtectedError(refused.deletion_refused_reason(), {refused})
        return super().delete()

    def update(self, **kwargs: object) -> int:
        """A revoked row stays revoked here too (``update`` and ``bulk_update`` bypass ``save``)."""
        if "status" in kwargs and kwargs["status"] != Certificate.Status.REVOKED:
            revoked = self.filter(status=Certificate.Status.REVOKED).first()
            if revoked is not None:
                raise models.ProtectedError(revoked.unrevoking_refused_reason(), {revoked})
        return super().update(**kwargs)


class Certificate(models.Model):
    """A client (or server) certificate we issued or imported."""

    class Status(models.TextChoices):
        ACTIVE = "active", "active"
        ON_HOLD = "on_hold", "on hold"
        REVOKED = "revoked", "revoked"

    class Source(models.TextChoices):
        ISSUED = "issued", "issued by us"
        IMPORTED = "imported", "imported"
        USER = "user", "added by the user (XEP-0257)"

    serial = models.CharField(max_length=64, help_text="Hexadecimal, lower case.")
    issuer = models.ForeignKey(
        CertificateAuthority, null=True, blank=True, on_delete=models.PROTECT, related_name="certificates"
    )
    issuer_name = models.CharField(max_length=1000)
    fingerprint_sha256 = models.CharField(max_length=64, unique=True)
    subject = models.CharField(max_length=1000)
    common_name = models.CharField(max_length=255, blank=True)
    xmpp_addrs = models.JSONField(default=list, blank=True)
    dns_names = models.JSONField(default=list, blank=True)
    not_before = models.DateTimeField()
    not_after = models.DateTimeField()
    account = models.ForeignKey(
        "accounts.Account", null=True, blank=True, on_delete=models.SET_NULL, related_name="certificates"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revocation_reason = models.CharField(max_length=32, choices=RevocationReason.choices, blank=True)
    source = models.CharField(max_length=16, choices=Source.choices)
    pem = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    expiry_warned_at = models.DateTimeField(
        null=True, blank=True, help_text="When the admins were last told that it expires soon."
    )
    # XEP-0257 §2.1: the name the user gave it (unique per account), and whether a client logged in with it
    # may manage the account's certificates.
    label = models.CharField("name", max_length=200, blank=True)
    no_cert_management = models.BooleanField(
        "may not manage certificates",
        default=False,
        help_text="A client logged in with this certificate may list, not add, disable or revoke (XEP-0257).",
    )

    objects = CertificateQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["issuer", "serial"], name="certificate_unique_issuer_serial"),
            models.UniqueConstraint(
                fields=["account", "label"],
                condition=~models.Q(label=""),
                name="certificate_unique_account_label",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.subject} ({self.serial})"

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        # Before Django's delete transaction, as for the QuerySet; the stored row counts, not a stale copy.
        stored = type(self).objects.filter(pk=self.pk).exclude(status=self.Status.ACTIVE).first()
        refused = self if self.deletion_refused_reason() is not None else stored
        if refused is not None:
            raise models.ProtectedError(refused.deletion_refused_reason(), {refused})
        return super().delete(*args, **kwargs)

    def unrevoking_refused_reason(self) -> str:
        return f"certificate {self.serial} ({self.subject}) is revoked: revocation cannot be undone"

    def deletion_refused_reason(self) -> str | None:
        """Why this row may not be deleted, or None: revoked and held rows are our CRL's only record.

        RFC 5280 §3.3: a revoked certificate stays on the CRL until after it expires; ``publish_crl`` builds
        the CRL from these rows, so deleting one would un-revoke the certificate. The admin, the ORM's
        delete paths (instance, QuerySet, cascades) and saves all consult this rule.
        """
        if self.status == self.Status.ACTIVE:
            return None
        return (
            f"certificate {self.serial} ({self.subject}) is {self.get_status_display()}: its row keeps the "
            "serial in our CRL, so it cannot be deleted"
        )


class CrlSource(models.Model):
    """Where a CA's CRL comes from: a distribution point, an operator URL, or a ``tls.crl_files`` file."""

    class Kind(models.TextChoices):
        DISTRIBUTION_POINT = "distribution_point", "distribution point named in a certificate"
        OPERATOR_URL = "operator_url", "URL added by the operator"
        FILE = "file", "tls.crl_files"

    class State(models.TextChoices):
        NEVER = "never", "not fetched yet"
        OK = "ok", "ok"
        FAILING = "failing", "failing (last good CRL in force)"
        STALE = "stale", "stale (past nextUpdate and grace)"

    ca = models.ForeignKey(CertificateAuthority, on_delete=models.CASCADE, related_name="crl_sources")
    kind = models.CharField(max_length=24, choices=Kind.choices)
    location = models.CharField(max_length=1000, help_text="http(s) URL or file path.")
    fail_open = models.BooleanField(
        default=False, help_text="Keep accepting this CA's certificates when its CRL is stale."
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.NEVER)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    this_update = models.DateTimeField(null=True, blank=True)
    next_update = models.DateTimeField(null=True, blank=True)
    crl_number = models.PositiveBigIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # Scheduling (certauth.crlfetch): when the jobs fetch next, and the operator's fixed interval if any.
    next_refresh_at = models.DateTimeField(null=True, blank=True, db_index=True)
    refresh_interval_seconds = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text=(
            "Seconds between fetches, instead of half the time to nextUpdate"
            " (at least crl_refresh_min_seconds)."
        ),
    )
    # Set at the first failure of a run of failures, cleared by a success (backoff and the stale policy).
    failing_since = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)

    objects = FeedQuerySet.as_manager()

    class Meta:
        ordering = ["ca__name", "location"]
        constraints = [models.UniqueConstraint(fields=["ca", "location"], name="crlsource_unique_location")]

    def __str__(self) -> str:
        return f"{self.ca}: {self.location}"


class RevokedSerial(models.Model):
    """A serial listed in the last good CRL of a source (external CAs)."""

    source = models.ForeignKey(CrlSource, on_delete=models.CASCADE, related_name="revoked_serials")
    ca = models.ForeignKey(CertificateAuthority, on_delete=models.CASCADE, related_name="revoked_serials")
    serial = models.CharField(max_length=64)
    revoked_at = models.DateTimeField()
    reason = models.CharField(max_length=32, choices=RevocationReason.choices, blank=True)

    objects = FeedQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["source", "serial"], name="revokedserial_unique_source_serial")
        ]
        indexes = [models.Index(fields=["ca", "serial"])]


class AuthEvent(models.Model):
    """One login attempt, whatever its outcome: what an operator reads to answer "why was I refused?"."""

    class Outcome(models.TextChoices):
        SUCCESS = "success", "success"
        FAILURE = "failure", "failure"

    time = models.DateTimeField(auto_now_add=True, db_index=True)
    transport = models.CharField(max_length=16)  # tcp, tls, websocket, bosh
    peer = models.CharField(max_length=100, blank=True)
    cert_fingerprint = models.CharField(max_length=64, blank=True, db_index=True)
    cert_subject = models.CharField(max_length=1000, blank=True)
    jid_requested = models.CharField(max_length=3071, blank=True)
    jid_granted = models.CharField(max_length=3071, blank=True)
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    condition = models.CharField(max_length=64, blank=True)
    reason = models.CharField(max_length=1000, blank=True)

    class Meta:
        ordering = ["-time"]

    def __str__(self) -> str:
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.outcome} {self.jid_granted or self.jid_requested}"


@receiver(pre_delete, sender=Certificate, dispatch_uid="certauth.certificate_revocation_is_permanent")
def _refuse_deleting_revoked(sender: type[Certificate], instance: Certificate, **kwargs: object) -> None:
    """Refuse ``delete()`` of a revoked or held row, whichever path it comes by (instance, QuerySet, cascade).

    With a pre_delete receiver Django never fast-deletes Certificate rows, so every ORM delete passes here,
    inside the delete's transaction: one refused row aborts the whole delete. The stored row is read and
    locked (as ``services.revoke`` locks it), so a revocation racing the delete either is seen here or
    finds the row gone, never deleted after it was revoked.
    """
    stored = Certificate.objects.select_for_update().filter(pk=instance.pk).first()
    for row in (instance, stored):
        if row is not None and (reason := row.deletion_refused_reason()) is not None:
            raise models.ProtectedError(reason, {row})


@receiver(pre_save, sender=Certificate, dispatch_uid="certauth.certificate_revocation_is_final")
def _refuse_unrevoking(sender: type[Certificate], instance: Certificate, **kwargs: object) -> None:
    """A revoked row stays revoked (RFC 5280 §5.3.1: only certificateHold may be lifted)."""
    update_fields = kwargs.get("update_fields")
    if instance.pk is None or instance.status == Certificate.Status.REVOKED or kwargs.get("raw"):
        return
    if update_fields is not None and "status" not in update_fields:
        return
    stored = Certificate.objects.filter(pk=instance.pk).values_list("status", flat=True).first()
    if stored == Certificate.Status.REVOKED:
        raise models.ProtectedError(instance.unrevoking_refused_reason(), {instance})


class SelfSignedPin(models.Model):
    """A self-signed client certificate pinned to the one account it may log in as (``selfsigned_peer``).

    An account may hold several pins (one per device, added in the admin); a login pins its certificate by
    itself (trust on first use) only when the account holds none. The rules are in ``certauth.pins``.
    """

    class Origin(models.TextChoices):
        ADMIN = "admin", "pinned in the admin"
        FIRST_LOGIN = "first_login", "pinned at first login (trust on first use)"
        USER = "user", "added by the user (XEP-0257)"

    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="selfsigned_pins")
    fingerprint_sha256 = models.CharField(
        max_length=64, unique=True, help_text="SHA-256 of the DER certificate, lower hex without colons."
    )
    origin = models.CharField(max_length=16, choices=Origin.choices)
    subject = models.CharField(max_length=1000, blank=True, help_text="Empty when pinned by fingerprint.")
    created_at = models.DateTimeField(auto_now_add=True)
    peer = models.CharField(max_length=100, blank=True, help_text="First login: the client's address.")
    transport = models.CharField(max_length=16, blank=True, help_text="First login: tcp, tls, ...")

    objects = FeedQuerySet.as_manager()

    class Meta:
        ordering = ["account", "created_at"]
        verbose_name = "self-signed certificate pin"
        constraints = [
            # Race safety of trust on first use: two first logins at once with different certificates
            # both find no pin; only one of their inserts can succeed.
            models.UniqueConstraint(
                fields=["account"],
                condition=models.Q(origin="first_login"),
                name="selfsignedpin_one_first_login_per_account",
            )
        ]

    def __str__(self) -> str:
        return f"{self.fingerprint_sha256[:16]}… ({self.get_origin_display()})"


watch(CertificateAuthority, Certificate, CrlSource, RevokedSerial, SelfSignedPin)
