"""Hosted XMPP domains and the accounts that live on them.

Names are stored normalised, once, whatever was typed ([RFC7622] §3.2-3.3 through ``certauth.identity``:
PRECIS UsernameCaseMapped for localparts, IDNA2008/UTS #46 for domains), so every lookup, the login's and
the admin's, compares the same string; ``Dave`` typed in the admin is the account ``dave`` logs in as.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from accounts.changefeed import FeedQuerySet, watch
from transport.xmpp.jid import InvalidJid, normalise_domain, normalise_localpart, parse_bare_jid


def normalised_localpart(value: str) -> str:
    """The stored form of a localpart; ``ValidationError`` (for forms) when it cannot be one."""
    try:
        return normalise_localpart(value.strip())
    except InvalidJid as exc:
        raise ValidationError(str(exc)) from None


def normalised_domain(value: str) -> str:
    """The stored form of a domain name; ``ValidationError`` (for forms) when it cannot be one."""
    try:
        return normalise_domain(value.strip())
    except InvalidJid as exc:
        raise ValidationError(str(exc)) from None


class Domain(models.Model):
    """A virtual host we serve (``[general] hosts`` in the config, or added in the admin)."""

    name = models.CharField(max_length=255, unique=True, help_text="Lower-case domain, as in JIDs.")
    enabled = models.BooleanField(default=True)
    # XEP-0257: users of this domain list, add, disable and revoke their own certificates from their client.
    certificate_self_service = models.BooleanField(
        "users manage their certificates",
        default=True,
        help_text="Logged-in users may list, add, disable and revoke their own certificates (XEP-0257).",
    )
    self_service_csr_signing = models.BooleanField(
        "our CA signs users' requests",
        default=False,
        help_text="With self-service on: a user may send a certificate signing request, which our default CA "
        "signs for their JID.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = FeedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        self.name = normalised_domain(self.name)
        super().save(*args, **kwargs)


class AccountQuerySet(FeedQuerySet):
    def by_jid(self, jid: str) -> Account:
        """The account for a bare JID ``local@domain``, normalised first (raises ``Account.DoesNotExist``,
        also for a string that is no JID)."""
        try:
            parsed = parse_bare_jid(jid)
        except InvalidJid:
            raise self.model.DoesNotExist(f"{jid!r} is not a bare JID") from None
        return self.select_related("domain").get(localpart=parsed.local, domain__name=parsed.domain)


class Account(models.Model):
    """An XMPP account ``localpart@domain``."""

    class Origin(models.TextChoices):
        ADMIN = "admin", "created in the admin"
        COMMAND = "command", "created by a management command"
        FIRST_LOGIN = "first_login", "created at first certificate login (pki)"

    localpart = models.CharField(max_length=1023)
    domain = models.ForeignKey(Domain, on_delete=models.PROTECT, related_name="accounts")
    active = models.BooleanField(default=True, help_text="An inactive account cannot log in.")
    created_by = models.CharField(max_length=16, choices=Origin.choices, default=Origin.ADMIN)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = AccountQuerySet.as_manager()

    class Meta:
        ordering = ["domain__name", "localpart"]
        constraints = [models.UniqueConstraint(fields=["localpart", "domain"], name="account_unique_jid")]

    def __str__(self) -> str:
        return self.jid

    def save(self, *args, **kwargs) -> None:
        self.localpart = normalised_localpart(self.localpart)
        super().save(*args, **kwargs)

    @property
    def jid(self) -> str:
        return f"{self.localpart}@{self.domain.name}"


class RosterItem(models.Model):
    """One contact on an account's roster and the subscription state between them (RFC 6121 §2, §3).

    ``subscription`` + ``ask`` (Pending Out) + ``pending_in`` are the nine states of RFC 6121 Appendix A;
    the transitions are in ``transport.xmpp.im.subscription``. ``pending_in_stanza`` keeps the contact's last
    subscription request so it can be delivered again at the next login (§3.1.3).
    """

    class Subscription(models.TextChoices):
        NONE = "none"
        TO = "to"
        FROM = "from"
        BOTH = "both"

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="roster")
    jid = models.CharField(max_length=3071, help_text="The contact's bare JID.")
    name = models.CharField(max_length=1023, blank=True, default="")
    groups = models.JSONField(default=list, blank=True)
    subscription = models.CharField(max_length=4, choices=Subscription.choices, default=Subscription.NONE)
    ask = models.BooleanField(default=False, help_text="Pending Out: we asked the contact to subscribe.")
    pending_in = models.BooleanField(default=False, help_text="Pending In: the contact asked us.")
    pending_in_stanza = models.TextField(blank=True, default="")
    on_roster = models.BooleanField(
        default=True, help_text="False: kept only for its Pending In state (not in roster results)."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["account", "jid"]
        constraints = [models.UniqueConstraint(fields=["account", "jid"], name="roster_item_unique_contact")]

    def __str__(self) -> str:
        return f"{self.account_id}: {self.jid} ({self.subscription})"


class OfflineMessage(models.Model):
    """A message kept for an account with no available resource, delivered at its next login (XEP-0160)."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="offline_messages")
    stanza = models.TextField(help_text="The message as XML, with its original from and to.")
    sender = models.CharField(max_length=3071)
    stored_at = models.DateTimeField(auto_now_add=True)
    stored_by = models.CharField(
        max_length=255, blank=True, default="", help_text="The process that stored it."
    )

    class Meta:
        ordering = ["account", "id"]

    def __str__(self) -> str:
        return f"{self.account_id}: from {self.sender} at {self.stored_at:%Y-%m-%d %H:%M:%S}"


class PasswordCredential(models.Model):
    """An account's password as SCRAM salted keys for one hash (RFC 5802 §3): never the password itself.

    ``stored_key`` = H(HMAC(SaltedPassword, "Client Key")) and ``server_key`` = HMAC(SaltedPassword,
    "Server Key"), SaltedPassword = PBKDF2(password, salt, iterations). They let the server check a SCRAM
    proof or a PLAIN password, and cannot be turned back into the password (``accounts.passwords`` writes
    them).
    """

    class Hash(models.TextChoices):  # MongooseIM's [auth.password] hash names
        SHA1 = "sha", "SHA-1"
        SHA224 = "sha224", "SHA-224"
        SHA256 = "sha256", "SHA-256"
        SHA384 = "sha384", "SHA-384"
        SHA512 = "sha512", "SHA-512"

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="password_credentials")
    hash = models.CharField(max_length=8, choices=Hash.choices)
    salt = models.BinaryField(max_length=64)
    iterations = models.PositiveIntegerField()
    stored_key = models.BinaryField(max_length=64)
    server_key = models.BinaryField(max_length=64)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["account", "hash"]
        constraints = [
            models.UniqueConstraint(fields=["account", "hash"], name="password_credential_unique_hash")
        ]

    def __str__(self) -> str:
        return f"{self.account_id}: SCRAM {self.hash} ({self.iterations} iterations)"


class ChangeFeed(models.Model):
    """One row (pk 1): the counter ``accounts.changefeed`` bumps in the transaction of every change to the
    rows the login path caches (accounts, domains, certificates, CAs, CRLs, pins); each process reads it at
    most every ``changefeed.POLL_INTERVAL`` seconds and forgets its caches when it moved."""

    generation = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"generation {self.generation}"


watch(Domain, Account)
