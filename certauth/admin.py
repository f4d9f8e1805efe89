"""Admin for CAs, certificates, CRL sources, pins and the auth event log, and the certificate parts of the
account page (an ``accounts.admin.AccountSection``): issuing, signing a CSR, pinning, revoking.

Each operator action is one call of ``certauth.services`` or ``certauth.pins``, the same call the ``pki``
command and the tasks make (after django-ca); the admin asks, checks permissions and reports."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from accounts.admin import AccountPanel, AccountSection, register_account_section
from accounts.models import Account
from certauth import crlfetch, crlpolicy, downloads, pins, pki, services
from certauth.forms import (
    CertificateAuthorityForm,
    ImportCaForm,
    ImportCertificateForm,
    IssueCertificateForm,
    PinSelfSignedForm,
    RevokeForm,
    SignCsrForm,
)
from certauth.models import (
    AuthEvent,
    Certificate,
    CertificateAuthority,
    CrlSource,
    RevokedSerial,
    SelfSignedPin,
)
from xmppauth.adminviews import attachment, form_page, safe_next


class ImportToolMixin:
    """Adds an "import from PEM" page to a model admin, linked above its change list."""

    change_list_template = "admin/certauth/change_list_import.html"
    import_label = "Import from PEM"

    def _url_name(self, view: str) -> str:
        return f"{self.model._meta.app_label}_{self.model._meta.model_name}_{view}"

    def get_urls(self):
        own = [path("import/", self.admin_site.admin_view(self.import_view), name=self._url_name("import"))]
        return own + super().get_urls()

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        extra = {"extra_tools": [(reverse("admin:" + self._url_name("import")), self.import_label)]}
        return super().changelist_view(request, {**extra, **(extra_context or {})})

    def _back_to_changelist(self) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:" + self._url_name("changelist")))


@dataclass(frozen=True)
class RevocationOverview:
    """What the admin shows about one CA's revocation information (issue 11 points 1 and 4)."""

    sources: str  # where it comes from, or NO_SOURCE
    crl_held: str
    next_update: datetime | None
    freshness: str


NO_SOURCE = "no revocation source"


def _grace() -> timedelta:
    return timedelta(seconds=settings.XMPP.options.crl_grace_seconds)


def revocation_overview(ca: CertificateAuthority, now: datetime | None = None) -> RevocationOverview:
    """Sources, the CRL held, its nextUpdate and whether it is fresh (``crlpolicy``, as logins decide)."""
    now = now or timezone.now()
    if ca.is_ours:  # Certificate.status is read at every login; the CRL we publish says the same
        next_update = ca.crl_updated_at + services.CRL_VALIDITY if ca.crl_updated_at else None
        held = f"#{ca.crl_number} (published by us)" if ca.crl_der else "none published yet"
        return RevocationOverview("ours: certificate status and our CRL", held, next_update, "fresh (ours)")
    sources = list(ca.crl_sources.all())
    if not sources:
        return RevocationOverview(NO_SOURCE, "-", None, NO_SOURCE)
    held = [s for s in sources if s.last_success_at is not None or s.next_update is not None]
    states: list[str] = []
    for source in sources:
        has_crl = source in held
        if crlpolicy.is_fresh(now, next_update=source.next_update, has_crl=has_crl, grace=_grace()):
            continue
        stale = crlpolicy.staleness(
            now,
            next_update=source.next_update,
            failing_since=None if has_crl else source.failing_since,
            grace=_grace(),
        )
        if stale is not None:
            states.append(f"stale since {stale.since:%Y-%m-%d %H:%M} ({stale.what}): {source.location}")
        else:
            states.append(f"no CRL yet: {source.location}")
    latest = max(held, key=lambda s: (s.this_update is not None, s.this_update), default=None)
    crl_held = "none yet"
    if latest is not None:
        number = f"#{latest.crl_number} " if latest.crl_number is not None else ""
        crl_held = (
            f"{number}of {latest.this_update:%Y-%m-%d %H:%M}" if latest.this_update else number or "held"
        )
    next_updates = [s.next_update for s in held if s.next_update is not None]
    return RevocationOverview(
        "; ".join(f"{s.get_kind_display()}: {s.location}" for s in sources),
        crl_held,
        max(next_updates, default=None),
        "; ".join(states) or "fresh",
    )


def labelled(attr: str, label: str, *, ordering: str | None = None):
    """A read-only admin field showing ``attr`` under a human label (lists joined by commas).

    The models' verbose names stay as they are (changing them is a migration); the admin speaks for them.
    """

    @admin.display(description=label, ordering=ordering)
    def show(self, obj: object) -> str:
        value = getattr(obj, attr)
        if isinstance(value, list):
            return ", ".join(str(v) for v in value) or "-"
        return "-" if value in (None, "") else value

    show.__name__ = f"{attr}_shown"
    return show


@admin.register(CertificateAuthority)
class CertificateAuthorityAdmin(ImportToolMixin, admin.ModelAdmin):
    form = CertificateAuthorityForm
    list_display = [
        "name",
        "origin",
        "trusted_for_client_auth",
        "not_after",
        "revocation_sources",
        "crl_held",
        "crl_next_update",
        "crl_freshness",
    ]
    list_filter = ["origin", "trusted_for_client_auth"]
    search_fields = ["name", "subject", "fingerprint_sha256"]
    config_files_shown = labelled("config_files", "config files (tls.cacertfile)")
    fingerprint_shown = labelled("fingerprint_sha256", "SHA-256 fingerprint")
    not_before_shown = labelled("not_before", "valid from")
    not_after_shown = labelled("not_after", "valid until")
    crl_number_shown = labelled("crl_number", "number of our last CRL")
    crl_updated_shown = labelled("crl_updated_at", "our last CRL published at")
    readonly_fields = [
        "origin",
        "config_files_shown",
        "subject",
        "fingerprint_shown",
        "not_before_shown",
        "not_after_shown",
        "pem_shown",
        "revocation_sources",
        "crl_held",
        "crl_next_update",
        "crl_freshness",
        "crl_number_shown",
        "crl_updated_shown",
        "crl_link",
        "created_at",
    ]
    fields = ["name", "trusted_for_client_auth", "allowed_domains", *readonly_fields]
    actions = ["publish_crl_action"]
    import_label = "Import a CA from PEM"

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).prefetch_related("crl_sources")

    @admin.display(description="certificate (PEM)")
    def pem_shown(self, ca: CertificateAuthority) -> str:
        return format_html('<pre class="xa-pem">{}</pre>', ca.certificate_pem)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # created by `pki init-ca` / bootstrap, or imported from PEM

    @staticmethod
    def _from_config(ca: CertificateAuthority | None) -> bool:
        return ca is not None and ca.origin == CertificateAuthority.Origin.CONFIG

    def has_change_permission(self, request: HttpRequest, obj: CertificateAuthority | None = None) -> bool:
        # A tls.cacertfile CA: the file is the source of truth (shown, never edited here).
        return not self._from_config(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: CertificateAuthority | None = None) -> bool:
        return not self._from_config(obj) and super().has_delete_permission(request, obj)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        ca = self.get_object(request, object_id)
        if self._from_config(ca) and request.method == "GET":
            files = ", ".join(ca.config_files) or "no file any more: not trusted"
            self.message_user(
                request,
                f"{ca.name} comes from the config (tls.cacertfile: {files}); edit the file to change it",
            )
        return super().change_view(request, object_id, form_url, extra_context)

    def _overview(self, ca: CertificateAuthority) -> RevocationOverview:
        return revocation_overview(ca)

    @admin.display(description="revocation sources")
    def revocation_sources(self, ca: CertificateAuthority) -> str:
        return self._overview(ca).sources

    @admin.display(description="CRL held")
    def crl_held(self, ca: CertificateAuthority) -> str:
        return self._overview(ca).crl_held

    @admin.display(description="nextUpdate")
    def crl_next_update(self, ca: CertificateAuthority) -> str:
        next_update = self._overview(ca).next_update
        return f"{next_update:%Y-%m-%d %H:%M}" if next_update else "-"

    @admin.display(description="fresh")
    def crl_freshness(self, ca: CertificateAuthority) -> str:
        return self._overview(ca).freshness

    @admin.display(description="CRL URL")
    def crl_link(self, ca: CertificateAuthority) -> str:
        return (services.crl_url(ca) or "-") if ca.is_ours else "-"

    @admin.action(description="Publish a fresh CRL now (our CAs)")
    def publish_crl_action(self, request: HttpRequest, queryset) -> None:
        for ca in queryset:
            if ca.is_ours:
                services.publish_crl(ca)
                self.message_user(request, f"published CRL #{ca.crl_number + 1} of {ca.name}")
            else:
                self.message_user(
                    request, f"{ca.name} is imported: its CRL comes from its sources", messages.WARNING
                )

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_change_permission(request):
            return HttpResponse(status=403)
        form = ImportCaForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                ca = services.import_ca(
                    data["pem"],
                    name=data["name"] or None,
                    trusted=data["trusted_for_client_auth"],
                    allowed_domains=data["allowed_domains"],
                )
            except services.PkiError as exc:
                form.add_error("pem", str(exc))
            else:
                self.log_addition(request, ca, "imported from PEM")
                self.message_user(request, f"imported CA {ca.name}")
                return self._back_to_changelist()
        return form_page(request, "Import a CA certificate", form, submit_label="Import")


def certificate_label(row: Certificate) -> str:
    """What a certificate is called in lists: its CN, else its first xmppAddr or DNS name, else its serial."""
    names = row.xmpp_addrs or row.dns_names
    return row.common_name or (names[0] if names else f"serial {row.serial}")


STATUS_OPERATIONS = {  # url name -> (services call, past tense for the message)
    "revoke": (services.revoke, "revoked"),
    "hold": (services.hold, "put on hold"),
    "release": (services.release, "released from hold"),
}


@admin.register(Certificate)
class CertificateAdmin(ImportToolMixin, admin.ModelAdmin):
    change_form_template = "admin/certauth/certificate/change_form.html"
    list_display = [
        "name_display",
        "account",
        "status_display",
        "expires",
        "issuer",
        "source",
        "serial_short",
    ]
    list_filter = ["status", "source", "issuer", "revocation_reason"]
    search_fields = [
        "serial",
        "fingerprint_sha256",
        "subject",
        "common_name",
        "account__localpart",
        "account__domain__name",
    ]
    list_select_related = ["account__domain", "issuer"]
    date_hierarchy = "created_at"
    subject_shown = labelled("subject", "subject")
    common_name_shown = labelled("common_name", "common name (CN)")
    xmpp_addrs_shown = labelled("xmpp_addrs", "XMPP addresses (xmppAddr)")
    dns_names_shown = labelled("dns_names", "DNS names")
    issuer_name_shown = labelled("issuer_name", "issuer (as named in the certificate)")
    fingerprint_shown = labelled("fingerprint_sha256", "SHA-256 fingerprint")
    not_before_shown = labelled("not_before", "valid from")
    not_after_shown = labelled("not_after", "valid until")
    revoked_at_shown = labelled("revoked_at", "revoked / held since")
    readonly_fields = [
        "status",
        "serial",
        "common_name_shown",
        "xmpp_addrs_shown",
        "dns_names_shown",
        "subject_shown",
        "issuer",
        "issuer_name_shown",
        "fingerprint_shown",
        "not_before_shown",
        "not_after_shown",
        "revoked_at_shown",
        "revocation_reason",
        "source",
        "pem_shown",
        "created_at",
    ]
    fields = ["account", *readonly_fields]
    raw_id_fields = ["account"]
    actions = ["revoke_action", "hold_action", "release_action"]
    import_label = "Import a certificate from PEM"

    @admin.display(description="certificate", ordering="common_name")
    def name_display(self, row: Certificate) -> str:
        return certificate_label(row)

    @admin.display(description="status", ordering="status")
    def status_display(self, row: Certificate) -> str:
        return format_html('<span class="xa-status xa-{}">{}</span>', row.status, row.get_status_display())

    @admin.display(description="expires", ordering="not_after")
    def expires(self, row: Certificate) -> str:
        return f"{row.not_after:%Y-%m-%d}"

    @admin.display(description="serial", ordering="serial")
    def serial_short(self, row: Certificate) -> str:
        return format_html('<span title="{}">{}…</span>', row.serial, row.serial[:10])

    @admin.display(description="certificate (PEM)")
    def pem_shown(self, row: Certificate) -> str:
        return format_html('<pre class="xa-pem">{}</pre>', row.pem)

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        delete = actions.pop("delete_selected", None)
        if delete is not None:  # the irreversible and rarely right action last, below revoke/hold/release
            actions["delete_selected"] = delete
        return actions

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # issued from an account, or imported from PEM

    def has_delete_permission(self, request: HttpRequest, obj: Certificate | None = None) -> bool:
        # Revoked and held rows are what our CRL is built from (Certificate.deletion_refused_reason).
        if obj is not None and obj.deletion_refused_reason() is not None:
            return False
        return super().has_delete_permission(request, obj)

    def get_deleted_objects(self, objs, request: HttpRequest):
        """The bulk delete's confirmation: revoked and held rows are listed as protected, with why."""
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        refused = [reason for row in objs if (reason := row.deletion_refused_reason()) is not None]
        if refused and super().has_delete_permission(request):
            # The admin's page shows either the lacking permission or the protected rows: show why.
            perms_needed = perms_needed - {Certificate._meta.verbose_name}
        return deleted, model_count, perms_needed, [*protected, *refused]

    def get_urls(self):
        view = self.admin_site.admin_view
        own = [
            path(
                f"<int:certificate_id>/{name}/",
                view(self.status_view),
                {"operation": name},
                name=f"certauth_certificate_{name}",
            )
            for name in STATUS_OPERATIONS
        ]
        own.append(
            path(
                "<int:certificate_id>/download/<str:token>/",
                view(self.download_view),
                name="certauth_certificate_download",
            )
        )
        return own + super().get_urls()

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        row = self.get_object(request, object_id)
        extra: dict = {}
        if row is not None:
            extra = {
                "revoke_form": RevokeForm(),
                "may_change_status": self.has_change_permission(request, row),
                "downloads": downloads.offered(request, row.pk),
                "refused_deletion": row.deletion_refused_reason(),
            }
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    @method_decorator(require_POST)
    def status_view(self, request: HttpRequest, certificate_id: int, operation: str) -> HttpResponse:
        """Revoke (with a reason), hold or release one certificate: the buttons of its page and its
        account's page (POST with CSRF; change permission on certificates)."""
        row = get_object_or_404(Certificate, pk=certificate_id)
        if not self.has_change_permission(request, row):
            raise PermissionDenied
        call, done = STATUS_OPERATIONS[operation]
        if operation == "revoke":
            form = RevokeForm(request.POST)
            if not form.is_valid():
                self.message_user(request, "Choose a revocation reason.", messages.ERROR)
                return HttpResponseRedirect(safe_next(request, self._page(row)))
            args: tuple = (form.cleaned_data["reason"],)
        else:
            args = ()
        try:
            call(row, *args)
        except services.PkiError as exc:
            self.message_user(request, str(exc), messages.WARNING)
        else:
            self.log_change(request, row, done)
            self.message_user(request, f"Certificate {certificate_label(row)} ({row.serial}): {done}.")
        return HttpResponseRedirect(safe_next(request, self._page(row)))

    def download_view(self, request: HttpRequest, certificate_id: int, token: str) -> HttpResponse:
        """The one-time download of the file made when the certificate was issued (certauth.downloads)."""
        row = get_object_or_404(Certificate, pk=certificate_id)
        if not self.has_view_permission(request, row):
            raise PermissionDenied
        taken = downloads.take(request, row.pk, token)
        if taken is None:
            self.message_user(
                request,
                "That download is gone: it is offered once, for 15 minutes. Issue a new certificate if the "
                "file was lost.",
                messages.WARNING,
            )
            return HttpResponseRedirect(self._page(row))
        data, filename, content_type = taken
        return attachment(data, filename, content_type)

    @staticmethod
    def _page(row: Certificate) -> str:
        return reverse("admin:certauth_certificate_change", args=[row.pk])

    def _apply(self, request: HttpRequest, queryset, operation, verb: str) -> None:
        done = 0
        for row in queryset:
            try:
                operation(row)
            except services.PkiError as exc:
                self.message_user(request, str(exc), messages.WARNING)
            else:
                done += 1
                self.log_change(request, row, verb)
        if done:
            self.message_user(request, f"{verb}: {done} certificate(s)")

    @admin.action(description="Revoke the selected certificates")
    def revoke_action(self, request: HttpRequest, queryset) -> HttpResponse | None:
        form = RevokeForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            reason = form.cleaned_data["reason"]
            self._apply(request, queryset, lambda row: services.revoke(row, reason), "revoked")
            return None
        hidden = [("action", "revoke_action"), ("apply", "1")]
        hidden += [
            (admin.helpers.ACTION_CHECKBOX_NAME, str(pk)) for pk in queryset.values_list("pk", flat=True)
        ]
        names = ", ".join(str(row) for row in queryset[:10])
        return form_page(
            request,
            "Revoke certificates",
            form,
            submit_label="Revoke",
            hidden=hidden,
            intro=f"Revoke for good: {names}. Live sessions using them are ended.",
        )

    @admin.action(description="Put the selected certificates on hold")
    def hold_action(self, request: HttpRequest, queryset) -> None:
        self._apply(request, queryset, services.hold, "put on hold")

    @admin.action(description="Release the selected certificates from hold")
    def release_action(self, request: HttpRequest, queryset) -> None:
        self._apply(request, queryset, services.release, "released from hold")

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_change_permission(request):
            return HttpResponse(status=403)
        form = ImportCertificateForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            account = None
            if data["account_jid"]:
                try:
                    account = Account.objects.by_jid(data["account_jid"].strip())
                except Account.DoesNotExist:
                    form.add_error("account_jid", "No such account.")
            if not form.errors:
                try:
                    row = services.import_certificate(data["pem"], account=account)
                except services.PkiError as exc:
                    form.add_error("pem", str(exc))
                else:
                    self.log_addition(request, row, "imported from PEM")
                    self.message_user(request, f"imported certificate {row.serial}")
                    return self._back_to_changelist()
        return form_page(request, "Import a client certificate", form, submit_label="Import")


class CrlSourceForm(forms.ModelForm):
    """Operators add http(s) URLs; distribution points and tls.crl_files are found by certauth.crlsources."""

    class Meta:
        model = CrlSource
        fields = ["ca", "location", "fail_open", "refresh_interval_seconds"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if "ca" in self.fields:
            self.fields["ca"].queryset = CertificateAuthority.objects.filter(encrypted_private_key=None)
            self.fields["ca"].help_text = "An imported CA (our own CAs need no CRL source)."
        if "location" in self.fields:
            self.fields["location"].help_text = "http:// or https:// URL of the CA's CRL (PEM or DER)."

    def clean_location(self) -> str:
        location = self.cleaned_data["location"].strip()
        if self.instance.pk is None and not location.lower().startswith(("http://", "https://")):
            raise forms.ValidationError("Enter an http:// or https:// URL.")
        return location


@admin.register(CrlSource)
class CrlSourceAdmin(admin.ModelAdmin):
    form = CrlSourceForm
    list_display = [
        "ca",
        "kind",
        "location",
        "state_display",
        "last_success_at",
        "next_update",
        "next_refresh_at",
        "last_error",
        "fail_open",
    ]
    list_filter = ["state", "kind", "fail_open", "ca"]
    search_fields = ["location", "ca__name"]
    readonly_fields = [
        "state",
        "last_attempt_at",
        "last_success_at",
        "this_update",
        "next_update",
        "crl_number",
        "next_refresh_at",
        "failing_since",
        "consecutive_failures",
        "last_error",
    ]
    actions = ["refresh_now_action"]

    def get_fields(self, request: HttpRequest, obj: CrlSource | None = None) -> list[str]:
        if obj is None:  # adding: an operator URL
            return ["ca", "location", "fail_open", "refresh_interval_seconds"]
        return ["ca", "kind", "location", "fail_open", "refresh_interval_seconds", *self.readonly_fields]

    def get_readonly_fields(self, request: HttpRequest, obj: CrlSource | None = None) -> list[str]:
        if obj is None:
            return []
        return ["ca", "kind", "location", *self.readonly_fields]

    def save_model(self, request: HttpRequest, obj: CrlSource, form, change: bool) -> None:
        if not change:
            obj.kind = CrlSource.Kind.OPERATOR_URL
            obj.next_refresh_at = None  # due at once
        super().save_model(request, obj, form, change)

    @admin.display(description="state", ordering="state")
    def state_display(self, source: CrlSource) -> str:
        now = timezone.now()
        has_crl = source.last_success_at is not None or source.next_update is not None
        stale = crlpolicy.staleness(
            now,
            next_update=source.next_update,
            failing_since=None if has_crl else source.failing_since,
            grace=timedelta(seconds=settings.XMPP.options.crl_grace_seconds),
        )
        if stale is not None:
            return f"stale since {stale.since:%Y-%m-%d %H:%M} ({stale.what})"
        return source.get_state_display()

    @admin.action(description="Refresh the selected CRL sources now")
    def refresh_now_action(self, request: HttpRequest, queryset) -> None:
        for source in queryset:
            outcome = crlfetch.refresh_source(source)
            level = messages.SUCCESS if outcome.ok else messages.WARNING
            self.message_user(request, f"{source.location}: {outcome.message}", level)


@admin.register(RevokedSerial)
class RevokedSerialAdmin(admin.ModelAdmin):
    list_display = ["serial", "ca", "revoked_at", "reason", "source"]
    list_filter = ["ca", "reason"]
    search_fields = ["serial"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(SelfSignedPin)
class SelfSignedPinAdmin(admin.ModelAdmin):
    """Every pin (``selfsigned_peer``); they are added on the account's page, deleting one clears it."""

    list_display = ["account", "fingerprint_sha256", "origin", "created_at", "peer", "transport"]
    fields = ["account", "fingerprint_sha256", "origin", "subject", "created_at", "peer", "transport"]
    list_filter = ["origin"]
    search_fields = ["account__localpart", "account__domain__name", "fingerprint_sha256", "subject", "peer"]
    list_select_related = ["account__domain"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(AuthEvent)
class AuthEventAdmin(admin.ModelAdmin):
    list_display = ["when", "outcome_display", "transport", "jid_display", "peer", "reason"]
    list_filter = ["outcome", "transport", "condition"]
    search_fields = ["jid_requested", "jid_granted", "cert_fingerprint", "cert_subject", "peer", "reason"]
    date_hierarchy = "time"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="time", ordering="time")
    def when(self, event: AuthEvent) -> str:
        return f"{timezone.localtime(event.time):%Y-%m-%d %H:%M:%S}"

    @admin.display(description="outcome", ordering="outcome")
    def outcome_display(self, event: AuthEvent) -> str:
        condition = f": {event.condition}" if event.condition else ""
        return format_html(
            '<span class="xa-status xa-{}">{}</span>{}', event.outcome, event.outcome, condition
        )

    @admin.display(description="JID (granted, else asked for)", ordering="jid_granted")
    def jid_display(self, event: AuthEvent) -> str:
        return event.jid_granted or event.jid_requested or "-"


# --- The account page's certificate parts (accounts.admin.AccountSection): issue, sign a CSR, pins, events


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


@admin.display(description="certificates")
def certificate_count(account: Account) -> int:
    return account.certificates.count()


@admin.display(description="self-signed pins")
def pin_count(account: Account) -> int:
    return account.selfsigned_pins.count()


@admin.display(description="certificate actions")
def certificate_actions(account: Account) -> str:
    if account.pk is None:
        return "-"
    return format_html(
        '<a class="button" href="{}">Issue a certificate</a> <a class="button" href="{}">Sign a CSR</a>',
        reverse("admin:accounts_account_issue", args=[account.pk]),
        reverse("admin:accounts_account_sign_csr", args=[account.pk]),
    )


@admin.display(description="self-signed certificates")
def selfsigned_pin_actions(account: Account) -> str:
    if account.pk is None:
        return "-"
    return format_html(
        '<a class="button" href="{}">Pin a self-signed certificate</a> '
        '<a class="button" href="{}">Clear all pins</a>',
        reverse("admin:accounts_account_pin", args=[account.pk]),
        reverse("admin:accounts_account_clear_pins", args=[account.pk]),
    )


@admin.action(description="Issue a certificate for the selected account")
def issue_certificate_action(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset
) -> HttpResponse | None:
    if queryset.count() != 1:
        modeladmin.message_user(
            request, "Select exactly one account to issue a certificate for.", messages.WARNING
        )
        return None
    return HttpResponseRedirect(reverse("admin:accounts_account_issue", args=[queryset.get().pk]))


class AccountCertificateViews:
    """The certificate operations of an account's page, each a thin caller of ``certauth.services`` or
    ``certauth.pins``, with the account admin's permissions, change log and messages."""

    def __init__(self, account_admin: admin.ModelAdmin) -> None:
        self.account_admin = account_admin

    def _account(self, request: HttpRequest, account_id: int) -> Account:
        account = get_object_or_404(Account.objects.select_related("domain"), pk=account_id)
        if not self.account_admin.has_change_permission(request, account):
            raise PermissionDenied
        return account

    @staticmethod
    def _back(account: Account) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:accounts_account_change", args=[account.pk]))

    def issue_view(self, request: HttpRequest, account_id: int) -> HttpResponse:
        account = self._account(request, account_id)
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
        self.account_admin.log_change(request, account, f"issued certificate {issued.row.serial}")
        self.account_admin.message_user(
            request,
            f"Issued certificate {issued.row.serial} for {account.jid}, valid until "
            f"{issued.row.not_after:%Y-%m-%d}. Download {filename} below (offered once).",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:certauth_certificate_change", args=[issued.row.pk]))

    def sign_csr_view(self, request: HttpRequest, account_id: int) -> HttpResponse:
        account = self._account(request, account_id)
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
                self.account_admin.log_change(request, account, f"signed a CSR: certificate {row.serial}")
                cert = pki.load_certificate(row.pem.encode())
                return attachment(
                    pki.certificate_to_pem(cert).encode(), f"{account.jid}.crt.pem", "application/x-pem-file"
                )
        return form_page(request, f"Sign a CSR for {account.jid}", form, submit_label="Sign")

    def pin_view(self, request: HttpRequest, account_id: int) -> HttpResponse:
        account = self._account(request, account_id)
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
                self.account_admin.log_change(
                    request, account, f"pinned self-signed certificate {pin.fingerprint_sha256}"
                )
                self.account_admin.message_user(request, f"Self-signed certificate pinned to {account.jid}.")
                return self._back(account)
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
        account = self._account(request, account_id)
        if request.method == "POST":
            count = pins.clear_pins(account)
            self.account_admin.log_change(request, account, f"cleared {count} self-signed certificate pin(s)")
            self.account_admin.message_user(
                request,
                f"Cleared {count} pin(s) of {account.jid}; its next self-signed login pins again.",
            )
            return self._back(account)
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


ACCOUNT_CERTIFICATES = 50  # the newest certificates of an account: listed, and whose auth events are shown


class AccountCertificatesSection(AccountSection):
    """The account's certificates (with revoke, hold and release), its pins, and issuing or signing for it."""

    key = "certificates"
    order = 10
    readonly = (certificate_actions, selfsigned_pin_actions)
    columns = (certificate_count, pin_count)
    inlines = (SelfSignedPinInline,)
    actions = (issue_certificate_action,)

    def urls(self, account_admin: admin.ModelAdmin) -> list[URLPattern]:
        views = AccountCertificateViews(account_admin)
        wrap = account_admin.admin_site.admin_view
        return [
            path(
                "<int:account_id>/issue-certificate/", wrap(views.issue_view), name="accounts_account_issue"
            ),
            path("<int:account_id>/sign-csr/", wrap(views.sign_csr_view), name="accounts_account_sign_csr"),
            path("<int:account_id>/pin-selfsigned/", wrap(views.pin_view), name="accounts_account_pin"),
            path(
                "<int:account_id>/clear-pins/",
                wrap(views.clear_pins_view),
                name="accounts_account_clear_pins",
            ),
        ]

    def panel(self, account_admin: admin.ModelAdmin, request: HttpRequest, account: Account) -> AccountPanel:
        newest = account.certificates.select_related("issuer").order_by("-created_at")
        certificates = list(newest[:ACCOUNT_CERTIFICATES])
        may_change = account_admin.admin_site.get_model_admin(Certificate).has_change_permission(request)
        return AccountPanel(
            "certificates",
            "Certificates",
            "admin/certauth/account/panel_certificates.html",
            {"certificates": certificates, "revoke_form": RevokeForm(), "may_change": may_change},
        )


RECENT_EVENTS = 15  # auth events on the account page


class AccountAuthEventsSection(AccountSection):
    """The account's last auth events: by the JID asked for or granted, or by one of its certificates."""

    key = "events"
    order = 30

    def panel(self, account_admin: admin.ModelAdmin, request: HttpRequest, account: Account) -> AccountPanel:
        fingerprints = account.certificates.order_by("-created_at").values_list(
            "fingerprint_sha256", flat=True
        )
        jid = account.jid
        events = AuthEvent.objects.filter(
            Q(jid_granted=jid)
            | Q(jid_requested=jid)
            | Q(cert_fingerprint__in=list(fingerprints[:ACCOUNT_CERTIFICATES]))
        ).order_by("-time")[:RECENT_EVENTS]
        return AccountPanel(
            "events",
            f"Last {RECENT_EVENTS} auth events",
            "admin/certauth/account/panel_events.html",
            {"events": list(events), "all_events": reverse("admin:certauth_authevent_changelist")},
        )


register_account_section(AccountCertificatesSection())
register_account_section(AccountAuthEventsSection())
