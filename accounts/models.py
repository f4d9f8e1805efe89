"""Hosted XMPP domains and the accounts that live on them."""

from __future__ import annotations

from django.db import models


class Domain(models.Model):
    """A virtual host we serve (``[general] hosts`` in the config, or added in the admin)."""

    name = models.CharField(max_length=255, unique=True, help_text="Lower-case domain, as in JIDs.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        self.name = self.name.strip().lower()
        super().save(*args, **kwargs)


class AccountQuerySet(models.QuerySet):
    def by_jid(self, jid: str) -> Account:
        """The account for a bare JID ``local@domain`` (raises ``Account.DoesNotExist``)."""
        localpart, _, domain = jid.partition("@")
        return self.select_related("domain").get(localpart=localpart, domain__name=domain.lower())


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

    @property
    def jid(self) -> str:
        return f"{self.localpart}@{self.domain.name}"
