"""Admin for domains and accounts, with the per-account certificate actions (issue, sign a CSR); rosters and
offline messages (RFC 6121, XEP-0160) to look at."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.password_validation import password_validators_help_text_html, validate_password
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html

from accounts.models import (
    Account,
    Domain,
    OfflineMessage,
    RosterItem,
    normalised_domain,
    normalised_localpart,
)
from accounts.passwords import has_password, set_password
from certauth import pki, services
from certauth.adminviews import form_page
from certauth.forms import IssueCertificateForm, SignCsrForm


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
    list_display = ["name", "enabled", "account_count", "created_at"]
    list_filter = ["enabled"]
    search_fields = ["name"]

    @admin.display(description="accounts")
    def account_count(self, domain: Domain) -> int:
        return domain.accounts.count()


def _attachment(data: bytes, filename: str, content_type: str) -> HttpResponse:
    response = HttpResponse(data, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    form = AccountForm
    list_display = ["jid_display", "active", "created_by", "certificate_count", "created_at"]
    list_filter = ["active", "created_by", "domain"]
    search_fields = ["localpart", "domain__name"]
    list_select_related = ["domain"]
    readonly_fields = ["created_at", "certificate_actions"]
    actions = ["issue_certificate_action"]

    @admin.display(description="JID", ordering="localpart")
    def jid_display(self, account: Account) -> str:
        return account.jid

    @admin.display(description="certificates")
    def certificate_count(self, account: Account) -> int:
        return account.certificates.count()

    @admin.display(description="certificate actions")
    def certificate_actions(self, account: Account) -> str:
        if account.pk is None:
            return "-"
        return format_html(
            '<a class="button" href="{}">Issue a certificate</a> <a class="button" href="{}">Sign a CSR</a>'
            ' <a class="button" href="{}">Set password</a> {}',
            reverse("admin:accounts_account_issue", args=[account.pk]),
            reverse("admin:accounts_account_sign_csr", args=[account.pk]),
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
                "<int:account_id>/sign-csr/",
                self.admin_site.admin_view(self.sign_csr_view),
                name="accounts_account_sign_csr",
            ),
            path(
                "<int:account_id>/password/",
                self.admin_site.admin_view(self.password_view),
                name="accounts_account_password",
            ),
        ]
        return own + super().get_urls()

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
                password = data["password"].encode()
                self.log_change(request, account, f"issued certificate {issued.row.serial}")
                if data["output"] in ("p12", "p12-legacy"):
                    p12 = issued.pkcs12(password, legacy=data["output"] == "p12-legacy")
                    return _attachment(p12, f"{account.jid}.p12", "application/x-pkcs12")
                return _attachment(
                    issued.pem_bundle(password), f"{account.jid}.pem", "application/x-pem-file"
                )
        return form_page(
            request,
            f"Issue a certificate for {account.jid}",
            form,
            submit_label="Issue",
            intro="The certificate's xmppAddr is the account's JID (XEP-0178).",
        )

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
                return _attachment(
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
        return False  # the subscription states follow the protocol (transport.im.subscription), not forms


@admin.register(OfflineMessage)
class OfflineMessageAdmin(admin.ModelAdmin):
    """Messages waiting for their account's next login (XEP-0160); deleting one drops it."""

    list_display = ["account", "sender", "stored_at", "stored_by"]
    search_fields = ["account__localpart", "sender"]
    list_select_related = ["account__domain"]
    readonly_fields = [field.name for field in OfflineMessage._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
