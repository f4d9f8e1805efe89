"""Shared plumbing for the admin's intermediate form pages."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib import admin
from django.forms import Form
from django.http import HttpRequest
from django.template.response import TemplateResponse


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
    return TemplateResponse(request, "admin/certauth/form.html", context)
