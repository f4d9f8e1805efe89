"""Strophe.js (Node) over wss and BOSH against our daphne server: ``tls.cacert_domains`` (issue 11 point 10).

The server reads a TOML config with two hosted domains, ``localhost`` and ``b.localhost``, and trusts the
client CA through ``tls.cacertfile`` with ``tls.cacert_domains = ["localhost"]``. A certificate of that CA
logs in as a JID of ``localhost``; asserting a JID of ``b.localhost`` fails SASL with ``not-authorized``
(RFC 6120 §6.5.10), and the server's AuthEvent names the CA and the domain.
"""

from __future__ import annotations

import pytest

from tests.certs import make_client
from tests.processes import SAME_ON_BOTH_LEGS
from tests.transport.xmpphttp import start_server, strophe_login

pytestmark = SAME_ON_BOTH_LEGS

HOSTS = ("localhost", "b.localhost")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("strophe-domains")
    yield from start_server(directory, hosts=HOSTS, tls_extra='tls.cacert_domains = ["localhost"]')


@pytest.fixture(params=["wss", "https"], ids=["wss", "bosh"])
def scheme(request) -> str:
    return request.param


def test_cacertfile_ca_limited_to_localhost_logs_in_a_jid_of_localhost(server, scheme):
    alice = make_client(server.pki.ca, jids=["alice@localhost"])
    verdict = strophe_login(server, server.url("peer", scheme), alice, "alice@localhost")
    assert verdict["status"] == "connected", verdict
    assert verdict["jid"].split("/")[0] == "alice@localhost"


def test_cacertfile_ca_limited_to_localhost_asserting_a_jid_of_b_localhost_is_not_authorized(server, scheme):
    bob = make_client(server.pki.ca, jids=["bob@b.localhost"])
    verdict = strophe_login(server, server.url("peer", scheme), bob, "bob@b.localhost")
    assert verdict["status"] == "authfail", verdict
    assert verdict["sasl_failure"] == "not-authorized", verdict
    outcome, condition, jid, reason = server.last_auth_event()
    assert (outcome, condition, jid) == ("failure", "not-authorized", "bob@b.localhost")
    assert "xmppauth test client CA" in reason, reason
    assert reason.endswith("may vouch only for localhost, not for b.localhost"), reason
