"""The seed's Gajim recipe end to end over wss and BOSH (issue 14 §4): Strophe.js logs in with its v1
certificate.

The recipe runs with the real ``openssl`` command line (tests/opensslcli.py); its ``rootCA.crt`` is every
listener's ``tls.cacertfile`` and ``auth.sasl_external = ["standard", "common_name"]``. The v1 paths we refuse
are refused both ways: on the listeners that keep the connection EXTERNAL is not offered: the self-signed
leaf reads its status in a ``not-authorized`` stream error (issue 18 §5), the others see no mechanism
(Strophe: "no-external") and, sent anyway (a raw WebSocket client), EXTERNAL fails with ``not-authorized``;
the server's AuthEvent names the rule. On the ``disconnect_on_failure = true`` listener the client never
sees features.
"""

from __future__ import annotations

import dataclasses
from xml.etree.ElementTree import fromstring

import pytest
from websockets.sync.client import connect

from certauth.userstatus import user_text
from tests.opensslcli import REFUSED_V1_PATHS, shared_recipe
from tests.processes import SAME_ON_BOTH_LEGS
from tests.transport.streamkit import condition_of
from tests.transport.tlsclient import make_pki, websockets_context
from tests.transport.xmpphttp import start_server, strophe_login
from transport.xmpp import namespaces as ns

pytestmark = SAME_ON_BOTH_LEGS

CN_AUTH = """
[auth]
  sasl_external = ["standard", "common_name"]
"""
OPEN = "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>"
EXTERNAL = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>"


@pytest.fixture(scope="module")
def paths():
    return shared_recipe()


@pytest.fixture(scope="module")
def server(tmp_path_factory, paths):
    directory = tmp_path_factory.mktemp("strophe-gajim")
    # rootCA.crt becomes the listeners' tls.cacertfile
    pki = dataclasses.replace(make_pki(directory), ca=paths.recipe.root)
    yield from start_server(directory, pki=pki, extra_toml=CN_AUTH)


@pytest.fixture(params=["wss", "https"], ids=["wss", "bosh"])
def scheme(request) -> str:
    return request.param


@pytest.mark.parametrize("listener", ["peer", "selfsigned_peer", "strict"])
def test_recipe_certificate_logs_in_as_its_common_name(server, paths, scheme, listener):
    verdict = strophe_login(server, server.url(listener, scheme), paths.recipe.client, "alice@localhost")
    assert verdict["status"] == "connected", verdict
    assert verdict["jid"].split("/")[0] == "alice@localhost" and verdict["mechanisms"] == ["EXTERNAL"]
    assert server.last_auth_event()[:3] == ("success", "", "alice@localhost")


def test_self_signed_v1_certificate_logs_in_under_selfsigned_peer(server, paths, scheme):
    verdict = strophe_login(server, server.url("selfsigned_peer", scheme), paths.self_v1, "erin@localhost")
    assert verdict["status"] == "connected", verdict
    assert verdict["jid"].split("/")[0] == "erin@localhost"


REFUSED = REFUSED_V1_PATHS


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_certificate_is_not_offered_external_and_told_its_status_when_it_has_one(
    server, paths, scheme, case
):
    field, listener, reason = REFUSED[case]
    client = getattr(paths, field)
    verdict = strophe_login(
        server, server.url(listener, scheme), client, f"{client.facts.common_name}@localhost"
    )
    if text := user_text(reason):  # the leaf's own status: the stream ends with it (RFC 6120 §4.9.3.12)
        assert verdict["status"] == "connfail" and verdict["mechanisms"] is None, verdict
        assert verdict["stream_error"] == {"condition": "not-authorized", "text": text}, verdict
    else:
        assert verdict["status"] == "no-external" and verdict["mechanisms"] == [], verdict
    outcome, _, _, recorded = server.last_auth_event()
    assert (outcome, recorded) == ("failure", f"certificate refused: {reason}")


SILENT = sorted(case for case, (_, _, reason) in REFUSED.items() if not user_text(reason))  # no own status


@pytest.mark.parametrize("case", SILENT)
def test_refused_certificate_sending_external_anyway_is_not_authorized(server, paths, tmp_path, case):
    field, listener, _ = REFUSED[case]
    context = websockets_context(tmp_path, getattr(paths, field))
    with connect(server.url(listener, "wss"), ssl=context, subprotocols=["xmpp"], open_timeout=10) as conn:
        conn.send(OPEN)
        opened, features = fromstring(conn.recv(timeout=10)), fromstring(conn.recv(timeout=10))
        assert opened.tag == ns.WS_OPEN and features.tag == ns.FEATURES
        assert [m.text for m in features.iter(f"{{{ns.SASL}}}mechanism")] == []
        conn.send(EXTERNAL)
        failure = fromstring(conn.recv(timeout=10))
    assert failure.tag == f"{{{ns.SASL}}}failure"
    assert condition_of(failure, ns.SASL) == "not-authorized"


@pytest.mark.parametrize(
    "case", sorted(case for case, (_, listener, _) in REFUSED.items() if listener == "peer")
)
def test_refused_certificate_on_the_disconnecting_listener_sees_no_features(server, paths, scheme, case):
    client = getattr(paths, REFUSED[case][0])
    verdict = strophe_login(
        server, server.url("strict", scheme), client, f"{client.facts.common_name}@localhost"
    )
    # Refused before any features: the WebSocket fails; BOSH gives up on failing requests, or its first one
    # is answered 403 (a handshake the TLS layer let through, refused by our check): no 20 s "timeout"
    assert verdict["status"] in (("connfail",) if scheme == "wss" else ("connfail", "disconnected")), verdict
    assert verdict["mechanisms"] is None, verdict
