"""Run a bench function against a throw-away copy of the configured database (Django's test database).

For the in-process micro-benchmarks (``bench.revocation``, ``bench.bind_check``): they create rows freely and
must never touch the database an operator uses.
"""

from __future__ import annotations

import os
from collections.abc import Callable


def in_test_database(run: Callable[[], None]) -> None:
    """Set Django up, create the test database, call ``run``, and destroy the database afterwards."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xmppauth.settings")
    import django  # after the settings module is chosen

    django.setup()
    from django.db import connection
    from django.test.utils import setup_test_environment

    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0)
    try:
        run()
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
