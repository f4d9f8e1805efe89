"""``manage.py runxmpp`` (the embedded server) serves XMPP over wss (RFC 7395) and BOSH (XEP-0206) too.

One Strophe.js login over each, on the ``peer`` listener, and the refusal of a certificate of an unknown CA:
the same routes, consumers and certificate checks as under ``python -m transport.http.server``.
"""

from __future__ import annotations

import pytest

from certauth.userstatus import TEXT_UNTRUSTED
from tests.processes import SAME_ON_BOTH_LEGS
from tests.transport.xmpphttp import start_server, strophe_login

pytestmark = SAME_ON_BOTH_LEGS


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from start_server(tmp_path_factory.mktemp("runxmpp-ws-bosh"), runxmpp=True)


@pytest.mark.parametrize("scheme", ["wss", "https"])
def test_runxmpp_logs_strophe_in_with_external(server, scheme):
    verdict = strophe_login(server, server.url("peer", scheme), server.pki.valid)
    assert verdict["status"] == "connected", verdict
    assert verdict["jid"].split("/")[0] == "alice@localhost"


@pytest.mark.parametrize("scheme", ["wss", "https"])
def test_runxmpp_does_not_offer_external_to_an_unknown_ca(server, scheme):
    verdict = strophe_login(server, server.url("peer", scheme), server.pki.untrusted, "mallory@localhost")
    assert verdict["status"] == "connfail" and verdict["mechanisms"] is None, verdict  # EXTERNAL not offered
    assert verdict["stream_error"] == {"condition": "not-authorized", "text": TEXT_UNTRUSTED}, verdict
