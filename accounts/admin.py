"""Admin for domains and accounts (the password, the "connect a client" page); rosters and offline messages
(RFC 6121, XEP-0160) to look at.

The account page also shows what other apps keep about the account: certificates, pins and auth events
(``certauth.admin``), live sessions (``transport.sessions.admin``). Those apps register an
:class:`AccountSection` here, so this app imports neither their admin nor ``transport``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.options import InlineModelAdmin
from django.contrib.auth.password_validation import password_validators_help_text_html, validate_password
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from accounts import connect
from accounts.models import (
    Account,
    Domain,
    OfflineMessage,
    RosterItem,
    normalised_domain,
    normalised_localpart,
)
from accounts.passwords import has_password, set_password
from xmppauth.adminviews import attachment, form_page


class DomainForm(forms.ModelForm):
    """Normalises the name before the uniqueness check, so a look-alike of a domain is a form error."""

    class Meta:
        model = Domain
        fields = "__all__"

    def clean_name(self) -> str:
        return normalised_domain(self.cleaned_data["name"])


class AccountForm(forms.ModelForm):
    """Normalises the localpart ([RFC7622] §3.3) before the (localpart, domain) uniqueness check."""

    class Meta:
        model = Account
        fields = "__all__"

    def clean_localpart(self) -> str:
        return normalised_localpart(self.cleaned_data["localpart"])


class SetPasswordForm(forms.Form):
    """A new password, twice, checked by Django's validators (AUTH_PASSWORD_VALIDATORS)."""

    password1 = forms.CharField(label="New password", strip=False, widget=forms.PasswordInput)
    password2 = forms.CharField(label="Again", strip=False, widget=forms.PasswordInput)

    def clean(self) -> dict:
        data = super().clean()
        first, second = data.get("password1"), data.get("password2")
        if first and second and first != second:
            raise forms.ValidationError("The two passwords differ.")
        if first:
            validate_password(first)  # ValidationError -> the form shows why
        return data


@admin.register(Domain)
class DomainAdmin(admin.ModelAdmin):
    form = DomainForm
    list_display = ["name", "enabled", "certificate_self_service", "account_count", "created_at"]
    list_filter = ["enabled", "certificate_self_service", "self_service_csr_signing"]
    search_fields = ["name"]

    @admin.display(description="accounts")
    def account_count(self, domain: Domain) -> int:
        return domain.accounts.count()


@dataclass(frozen=True)
class AccountPanel:
    """One section of the account page below its form: a template and what it shows (``panel`` in it)."""

    key: str
    title: str
    template: str
    context: dict = field(default_factory=dict)


class AccountSection:
    """One app's part of the account admin, registered with :func:`register_account_section` from that app's
    ``admin.py``.

    Each attribute adds to what :class:`AccountAdmin` shows: ``readonly`` rows on the form and ``columns`` in
    the list (callables taking an account, decorated with ``admin.display``), ``inlines``, list ``actions``
    (functions of ``(modeladmin, request, queryset)``), the views of :meth:`urls` (named
    ``accounts_account_*``, under the account's URL) and a panel below the form (:meth:`panel`). Panels are
    shown by ``order``.
    """

    key: str = ""
    order: int = 100
    readonly: Sequence[Callable[[Account], str]] = ()
    columns: Sequence[Callable[[Account], object]] = ()
    inlines: Sequence[type[InlineModelAdmin]] = ()
    actions: Sequence[Callable[..., HttpResponse | None]] = ()

    def urls(self, account_admin: AccountAdmin) -> list[URLPattern]:
        return []

    def panel(
        self, account_admin: AccountAdmin, request: HttpRequest, account: Account
    ) -> AccountPanel | None:
        return None


_SECTIONS: dict[str, AccountSection] = {}


def register_account_section(section: AccountSection) -> AccountSection:
    """Adds ``section`` to the account admin; a key registered twice is a start-up error."""
    if not section.key or section.key in _SECTIONS:
        raise ImproperlyConfigured(f"account page section {section.key!r}: empty or registered twice")
    _SECTIONS[section.key] = section
    return section


def account_sections() -> list[AccountSection]:
    return sorted(_SECTIONS.values(), key=lambda section: section.order)


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    """Accounts; what other apps add to the page comes from the registered :class:`AccountSection` objects."""

    form = AccountForm
    list_display = ["jid_display", "active", "created_by", "created_at"]
    list_filter = ["active", "created_by", "domain"]
    search_fields = ["localpart", "domain__name"]
    list_select_related = ["domain"]
    readonly_fields = ["created_at", "client_actions"]
    change_form_template = "admin/accounts/account/change_form.html"

    @property
    def actions(self) -> list[Callable[..., HttpResponse | None]]:  # read by Django's checks and action list
        return [action for section in account_sections() for action in section.actions]

    def get_list_display(self, request: HttpRequest) -> list:
        *own, last = self.list_display  # the sections' columns before "created_at"
        return [*own, *(column for section in account_sections() for column in section.columns), last]

    def get_readonly_fields(self, request: HttpRequest, obj: Account | None = None) -> list:
        return [*self.readonly_fields, *(row for section in account_sections() for row in section.readonly)]

    def get_inlines(self, request: HttpRequest, obj: Account | None) -> list:
        return [*self.inlines, *(inline for section in account_sections() for inline in section.inlines)]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        account = self.get_object(request, object_id)
        extra = {"account_panels": self.account_panels(request, account)} if account is not None else {}
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def account_panels(self, request: HttpRequest, account: Account) -> list[AccountPanel]:
        """The sections of the account page (certificates, live sessions, last auth events: the apps'
        sections); their buttons come back here (``next``)."""
        here = reverse("admin:accounts_account_change", args=[account.pk])
        panels = []
        for section in account_sections():
            panel = section.panel(self, request, account)
            if panel is not None:
                panel.context.setdefault("next", here)
                panels.append(panel)
        return panels

    @admin.display(description="JID", ordering="localpart")
    def jid_display(self, account: Account) -> str:
        return account.jid

    @admin.display(description="client")
    def client_actions(self, account: Account) -> str:
        if account.pk is None:
            return "-"
        return format_html(
            '<a class="button" href="{}">Connect a client</a> '
            '<a class="button" href="{}">Set password</a> {}',
            reverse("admin:accounts_account_connect", args=[account.pk]),
            reverse("admin:accounts_account_password", args=[account.pk]),
            "(has a password)" if has_password(account) else "(no password)",
        )

    def get_urls(self):
        own = [
            path(
                "<int:account_id>/connect/",
                self.admin_site.admin_view(self.connect_view),
                name="accounts_account_connect",
            ),
            path(
                "<int:account_id>/connect/ca.pem",
                self.admin_site.admin_view(self.connect_ca_view),
                name="accounts_account_connect_ca",
            ),
            path(
                "<int:account_id>/password/",
                self.admin_site.admin_view(self.password_view),
                name="accounts_account_password",
            ),
        ]
        for section in account_sections():
            own += section.urls(self)
        return own + super().get_urls()

    def connect_view(self, request: HttpRequest, account_id: int) -> TemplateResponse:
        """How to set up a client for this account: JID, listeners, CA, PEM commands, client settings."""
        account = get_object_or_404(Account.objects.select_related("domain"), pk=account_id)
        if not self.has_view_permission(request, account):
            raise PermissionDenied
        found = connect.endpoints(account)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Connect a client as {account.jid}",
            "opts": self.model._meta,
            "account": account,
            "endpoints": found,
            "tcp": next((e for e in found if e.kind == "TCP"), None),
            "wss": connect.first(account, "WebSocket", f"wss://{account.domain.name}:5443/ws-xmpp"),
            "bosh": connect.first(account, "BOSH", f"https://{account.domain.name}:5443/http-bind"),
            "issuers": connect.server_certificate_issuers(),
            "certificates": connect.active_certificates(account),
            "p12": f"{account.jid}.p12",
        }
        return TemplateResponse(request, "admin/accounts/account/connect.html", context)

    def connect_ca_view(self, request: HttpRequest, account_id: int) -> HttpResponse:
        account = get_object_or_404(Account, pk=account_id)
        if not self.has_view_permission(request, account):
            raise PermissionDenied
        pem = connect.trust_anchor_pem()
        if not pem:
            return HttpResponse("no CA of ours yet: run `python manage.py pki init-ca`", status=404)
        return attachment(pem.encode(), "xmppauth-ca.pem", "application/x-pem-file")

    def password_view(self, request: HttpRequest, account_id: int) -> HttpResponse:
        """Issue 14: set the password the rdbms method checks; only SCRAM salted keys are stored."""
        account = get_object_or_404(Account.objects.select_related("domain"), pk=account_id)
        if not self.has_change_permission(request, account):
            return HttpResponse(status=403)
        form = SetPasswordForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                password = form.cleaned_data["password1"]
                set_password(account, password, settings.XMPP.auth.password, validate=False)
            except ValueError as exc:
                form.add_error("password1", str(exc))
            else:
                self.log_change(request, account, "set the password")
                self.message_user(request, f"Password set for {account.jid}.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:accounts_account_change", args=[account.pk]))
        return form_page(
            request,
            f"Set the password of {account.jid}",
            form,
            submit_label="Set password",
            intro=password_validators_help_text_html(),
        )


@admin.register(RosterItem)
class RosterItemAdmin(admin.ModelAdmin):
    """Roster items as the router keeps them (RFC 6121 §2, §3): to look at, not to edit."""

    list_display = ["account", "jid", "name", "subscription", "ask", "pending_in", "on_roster", "updated_at"]
    list_filter = ["subscription", "ask", "pending_in"]
    search_fields = ["account__localpart", "jid", "name"]
    list_select_related = ["account__domain"]
    readonly_fields = [field.name for field in RosterItem._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # the subscription states follow the protocol (transport.xmpp.im.subscription), not forms
        return False


@admin.register(OfflineMessage)
class OfflineMessageAdmin(admin.ModelAdmin):
    """Messages waiting for their account's next login (XEP-0160); deleting one drops it."""

    list_display = ["account", "sender", "stored_at", "stored_by"]
    search_fields = ["account__localpart", "sender"]
    list_select_related = ["account__domain"]
    readonly_fields = [field.name for field in OfflineMessage._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
