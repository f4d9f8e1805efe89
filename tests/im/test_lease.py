"""The session registry's lease comes from ``[xmppauth] session_lease_seconds`` (a dead process's sessions
expire that long after its last heartbeat)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from django.conf import settings

from transport.sessions import terminations as sessions


def test_lease_is_the_configured_session_lease_seconds(monkeypatch):
    config = settings.XMPP
    options = dataclasses.replace(config.options, session_lease_seconds=7)
    monkeypatch.setattr(settings, "XMPP", dataclasses.replace(config, options=options))
    assert sessions.lease() == timedelta(seconds=7)
