"""transport.tls.trust_refresh: a listener's anchors follow the admin's CAs; unchanged anchors rebuild
nothing,
and a failed read leaves the listener as it was (logged). The c2s handshake effect: test_tcp_listener.py."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from certauth.pki.facts import fingerprint_sha256
from tests.transport.tlsclient import make_pki
from transport.tls.context import ServerTls
from transport.tls.trust_refresh import refresh_trust_anchors

# The read closes the pool thread's stale Django connections (close_old_connections), which pytest-django
# allows only in database tests; the anchors themselves are replaced below.
pytestmark = pytest.mark.django_db


@pytest.fixture
def listener_tls(tmp_path):
    pki = make_pki(tmp_path)
    return pki, ServerTls(pki.options(mode="tls"), [])


def refresh(on_reactor, reactor, server_tls) -> None:
    """One refresh, as the listener's LoopingCall runs it; returns when it is done."""
    on_reactor(lambda: refresh_trust_anchors(reactor, server_tls, "https"))


def test_new_anchors_are_applied_once_and_logged(listener_tls, on_reactor, reactor, monkeypatch, caplog):
    pki, server_tls = listener_tls
    anchors = SimpleNamespace(certificates=(pki.ca.cert,))
    monkeypatch.setattr("certauth.trust.trust_anchors", lambda _cafile: anchors)
    rebuilt = []
    update = server_tls.update_trust_anchors
    monkeypatch.setattr(server_tls, "update_trust_anchors", lambda new: (rebuilt.append(1), update(new)))
    with caplog.at_level(logging.INFO, logger="transport.tls.trust_refresh"):
        refresh(on_reactor, reactor, server_tls)
        refresh(on_reactor, reactor, server_tls)  # the same anchors again: nothing to rebuild
    assert server_tls.anchor_fingerprints == {fingerprint_sha256(pki.ca.cert)}
    assert rebuilt == [1]
    logged = [r.getMessage() for r in caplog.records]
    assert logged == ["https trust anchors changed: 1 now advertised and trusted"]


def test_a_failed_read_is_logged_and_leaves_the_anchors(
    listener_tls, on_reactor, reactor, monkeypatch, caplog
):
    _pki, server_tls = listener_tls

    def broken(_cafile):
        raise OSError("database unreachable")

    monkeypatch.setattr("certauth.trust.trust_anchors", broken)
    with caplog.at_level(logging.INFO, logger="transport.tls.trust_refresh"):
        refresh(on_reactor, reactor, server_tls)
    assert server_tls.anchor_fingerprints == set()
    assert [r.getMessage() for r in caplog.records] == ["https trust refresh failed: database unreachable"]
