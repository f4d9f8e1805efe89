"""Strophe.js (Node) logs in over wss with SASL EXTERNAL (RFC 7395, XEP-0178): peer and selfsigned_peer.

A certificate of the trusted CA logs in with the JID of its xmppAddr; a self-signed certificate is refused
under ``peer`` and accepted under ``selfsigned_peer``; a certificate of an unknown CA is refused in both; with
no certificate EXTERNAL is not offered. "Refused" means EXTERNAL is not offered (DESIGN §4: it is offered only
with a verified certificate), as the listeners keep such connections (``disconnect_on_failure = false``).
"""

from __future__ import annotations

import pytest

from tests.transport.xmpphttp import MODES, start_server, strophe_login

SCHEME = "wss"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from start_server(tmp_path_factory.mktemp(f"{SCHEME}-strophe"))


@pytest.mark.parametrize("mode", MODES)
def test_certificate_of_the_trusted_ca_logs_in_as_its_xmppaddr(server, mode):
    verdict = strophe_login(server, server.url(mode, SCHEME), server.pki.valid)
    assert verdict["status"] == "connected", verdict
    assert verdict["jid"].split("/")[0] == "alice@localhost"
    assert verdict["mechanisms"] == ["EXTERNAL"]
    assert verdict["auth"] == "" and verdict["response"] == ""  # empty <auth/>, empty <response/>


def test_self_signed_certificate_is_refused_under_peer(server):
    verdict = strophe_login(server, server.url("peer", SCHEME), server.pki.self_signed, "carol@localhost")
    assert verdict["status"] == "no-external", verdict


def test_self_signed_certificate_logs_in_under_selfsigned_peer(server):
    verdict = strophe_login(
        server, server.url("selfsigned_peer", SCHEME), server.pki.self_signed, "carol@localhost"
    )
    assert verdict["status"] == "connected", verdict
    assert verdict["jid"].split("/")[0] == "carol@localhost"


@pytest.mark.parametrize("mode", MODES)
def test_certificate_of_an_unknown_ca_is_refused(server, mode):
    verdict = strophe_login(server, server.url(mode, SCHEME), server.pki.untrusted, "mallory@localhost")
    assert verdict["status"] == "no-external", verdict


@pytest.mark.parametrize("mode", MODES)
def test_without_a_certificate_external_is_not_offered(server, mode):
    verdict = strophe_login(server, server.url(mode, SCHEME), None)
    assert verdict["status"] == "no-external", verdict
    assert verdict["mechanisms"] == []
