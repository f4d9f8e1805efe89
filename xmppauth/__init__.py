"""xmppauth: an XMPP server whose clients log in with TLS client certificates (XEP-0178)."""

from xmppauth.celery import app as celery_app

__all__ = ["celery_app"]
