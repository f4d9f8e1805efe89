"""The Celery app: CRL refresh and other periodic jobs (broker and results from REDIS_URL).

Workers: ``celery -A xmppauth worker -B``. With no REDIS_URL, settings make tasks run eagerly in-process
and ``runxmpp`` runs the same schedule itself.
"""

from __future__ import annotations

import logging.config
import os

from celery import Celery
from celery.signals import setup_logging, worker_init
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xmppauth.settings")

app = Celery("xmppauth")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def _django_logging(**kwargs: object) -> None:
    """Django's LOGGING (``XMPPAUTH_LOG_LEVEL``, INFO by default), not celery's ``--loglevel`` (WARNING by
    default, which hid every job run): with a receiver here, celery leaves logging alone, and beat's "Sending
    due task" and the worker's "Task ... succeeded in" lines show each job run at INFO."""
    logging.config.dictConfig(settings.LOGGING)


@worker_init.connect
def _prepare_config_cas(**kwargs: object) -> None:
    """Config CAs as rows and tls.crl_files applied before the worker runs a job (stops on error)."""
    import django

    django.setup()
    from certauth.configcas import prepare_process_or_exit  # needs the app registry

    prepare_process_or_exit(settings.XMPP)
