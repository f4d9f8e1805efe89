"""Keeping a live TLS listener's trust anchors current: CAs trusted or distrusted in the admin reach the
handshake (the CA list sent, and what ``disconnect_on_failure`` refuses) without a restart (DESIGN §3).

Every listener (c2s in ``transport.tcp.listener``, HTTPS in ``transport.http.tls_endpoint``) runs
:func:`refresh_trust_anchors` from a ``LoopingCall``: the anchors are read in a pool thread
(``certauth.trust`` caches them per process for a few seconds) and the listener's context is rebuilt on the
reactor thread only when they changed.
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.internet import defer

from certauth.pki.facts import fingerprint_sha256
from transport.tls.context import ServerTls
from transport.workers import defer_to_worker
from xmppauth.dbconn import with_fresh_connections

logger = logging.getLogger(__name__)


def refresh_trust_anchors(reactor: Any, server_tls: ServerTls, label: str) -> defer.Deferred:
    """Re-read the CA rows that are anchors for ``server_tls``'s ``tls.cacertfile`` (``certauth.trust``: its
    config CAs plus the admin's); ``label`` names the listener kind in the logs (c2s, https)."""
    from certauth.trust import trust_anchors  # needs the app registry

    def read() -> list[Any]:
        return list(with_fresh_connections(trust_anchors, server_tls.options.cacertfile).certificates)

    def apply(anchors: list[Any]) -> None:
        if {fingerprint_sha256(a) for a in anchors} != server_tls.anchor_fingerprints:
            server_tls.update_trust_anchors(anchors)
            logger.info("%s trust anchors changed: %d now advertised and trusted", label, len(anchors))

    deferred = defer_to_worker(reactor, read)
    deferred.addCallback(apply)
    deferred.addErrback(lambda failure: logger.error("%s trust refresh failed: %s", label, failure.value))
    return deferred
