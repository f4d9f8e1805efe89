"""The seed's Gajim recipe end to end over TCP (issue 14 §4): its X.509 v1 certificate logs in with slixmpp.

The recipe runs with the real ``openssl`` command line (tests/opensslcli.py); its root becomes the listener's
trusted CA, and ``auth.sasl_external = ["standard", "common_name"]`` turns the certificate's CN into the
localpart. The v1 paths we refuse are refused both ways: with ``disconnect_on_failure = false`` EXTERNAL is
not offered (DESIGN §4): the self-signed leaf reads its status in a ``not-authorized`` stream error, the
others get no mechanism and, sent anyway, EXTERNAL fails with ``not-authorized``; with ``true`` the client is
disconnected before any XMPP.
"""

from __future__ import annotations

import dataclasses

import pytest

from certauth.models import AuthEvent
from certauth.userstatus import user_text
from tests.opensslcli import REFUSED_V1_PATHS, shared_recipe
from tests.transport.rawxmpp import (
    NO_MECHANISMS,
    auth_external,
    direct_tls,
    read_to_eof,
    sasl,
    sasl_failure_condition,
    starttls,
    stream_error_condition,
    text_of,
)
from tests.transport.test_tcp_slixmpp import after_tls  # the raw view of a TLS refusal
from tests.transport.tlsclient import client_context, make_pki
from tests.transport.xmppclient import slixmpp_login
from xmppauth.config import AuthConfig

pytestmark = pytest.mark.django_db(transaction=True)

MODES = [("starttls", False), ("tls", True)]
MODE_IDS = ["starttls", "direct_tls"]
CN_AUTH = AuthConfig(sasl_external=("standard", "common_name"))


@pytest.fixture(scope="module")
def paths():
    return shared_recipe()


@pytest.fixture(scope="module")
def pki(tmp_path_factory, paths):
    """The conftest's listener PKI with the recipe's root as the trusted client CA."""
    return dataclasses.replace(make_pki(tmp_path_factory.mktemp("pki")), ca=paths.recipe.root)


def last_event() -> AuthEvent:
    return AuthEvent.objects.order_by("-pk").first()


@pytest.mark.parametrize(("mode", "direct"), MODES, ids=MODE_IDS)
@pytest.mark.parametrize("disconnect", [True, False], ids=["disconnect", "keep"])
def test_recipe_certificate_logs_in_as_its_common_name(c2s, tmp_path, paths, mode, direct, disconnect):
    port = c2s(mode, auth=CN_AUTH, disconnect_on_failure=disconnect)
    outcome = slixmpp_login(port, tmp_path, paths.recipe.client, jid="alice@localhost", direct_tls=direct)
    assert outcome.bound_jid is not None and outcome.bound_jid.startswith("alice@localhost/"), outcome
    event = last_event()
    assert (event.outcome, event.jid_granted) == (AuthEvent.Outcome.SUCCESS, "alice@localhost")


def test_recipe_certificate_is_not_authorized_without_common_name(c2s, tmp_path, paths):
    port = c2s("starttls", auth=AuthConfig(sasl_external=("standard",)))
    outcome = slixmpp_login(port, tmp_path, paths.recipe.client, jid="alice@localhost")
    assert outcome.bound_jid is None and outcome.sasl_failures == ["not-authorized"], outcome  # no xmppAddr


def test_self_signed_v1_certificate_logs_in_under_selfsigned_peer(c2s, tmp_path, paths):
    port = c2s("starttls", auth=CN_AUTH, verify_mode="selfsigned_peer")
    outcome = slixmpp_login(port, tmp_path, paths.self_v1, jid="erin@localhost")
    assert outcome.bound_jid is not None and outcome.bound_jid.startswith("erin@localhost/"), outcome


REFUSED = REFUSED_V1_PATHS


@pytest.mark.parametrize("case", sorted(REFUSED))
@pytest.mark.parametrize(("mode", "direct"), MODES, ids=MODE_IDS)
def test_refused_without_disconnect_is_told_its_status_or_offered_no_mechanism(
    c2s, tmp_path, paths, case, mode, direct
):
    field, verify_mode, reason = REFUSED[case]
    client = getattr(paths, field)
    port = c2s(mode, auth=CN_AUTH, verify_mode=verify_mode, disconnect_on_failure=False)
    context = client_context(tmp_path, client)
    text = user_text(reason)  # the leaf's own status (self-signed, untrusted): the client may read it
    sock, features = direct_tls(port, context) if direct else starttls(port, context)
    with sock:
        if text:  # nothing else to offer: the stream ends with the status (RFC 6120 §4.9.3.12)
            features += read_to_eof(sock)
            assert stream_error_condition(features) == "not-authorized" and text_of(features) == text
        else:  # a refusal about the chain tells the client nothing
            assert NO_MECHANISMS in features and b"EXTERNAL" not in features, features
            assert sasl_failure_condition(sasl(sock, auth_external("="))) == "not-authorized"
    refused = AuthEvent.objects.filter(outcome=AuthEvent.Outcome.FAILURE).order_by("pk").first()
    assert refused is not None and refused.reason == f"certificate refused: {reason}", refused
    outcome = slixmpp_login(
        port, tmp_path, client, jid=f"{client.facts.common_name}@localhost", direct_tls=direct
    )
    assert outcome.bound_jid is None and outcome.sasl_failures == [], outcome
    assert outcome.stream_errors == ([("not-authorized", text)] if text else []), outcome
    assert outcome.no_usable_mechanism is not bool(text), outcome


# With disconnect_on_failure: OpenSSL's own check refuses the v1 intermediate and the self-signed leaf in
# the handshake, with this alert; it accepts a v1 leaf under an intermediate, which our check then cuts
# ("closed").
CUT = {
    "v1_leaf_under_an_intermediate": ("closed", ""),
    "v1_leaf_under_an_intermediate_selfsigned_peer": ("closed", ""),
    "v3_leaf_under_a_v1_intermediate": ("alert", "UNKNOWN_CA"),
    "self_signed_v1_leaf_under_peer": ("alert", "UNKNOWN_CA"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
@pytest.mark.parametrize(("mode", "direct"), MODES, ids=MODE_IDS)
def test_refused_with_disconnect_is_cut_before_any_sasl(c2s, tmp_path, paths, case, mode, direct):
    field, verify_mode, _ = REFUSED[case]
    client = getattr(paths, field)
    port = c2s(mode, auth=CN_AUTH, verify_mode=verify_mode, disconnect_on_failure=True)
    seen = after_tls(tmp_path, port, client, direct)
    how, alert = CUT[case]
    assert seen.data == b"" and seen.how == how and alert in seen.detail, seen  # not one byte of XMPP
    outcome = slixmpp_login(
        port, tmp_path, client, jid=f"{client.facts.common_name}@localhost", direct_tls=direct
    )
    assert outcome.disconnected and outcome.bound_jid is None, outcome
    assert not outcome.no_usable_mechanism and outcome.sasl_failures == [], outcome
