"""The Celery app: CRL refresh and other periodic jobs (broker and results from REDIS_URL).

Workers: ``celery -A xmppauth worker -B``. With no REDIS_URL, settings make tasks run eagerly in-process
and ``runxmpp`` runs the same schedule itself.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xmppauth.settings")

app = Celery("xmppauth")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
