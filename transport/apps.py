from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.backends.signals import connection_created


def _sqlite_wal(sender: Any, connection: Any, **_: Any) -> None:
    """SQLite shared by several processes (runc2s, daphne, the Celery worker): readers never wait for the
    writer and a writer waits (settings' ``timeout``) instead of failing with "database is locked"."""
    name = str(connection.settings_dict["NAME"])
    if connection.vendor == "sqlite" and name not in ("", ":memory:") and "mode=memory" not in name:
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode=WAL")


class TransportConfig(AppConfig):
    name = "transport"
    verbose_name = "XMPP transport"

    def ready(self) -> None:
        from transport import receivers  # noqa: PLC0415  (models are ready only now)

        receivers.connect_signals()
        connection_created.connect(_sqlite_wal, dispatch_uid="transport.sqlite_wal")
