"""The admin site of xmppauth: the product's name in the header, no "View site" (there is no public
site), human names for the models in the app list, and the operator's dashboard as its index
(``xmppauth.dashboard``).

Installed as Django's default admin site (``xmppauth.apps.XmppauthAdminConfig``), so ``admin.site`` and every
``@admin.register`` use it. Part of the composition root (docs/ARCHITECTURE.md): its index shows every app.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse

# Model names as the app list shows them (the models' verbose names are kept: changing them is a migration).
MODEL_NAMES = {
    ("certauth", "crlsource"): "CRL sources",
    ("certauth", "revokedserial"): "Serials revoked by imported CAs' CRLs",
    ("certauth", "authevent"): "Auth events (login attempts)",
    ("certauth", "certificateauthority"): "Certificate authorities (CAs)",
    ("transport", "livesession"): "Live sessions",
    ("transport", "sessiontermination"): "Session terminations (last day)",
    ("accounts", "rosteritem"): "Roster items",
    ("accounts", "offlinemessage"): "Offline messages",
}


class XmppauthAdminSite(admin.AdminSite):
    site_header = "xmppauth"
    site_title = "xmppauth admin"
    index_title = "Overview"
    site_url = None  # no public site to view: the link is not shown
    enable_nav_sidebar = False  # its 300 px are the lists' last columns at 1280 px; the index lists models
    index_template = "admin/xmppauth_index.html"

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[dict]:
        apps = super().get_app_list(request, app_label)
        for app in apps:
            for model in app["models"]:
                key = (app["app_label"], model["object_name"].lower())
                model["name"] = MODEL_NAMES.get(key, model["name"])
        return apps

    def index(self, request: HttpRequest, extra_context: dict | None = None) -> TemplateResponse:
        from xmppauth import dashboard  # imports the apps' models: not at settings time

        return super().index(request, {"dashboard": dashboard.collect(), **(extra_context or {})})
