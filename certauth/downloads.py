"""One-time downloads of a freshly issued ``.p12`` / PEM bundle, offered on the new certificate's page.

The issue form redirects to the certificate's page (nothing left filled in); the file it produced waits in the
operator's own session until it is downloaded once or ``TTL`` has passed, whichever comes first. It is the
password-encrypted PKCS#12 (or PEM with an encrypted key) the form made, never the bare private key, and it is
kept nowhere else (the session row is the only copy; a download or the TTL removes it).
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass

from django.http import HttpRequest

SESSION_KEY = "xmppauth.pending_downloads"
TTL_SECONDS = 15 * 60


@dataclass(frozen=True)
class PendingDownload:
    token: str
    certificate_id: int
    filename: str
    content_type: str


def _pending(request: HttpRequest) -> dict[str, dict]:
    """The session's pending downloads, without those past their TTL (dropped from the session)."""
    stored: dict[str, dict] = request.session.get(SESSION_KEY, {})
    now = time.time()
    fresh = {token: item for token, item in stored.items() if item["expires"] > now}
    if fresh != stored:
        request.session[SESSION_KEY] = fresh
    return fresh


def offer(request: HttpRequest, certificate_id: int, data: bytes, filename: str, content_type: str) -> str:
    """Keep ``data`` for one download by this session; returns its token."""
    token = secrets.token_urlsafe(24)
    pending = _pending(request)
    pending[token] = {
        "certificate": certificate_id,
        "filename": filename,
        "content_type": content_type,
        "data": base64.b64encode(data).decode("ascii"),
        "expires": time.time() + TTL_SECONDS,
    }
    request.session[SESSION_KEY] = pending
    return token


def offered(request: HttpRequest, certificate_id: int) -> list[PendingDownload]:
    """The downloads waiting for this certificate in this session."""
    return [
        PendingDownload(token, item["certificate"], item["filename"], item["content_type"])
        for token, item in _pending(request).items()
        if item["certificate"] == certificate_id
    ]


def take(request: HttpRequest, certificate_id: int, token: str) -> tuple[bytes, str, str] | None:
    """The file behind ``token`` as (data, filename, content type), removed from the session; None if gone."""
    pending = _pending(request)
    item = pending.get(token)
    if item is None or item["certificate"] != certificate_id:
        return None
    del pending[token]
    request.session[SESSION_KEY] = pending
    return base64.b64decode(item["data"]), item["filename"], item["content_type"]
