"""The Celery app: CRL refresh and other periodic jobs (broker and results from REDIS_URL).

Workers: ``celery -A xmppauth worker -B``. With no REDIS_URL, settings make tasks run eagerly in-process
and ``runxmpp`` runs the same schedule itself.
"""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xmppauth.settings")

app = Celery("xmppauth")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _prepare_config_cas(**kwargs: object) -> None:
    """Config CAs as rows and tls.crl_files applied before the worker runs a job (stops on error)."""
    import django  # noqa: PLC0415
    from django.conf import settings  # noqa: PLC0415

    django.setup()
    from certauth.configcas import prepare_process_or_exit  # noqa: PLC0415 (needs the app registry)

    prepare_process_or_exit(settings.XMPP)
