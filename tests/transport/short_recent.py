"""``python -m tests.transport.short_recent runxmpp ...``: ``manage.py`` with the termination commands'
"recent" window (``transport.sessions.registry.RECENT``, 10 s) shrunk to ``XMPPAUTH_TEST_RECENT_SECONDS``
(default 1 s).

Time control for tests that bind beyond that window in a server process (tests/transport/xmpphttp.py), rather
than sleeping ten seconds; nothing else about the server changes.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xmppauth.settings")
    import django

    django.setup()
    from transport.sessions import registry as live  # after setup: it imports models

    live.RECENT = timedelta(seconds=float(os.environ.get("XMPPAUTH_TEST_RECENT_SECONDS", "1")))
    from django.core.management import execute_from_command_line

    execute_from_command_line(["manage.py", *sys.argv[1:]])


if __name__ == "__main__":
    main()
