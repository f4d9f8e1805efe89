"""Shared plumbing of the admin pages every app adds: intermediate form pages, file downloads, the ``next``
URL of a button. Django only, no app: the apps' ``admin.py`` modules import it."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib import admin
from django.forms import Form
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme


def form_page(
    request: HttpRequest,
    title: str,
    form: Form,
    *,
    submit_label: str,
    intro: str = "",
    hidden: Iterable[tuple[str, str]] = (),
) -> TemplateResponse:
    context = {
        **admin.site.each_context(request),
        "title": title,
        "form": form,
        "submit_label": submit_label,
        "intro": intro,
        "hidden": list(hidden),
    }
    return TemplateResponse(request, "admin/xmppauth_form.html", context)


def attachment(data: bytes, filename: str, content_type: str) -> HttpResponse:
    """A file download that no cache keeps (certificates, keys, CRLs handed to the operator)."""
    response = HttpResponse(data, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


def safe_next(request: HttpRequest, fallback: str) -> str:
    """The ``next`` URL of a POST if it is one of ours under the admin, else ``fallback``."""
    target = request.POST.get("next", "")
    if target.startswith(reverse("admin:index")) and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}
    ):
        return target
    return fallback
