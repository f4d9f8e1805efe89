"""Strophe.js (Node) logs in with SASL EXTERNAL (XEP-0178) over wss (RFC 7395) and BOSH (XEP-0206).

Every test runs over both transports (``scheme``: ``wss`` and ``https`` for BOSH), in ``peer`` and
``selfsigned_peer`` modes.

A certificate of the trusted CA logs in with the JID of its xmppAddr; a self-signed certificate is refused
under ``peer`` and accepted under ``selfsigned_peer``; a certificate of an unknown CA is refused in both; with
no certificate EXTERNAL is not offered. "Refused" means EXTERNAL is not offered (DESIGN §4: it is offered only
with a verified certificate), as the listeners keep such connections (``disconnect_on_failure = false``); with
nothing else to offer, the stream ends with ``not-authorized`` and the certificate's status (issue 18 §5).
"""

from __future__ import annotations

import pytest

from certauth.userstatus import TEXT_UNTRUSTED
from tests.processes import SAME_ON_BOTH_LEGS
from tests.transport.xmpphttp import MODES, start_server, strophe_login

pytestmark = SAME_ON_BOTH_LEGS


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from start_server(tmp_path_factory.mktemp("strophe"))


def assert_told_untrusted(verdict: dict) -> None:
    """EXTERNAL not offered and nothing else: the stream ended with the certificate's status, no features."""
    assert verdict["status"] == "connfail" and verdict["mechanisms"] is None, verdict
    assert verdict["stream_error"] == {"condition": "not-authorized", "text": TEXT_UNTRUSTED}, verdict


@pytest.fixture(params=["wss", "https"], ids=["wss", "bosh"])
def scheme(request) -> str:
    return request.param


@pytest.mark.parametrize("mode", MODES)
def test_certificate_of_the_trusted_ca_logs_in_as_its_xmppaddr(server, scheme, mode):
    verdict = strophe_login(server, server.url(mode, scheme), server.pki.valid)
    assert verdict["status"] == "connected", verdict
    assert verdict["jid"].split("/")[0] == "alice@localhost"
    assert verdict["mechanisms"] == ["EXTERNAL"]
    assert verdict["auth"] == "" and verdict["response"] == ""  # empty <auth/>, empty <response/>


def test_self_signed_certificate_is_refused_under_peer(server, scheme):
    verdict = strophe_login(server, server.url("peer", scheme), server.pki.self_signed, "carol@localhost")
    assert_told_untrusted(verdict)


def test_self_signed_certificate_logs_in_under_selfsigned_peer(server, scheme):
    verdict = strophe_login(
        server, server.url("selfsigned_peer", scheme), server.pki.self_signed, "carol@localhost"
    )
    assert verdict["status"] == "connected", verdict
    assert verdict["jid"].split("/")[0] == "carol@localhost"


@pytest.mark.parametrize("mode", MODES)
def test_certificate_of_an_unknown_ca_is_refused(server, scheme, mode):
    verdict = strophe_login(server, server.url(mode, scheme), server.pki.untrusted, "mallory@localhost")
    assert_told_untrusted(verdict)


@pytest.mark.parametrize("mode", MODES)
def test_without_a_certificate_external_is_not_offered(server, scheme, mode):
    verdict = strophe_login(server, server.url(mode, scheme), None)
    assert verdict["status"] == "no-external", verdict
    assert verdict["mechanisms"] == []
