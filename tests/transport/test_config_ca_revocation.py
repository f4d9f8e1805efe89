"""A CA known only from tls.cacertfile, its CRL in tls.crl_files: revocation holds on every transport.

Issue 11 (the operator's seed-style configuration): before, a certificate listed in that CRL logged in over
all four transports. Here the production layout runs on one config and one database: ``manage.py runc2s`` (TCP
STARTTLS and direct TLS, slixmpp) and ``python -m transport.http.server ... xmppauth.asgi:application`` (wss
and BOSH, Strophe.js under Node). No CA is imported in the admin: the CA is known only from the file. The
listeners keep a refused connection (``disconnect_on_failure = false``) and offer only EXTERNAL, which is not
offered to the revoked certificate (DESIGN §4): the stream ends with ``not-authorized`` and "Your client
certificate was revoked." (RFC 6120 §4.9.3.12, issue 18 §5), and nothing more; each refusal's reason, naming
the CRL file, is in the auth event.
"""

from __future__ import annotations

import pytest

from certauth.userstatus import TEXT_REVOKED
from tests.certauth.crlhelpers import make_crl
from tests.certs import make_client
from tests.processes import Managed, free_port
from tests.transport.configca_servers import auth_events, environment, migrate, scratch_database
from tests.transport.rawxmpp import read_to_eof, starttls, stream_error_condition, text_of
from tests.transport.tlsclient import client_context, make_pki
from tests.transport.xmppclient import slixmpp_login
from tests.transport.xmpphttp import XmppHttpServer, strophe_login

TCP_MODES = [("starttls", False), ("tls", True)]


def _c2s(port: int, mode: str, pki, cafile, crlfile) -> str:
    return f"""
[[listen.c2s]]
  port = {port}
  ip_address = "127.0.0.1"
  tls.mode = "{mode}"
  tls.certfile = "{pki.server_certfile}"
  tls.keyfile = "{pki.server_keyfile}"
  tls.cacertfile = "{cafile}"
  tls.crl_files = ["{crlfile}"]
  tls.verify_mode = "peer"
  tls.disconnect_on_failure = false
"""


def _http(port: int, pki, cafile, crlfile) -> str:
    return f"""
[[listen.http]]
  port = {port}
  ip_address = "127.0.0.1"
  tls.certfile = "{pki.server_certfile}"
  tls.keyfile = "{pki.server_keyfile}"
  tls.cacertfile = "{cafile}"
  tls.crl_files = ["{crlfile}"]
  tls.verify_mode = "peer"
  tls.disconnect_on_failure = false
  [[listen.http.handlers.mod_websockets]]
    path = "/ws-xmpp"
  [[listen.http.handlers.mod_bosh]]
    path = "/http-bind"
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """runc2s and our daphne on a tls.cacertfile CA whose CRL (tls.crl_files) lists bob's certificate."""
    directory = tmp_path_factory.mktemp("config-ca")
    pki = make_pki(directory)
    revoked = make_client(pki.ca, jids=["bob@localhost"])
    cafile, crlfile = directory / "client-ca.pem", directory / "client-ca.crl"
    cafile.write_bytes(pki.ca.pem)
    crlfile.write_bytes(make_crl(pki.ca, [revoked.cert.serial_number]))
    ports = {"starttls": free_port(), "tls": free_port(), "peer": free_port()}
    config = directory / "xmppauth.toml"
    config.write_text(
        '[general]\n  hosts = ["localhost"]\n'
        + "".join(_c2s(ports[mode], mode, pki, cafile, crlfile) for mode, _ in TCP_MODES)
        + _http(ports["peer"], pki, cafile, crlfile)
    )
    with scratch_database(directory) as database_url:
        env = environment(directory, config, database_url)
        migrate(env)
        c2s = Managed(env, "runc2s")
        https = None
        try:
            for mode, _ in TCP_MODES:
                c2s.wait_for(f"c2s listening on 127.0.0.1:{ports[mode]}")
            https = Managed(
                env, "-m", "transport.http.server", "-e", "xmpptls:listener=0", "xmppauth.asgi:application"
            )
            https.wait_for(f"https listening on 127.0.0.1:{ports['peer']}")
            server = XmppHttpServer(pki, directory, {"peer": ports["peer"]}, https.process, env)
            yield {
                "env": env,
                "ports": ports,
                "pki": pki,
                "revoked": revoked,
                "crl": crlfile,
                "https": server,
            }
        finally:
            outputs = [c2s.stop(), https.stop() if https is not None else ""]
            print(*outputs, sep="\n")
            assert all("Traceback" not in output for output in outputs)


@pytest.mark.parametrize(("mode", "direct"), TCP_MODES, ids=["starttls", "direct_tls"])
def test_certificate_of_the_cacertfile_ca_logs_in_over_tcp(site, tmp_path, mode, direct):
    outcome = slixmpp_login(site["ports"][mode], tmp_path, site["pki"].valid, direct_tls=direct)
    assert outcome.bound_jid is not None and outcome.bound_jid.split("/")[0] == "alice@localhost", outcome


@pytest.mark.parametrize(("mode", "direct"), TCP_MODES, ids=["starttls", "direct_tls"])
def test_certificate_listed_in_the_crl_file_is_refused_over_tcp(site, tmp_path, mode, direct):
    outcome = slixmpp_login(
        site["ports"][mode], tmp_path, site["revoked"], jid="bob@localhost", direct_tls=direct
    )
    assert outcome.bound_jid is None and outcome.sasl_failures == [], outcome
    assert outcome.stream_errors == [("not-authorized", TEXT_REVOKED)], outcome  # EXTERNAL not offered


def test_the_revoked_certificate_reads_only_its_status_not_the_crl(site, tmp_path):
    sock, features = starttls(site["ports"]["starttls"], client_context(tmp_path, site["revoked"]))
    with sock:
        features += read_to_eof(sock)
    assert b"EXTERNAL" not in features and b"<stream:features" not in features, features
    assert stream_error_condition(features) == "not-authorized" and text_of(features) == TEXT_REVOKED
    for hidden in (b"keyCompromise", b"CRL", b"crl", b"bob"):
        assert hidden not in features[features.index(b"<stream:error") :], (hidden, features)


@pytest.mark.parametrize("scheme", ["wss", "https"], ids=["wss", "bosh"])
def test_certificate_of_the_cacertfile_ca_logs_in_with_strophe(site, scheme):
    server = site["https"]
    verdict = strophe_login(server, server.url("peer", scheme), site["pki"].valid)
    assert verdict["status"] == "connected", verdict
    assert verdict["jid"].split("/")[0] == "alice@localhost"


@pytest.mark.parametrize("scheme", ["wss", "https"], ids=["wss", "bosh"])
def test_certificate_listed_in_the_crl_file_is_refused_with_strophe(site, scheme):
    server = site["https"]
    verdict = strophe_login(server, server.url("peer", scheme), site["revoked"], "bob@localhost")
    assert verdict["status"] == "connfail" and verdict["mechanisms"] is None, verdict
    assert verdict["stream_error"] == {"condition": "not-authorized", "text": TEXT_REVOKED}, verdict


def test_every_refusal_names_the_crl_file_in_the_auth_event(site, tmp_path):
    for mode, direct in TCP_MODES:
        slixmpp_login(site["ports"][mode], tmp_path, site["revoked"], jid="bob@localhost", direct_tls=direct)
    server = site["https"]
    for scheme in ("wss", "https"):
        strophe_login(server, server.url("peer", scheme), site["revoked"], "bob@localhost")
    events = auth_events(site["env"], site["revoked"].facts.fingerprint_sha256)
    revoked = f"revoked 2026-09-03 keyCompromise (CRL {site['crl']})"
    transports = [event["transport"] for event in events]
    assert set(transports) == {"tcp", "tls", "ws", "bosh"}, events  # STARTTLS is "tcp", direct TLS "tls"
    assert all(event["outcome"] == "failure" and revoked in event["reason"] for event in events), events
    # The check's refusals, one per connection: the stream error that ends it records nothing more.
    checks = [event for event in events if not event["condition"]]
    assert checks == events, events
    assert {event["reason"] for event in checks} == {f"certificate refused: {revoked}"}, events
    assert {event["transport"] for event in checks} == {"tcp", "tls", "ws", "bosh"}, events
