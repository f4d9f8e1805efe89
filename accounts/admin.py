"""Admin for domains and accounts, with the per-account certificate actions (issue, sign a CSR); rosters and
offline messages (RFC 6121, XEP-0160) to look at."""

from __future__ import annotations

from dataclasses import dataclass, field

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.password_validation import password_validators_help_text_html, validate_password
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
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
from certauth import downloads, pins, pki, services
from certauth.adminviews import attachment, form_page
from certauth.forms import IssueCertificateForm, PinSelfSignedForm, RevokeForm, SignCsrForm
from certauth.models import AuthEvent, Certificate, SelfSignedPin
from transport.sessions.models import LiveSession


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
    """One section of the account page below its form: a template and what it shows.

    ``AccountAdmin.account_panels`` lists them; another part (certificate pins, say) adds its own section by
    adding a panel there, with its own template.
    """

    key: str
    title: str
    template: str
    context: dict = field(default_factory=dict)


RECENT_EVENTS = 15


class SelfSignedPinInline(admin.TabularInline):
    """The account's pinned self-signed certificates (``selfsigned_peer``): when, how and from where each was
    pinned. Added through "Pin a self-signed certificate" (validated); ticking "Delete" clears one."""

    model = SelfSignedPin
    extra = 0
    fields = ["fingerprint_sha256", "origin", "subject", "created_at", "peer", "transport"]
    readonly_fields = fields
    verbose_name_plural = "self-signed certificate pins (selfsigned_peer)"

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # the pin form validates the certificate or fingerprint


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    form = AccountForm
    list_display = ["jid_display", "active", "created_by", "certificate_count", "pin_count", "created_at"]
    list_filter = ["active", "created_by", "domain"]
    search_fields = ["localpart", "domain__name"]
    list_select_related = ["domain"]
    readonly_fields = ["created_at", "certificate_actions", "selfsigned_pin_actions"]
    inlines = [SelfSignedPinInline]
    actions = ["issue_certificate_action"]
    change_form_template = "admin/accounts/account/change_form.html"

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        account = self.get_object(request, object_id)
        extra = {"account_panels": self.account_panels(request, account)} if account is not None else {}
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def account_panels(self, request: HttpRequest, account: Account) -> list[AccountPanel]:
        """The sections of the account page: its certificates, live sessions and last auth events."""
        certificates = list(account.certificates.select_related("issuer").order_by("-created_at")[:50])
        fingerprints = [row.fingerprint_sha256 for row in certificates]
        jid = account.jid
        events = AuthEvent.objects.filter(
            Q(jid_granted=jid) | Q(jid_requested=jid) | Q(cert_fingerprint__in=fingerprints)
        ).order_by("-time")[:RECENT_EVENTS]
        here = reverse("admin:accounts_account_change", args=[account.pk])
        may_change = self.admin_site._registry[Certificate].has_change_permission(request)
        may_end = self.admin_site._registry[LiveSession].has_delete_permission(request)
        panels = [
            AccountPanel(
                "certificates",
                "Certificates",
                "admin/accounts/account/panel_certificates.html",
                {"certificates": certificates, "revoke_form": RevokeForm(), "may_change": may_change},
            ),
            AccountPanel(
                "sessions",
                "Live sessions",
                "admin/accounts/account/panel_sessions.html",
                {"sessions": LiveSession.objects.filter(bare_jid=jid.lower()), "may_end": may_end},
            ),
            AccountPanel(
                "events",
                f"Last {RECENT_EVENTS} auth events",
                "admin/accounts/account/panel_events.html",
                {"events": list(events), "all_events": reverse("admin:certauth_authevent_changelist")},
            ),
        ]
        for panel in panels:
            panel.context.setdefault("next", here)
        return panels

    @admin.display(description="JID", ordering="localpart")
    def jid_display(self, account: Account) -> str:
        return account.jid

    @admin.display(description="certificates")
    def certificate_count(self, account: Account) -> int:
        return account.certificates.count()

    @admin.display(description="self-signed pins")
    def pin_count(self, account: Account) -> int:
        return account.selfsigned_pins.count()

    @admin.display(description="self-signed certificates")
    def selfsigned_pin_actions(self, account: Account) -> str:
        if account.pk is None:
            return "-"
        return format_html(
            '<a class="button" href="{}">Pin a self-signed certificate</a> '
            '<a class="button" href="{}">Clear all pins</a>',
            reverse("admin:accounts_account_pin", args=[account.pk]),
            reverse("admin:accounts_account_clear_pins", args=[account.pk]),
        )

    @admin.display(description="certificate actions")
    def certificate_actions(self, account: Account) -> str:
        if account.pk is None:
            return "-"
        return format_html(
            '<a class="button" href="{}">Issue a certificate</a> <a class="button" href="{}">Sign a CSR</a> '
            '<a class="button" href="{}">Connect a client</a> '
            '<a class="button" href="{}">Set password</a> {}',
            reverse("admin:accounts_account_issue", args=[account.pk]),
            reverse("admin:accounts_account_sign_csr", args=[account.pk]),
            reverse("admin:accounts_account_connect", args=[account.pk]),
            reverse("admin:accounts_account_password", args=[account.pk]),
            "(has a password)" if has_password(account) else "(no password)",
        )

    @admin.action(description="Issue a certificate for the selected account")
    def issue_certificate_action(self, request: HttpRequest, queryset) -> HttpResponse | None:
        if queryset.count() != 1:
            self.message_user(
                request, "Select exactly one account to issue a certificate for.", messages.WARNING
            )
            return None
        return HttpResponseRedirect(reverse("admin:accounts_account_issue", args=[queryset.get().pk]))

    def get_urls(self):
        own = [
            path(
                "<int:account_id>/issue-certificate/",
                self.admin_site.admin_view(self.issue_view),
                name="accounts_account_issue",
            ),
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
                "<int:account_id>/sign-csr/",
                self.admin_site.admin_view(self.sign_csr_view),
                name="accounts_account_sign_csr",
            ),
            path(
                "<int:account_id>/pin-selfsigned/",
                self.admin_site.admin_view(self.pin_view),
                name="accounts_account_pin",
            ),
            path(
                "<int:account_id>/clear-pins/",
                self.admin_site.admin_view(self.clear_pins_view),
                name="accounts_account_clear_pins",
            ),
            path(
                "<int:account_id>/password/",
                self.admin_site.admin_view(self.password_view),
                name="accounts_account_password",
            ),
        ]
        return own + super().get_urls()

    def pin_view(self, request: HttpRequest, account_id: int) -> HttpResponse:
        account = get_object_or_404(Account.objects.select_related("domain"), pk=account_id)
        if not self.has_change_permission(request, account):
            return HttpResponse(status=403)
        form = PinSelfSignedForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                pin = pins.pin_for_account(
                    account, certificate=data["certificate"], fingerprint=data["fingerprint"]
                )
            except pins.PinError as exc:
                form.add_error(None, str(exc))
            else:
                self.log_change(request, account, f"pinned self-signed certificate {pin.fingerprint_sha256}")
                self.message_user(request, f"Self-signed certificate pinned to {account.jid}.")
                return HttpResponseRedirect(reverse("admin:accounts_account_change", args=[account.pk]))
        return form_page(
            request,
            f"Pin a self-signed certificate to {account.jid}",
            form,
            submit_label="Pin",
            intro=(
                'With tls.verify_mode = "selfsigned_peer", a self-signed certificate logs in only as the '
                "account it is pinned to. An account may hold several pins (one per device); one without "
                "any is pinned at its first self-signed login."
            ),
        )

    def clear_pins_view(self, request: HttpRequest, account_id: int) -> HttpResponse:
        account = get_object_or_404(Account.objects.select_related("domain"), pk=account_id)
        if not self.has_change_permission(request, account):
            return HttpResponse(status=403)
        if request.method == "POST":
            count = pins.clear_pins(account)
            self.log_change(request, account, f"cleared {count} self-signed certificate pin(s)")
            self.message_user(
                request,
                f"Cleared {count} pin(s) of {account.jid}; its next self-signed login pins again.",
            )
            return HttpResponseRedirect(reverse("admin:accounts_account_change", args=[account.pk]))
        return form_page(
            request,
            f"Clear the self-signed certificate pins of {account.jid}",
            forms.Form(),
            submit_label="Clear all pins",
            intro=(
                f"{account.selfsigned_pins.count()} pin(s). After clearing, the next self-signed login as "
                f"{account.jid} pins its certificate (trust on first use)."
            ),
        )

    def issue_view(self, request: HttpRequest, account_id: int) -> HttpResponse:
        account = get_object_or_404(Account.objects.select_related("domain"), pk=account_id)
        if not self.has_change_permission(request, account):
            return HttpResponse(status=403)
        form = IssueCertificateForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                issued = services.issue_for_account(
                    account,
                    ca=data["ca"],
                    key_type=data["key_type"],
                    days=data["days"],
                    common_name=data["common_name"] or None,
                )
            except services.PkiError as exc:
                form.add_error(None, str(exc))
            else:
                return self._issued(request, account, issued, data)
        return form_page(
            request,
            f"Issue a certificate for {account.jid}",
            form,
            submit_label="Issue",
            intro="The certificate's xmppAddr is the account's JID (XEP-0178).",
        )

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
            "certificates": account.certificates.filter(status=Certificate.Status.ACTIVE).order_by(
                "-created_at"
            ),
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

    def _issued(
        self, request: HttpRequest, account: Account, issued: services.IssuedCertificate, data: dict
    ) -> HttpResponse:
        """After issuing: the file is offered once on the new certificate's page, and the form is gone."""
        password = data["password"].encode()
        if data["output"] in ("p12", "p12-legacy"):
            blob = issued.pkcs12(password, legacy=data["output"] == "p12-legacy")
            filename, content_type = f"{account.jid}.p12", "application/x-pkcs12"
        else:
            blob = issued.pem_bundle(password)
            filename, content_type = f"{account.jid}.pem", "application/x-pem-file"
        downloads.offer(request, issued.row.pk, blob, filename, content_type)
        self.log_change(request, account, f"issued certificate {issued.row.serial}")
        self.message_user(
            request,
            f"Issued certificate {issued.row.serial} for {account.jid}, valid until "
            f"{issued.row.not_after:%Y-%m-%d}. Download {filename} below (offered once).",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:certauth_certificate_change", args=[issued.row.pk]))

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

    def sign_csr_view(self, request: HttpRequest, account_id: int) -> HttpResponse:
        account = get_object_or_404(Account.objects.select_related("domain"), pk=account_id)
        if not self.has_change_permission(request, account):
            return HttpResponse(status=403)
        form = SignCsrForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                row = services.sign_csr_for_account(
                    account, data["csr"].encode(), ca=data["ca"], days=data["days"]
                )
            except services.PkiError as exc:
                form.add_error("csr", str(exc))
            else:
                self.log_change(request, account, f"signed a CSR: certificate {row.serial}")
                cert = pki.load_certificate(row.pem.encode())
                return attachment(
                    pki.certificate_to_pem(cert).encode(), f"{account.jid}.crt.pem", "application/x-pem-file"
                )
        return form_page(request, f"Sign a CSR for {account.jid}", form, submit_label="Sign")


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
