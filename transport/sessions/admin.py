"""Admin for the session registry: the live sessions of every process, and the action that ends one; the
account page's "Live sessions" panel (an ``accounts.admin.AccountSection``).

Spec: DESIGN §5 and §6 (an operator lists live sessions and ends them); the session ends with the stream error
``reset`` and the text "ended by the operator" (RFC 6120 §4.9.3.16: the session's authorisation is withdrawn).
"""

from __future__ import annotations

import uuid

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_POST

from accounts.admin import AccountPanel, AccountSection, register_account_section
from accounts.models import Account
from transport.sessions import terminations as sessions
from transport.sessions.models import LiveSession, SessionTermination
from xmppauth.adminviews import safe_next


@admin.register(LiveSession)
class LiveSessionAdmin(admin.ModelAdmin):
    list_display = [
        "full_jid",
        "transport",
        "peer",
        "short_fingerprint",
        "started_at",
        "process_id",
        "lease_expires_at",
        "lease_current",
    ]
    list_filter = ["transport", "process_id"]
    search_fields = ["full_jid", "peer", "cert_fingerprint", "cert_serial"]
    actions = ["end_sessions"]
    readonly_fields = [field.name for field in LiveSession._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # rows belong to the processes that hold the sessions

    def has_change_permission(self, request: HttpRequest, obj: LiveSession | None = None) -> bool:
        return False

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # a deleted row would hide a session that still lives
        return actions

    def get_urls(self):
        end = path(
            "<uuid:session_id>/end/",
            self.admin_site.admin_view(self.end_view),
            name="transport_livesession_end",
        )
        return [end, *super().get_urls()]

    @method_decorator(require_POST)
    def end_view(self, request: HttpRequest, session_id: uuid.UUID) -> HttpResponse:
        """The "end session" button (account page): POST with CSRF, delete permission on live sessions."""
        session = get_object_or_404(LiveSession, pk=session_id)
        if not self.has_delete_permission(request, session):
            raise PermissionDenied
        sessions.terminate_session(session.id)
        self.message_user(request, f"Session {session.full_jid} asked to end.", messages.SUCCESS)
        return HttpResponseRedirect(safe_next(request, reverse("admin:transport_livesession_changelist")))

    @admin.display(description="certificate")
    def short_fingerprint(self, session: LiveSession) -> str:
        return session.cert_fingerprint[:16] + "…" if session.cert_fingerprint else "—"

    @admin.display(description="lease current", boolean=True)
    def lease_current(self, session: LiveSession) -> bool:
        return session.lease_expires_at >= timezone.now()

    @admin.action(description="End the selected sessions", permissions=["delete"])
    def end_sessions(self, request: HttpRequest, queryset: QuerySet[LiveSession]) -> None:
        ids = list(queryset.values_list("id", flat=True))
        for session_id in ids:
            sessions.terminate_session(session_id)
        self.message_user(request, f"{len(ids)} session(s) asked to end.", messages.SUCCESS)


@admin.register(SessionTermination)
class SessionTerminationAdmin(admin.ModelAdmin):
    """The commands of the last day (read only): what ended sessions, and why."""

    list_display = ["id", "created_at", "target", "what", "condition", "text"]
    list_filter = ["target", "condition"]
    readonly_fields = [field.name for field in SessionTermination._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: SessionTermination | None = None) -> bool:
        return False

    @admin.display(description="matches")
    def what(self, command: SessionTermination) -> str:
        if command.target == SessionTermination.Target.ISSUER_SERIAL:
            return f"CA #{command.issuer_ca_id} serial {command.serial}"
        if command.target == SessionTermination.Target.SESSION and command.serial:  # a CRL listed its serial
            return f"session {command.session_id} (CA #{command.issuer_ca_id} serial {command.serial})"
        return command.fingerprint or command.bare_jid or str(command.session_id or "")


class AccountSessionsSection(AccountSection):
    """The account's live sessions, each with an "End session" button (``LiveSessionAdmin.end_view``)."""

    key = "sessions"
    order = 20

    def panel(self, account_admin: admin.ModelAdmin, request: HttpRequest, account: Account) -> AccountPanel:
        may_end = account_admin.admin_site.get_model_admin(LiveSession).has_delete_permission(request)
        return AccountPanel(
            "sessions",
            "Live sessions",
            "admin/transport/account/panel_sessions.html",
            {"sessions": LiveSession.objects.filter(bare_jid=account.jid.lower()), "may_end": may_end},
        )


register_account_section(AccountSessionsSection())
