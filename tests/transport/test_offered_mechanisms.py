"""What clients see of the two policies of issue 13 §3, over TCP, wss (RFC 7395) and BOSH (XEP-0206).

1. Which SASL mechanisms are offered (RFC 6120 §6.4.1): ``auth.sasl_mechanisms`` in its order, cut to what
   the configured auth methods serve (the registry of ``certauth.authmethods``) and to the connection's TLS
   state: one decision, ``transport.xmpp.mechanisms.offered_mechanisms``. Each combination is read from the
   features a client with a verified certificate receives; a mechanism no method serves stops start-up.
2. Which domains are hosted (``accounts.domains``: config hosts minus the ``Domain`` rows an admin
   disabled): a disabled row is ``host-unknown`` at stream open (RFC 6120 §4.9.3.6) on every transport, and
   nobody logs in; an enabled or absent row for a config host is served; a row for a host the config does
   not list hosts nothing.

TCP runs in-process (the real listener, core and authenticator on the test database); wss and BOSH run our
daphne server as a subprocess with its own config and database, so a row disabled there through
``manage.py shell`` also shows the bound across processes (``accounts.changefeed.POLL_INTERVAL``).
"""

from __future__ import annotations

import re
import socket
import time
import tomllib
from xml.etree.ElementTree import Element, fromstring

import pytest
from websockets.sync.client import connect

from accounts import changefeed
from accounts.models import Domain
from certauth.models import AuthEvent
from tests.transport.rawxmpp import FEATURES_END, STREAM_END, auth_external, read_to_eof, read_until, sasl
from tests.transport.runc2s_process import environment, manage
from tests.transport.test_bosh_protocol import Client as BoshClient
from tests.transport.tlsclient import client_context, websockets_context
from tests.transport.xmpphttp import start_server
from transport.xmpp import namespaces as ns
from xmppauth.config import parse_config

pytestmark = pytest.mark.django_db(transaction=True)

# name -> (the [auth] table, the mechanisms a client with a verified certificate is offered, or None when
# only some properties are checked: the default order depends on the TLS connection's channel bindings)
COMBINATIONS: dict[str, tuple[str, list[str] | None]] = {
    "pki": ('methods = ["pki"]', ["EXTERNAL"]),
    "rdbms": ('methods = ["rdbms"]', None),
    "pki_rdbms": (
        'methods = ["pki", "rdbms"]\nsasl_mechanisms = ["scram_sha256", "external"]',
        ["SCRAM-SHA-256", "EXTERNAL"],  # the config's order
    ),
    "plain": ('methods = ["rdbms"]\nsasl_mechanisms = ["plain"]', ["PLAIN"]),
}


def check_offer(name: str, offered: list[str]) -> None:
    expected = COMBINATIONS[name][1]
    if expected is not None:
        assert offered == expected, offered
        return
    # methods = ["rdbms"] without sasl_mechanisms: the password mechanisms in MongooseIM's order, no EXTERNAL
    assert "EXTERNAL" not in offered and "SCRAM-SHA-256" in offered and offered[-1] == "PLAIN", offered


def auth_config(name: str):
    """The [auth] table of COMBINATIONS[name] through the config loader, as a server process reads it."""
    return parse_config({"auth": tomllib.loads(COMBINATIONS[name][0])}, "test.toml").auth


def mechanisms_of(features: Element) -> list[str]:
    listing = features.find(ns.qname(ns.SASL, "mechanisms"))
    assert listing is not None, "features without <mechanisms/>"
    return [mechanism.text or "" for mechanism in listing]


def header(to: str) -> bytes:
    return (
        f"<?xml version='1.0'?><stream:stream to='{to}' xmlns='jabber:client' "
        "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
    ).encode()


def tcp_features(port: int, tmp_path, client, to: str = "localhost") -> tuple[socket.socket, bytes]:
    """Direct TLS (XEP-0368) presenting ``client``; the socket and what the server sent up to the features
    (or to its closing tag after a stream error)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock = client_context(tmp_path, client).wrap_socket(raw, server_hostname="localhost")
    sock.sendall(header(to))
    return sock, read_until(sock, *FEATURES_END, STREAM_END)


def tcp_mechanisms(data: bytes) -> list[str]:
    """The mechanisms listed in the features the server sent (RFC 6120 §6.4.1)."""
    assert b"<mechanisms" in data, data
    return [name.decode() for name in re.findall(rb"<mechanism>([^<]+)</mechanism>", data)]


# --- 1. the offer, over TCP ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(COMBINATIONS))
def test_tcp_offers_the_configured_mechanisms_the_methods_serve(c2s, tmp_path, pki, name):
    port = c2s("tls", auth=auth_config(name))
    sock, data = tcp_features(port, tmp_path, pki.valid)
    with sock:
        check_offer(name, tcp_mechanisms(data))


def test_tcp_a_config_built_in_code_with_only_rdbms_offers_no_external(c2s, tmp_path, pki):
    """The dataclass default sasl_mechanisms is ("external",); no configured method serves it: not offered
    (before issue 13 the core offered it whatever the methods), and one sent anyway is not-authorized."""
    from xmppauth.config import AuthConfig

    port = c2s("tls", auth=AuthConfig(methods=("rdbms",)))
    sock, data = tcp_features(port, tmp_path, pki.valid)
    with sock:
        assert tcp_mechanisms(data) == []
        answer = sasl(sock, auth_external("="))
    assert b"<not-authorized/>" in answer, answer


# --- 1. the offer, over wss and BOSH ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """``servers(name)``: our daphne server with the [auth] table of COMBINATIONS[name] (started once)."""
    started: dict[str, object] = {}
    stops = []

    def get(name: str):
        if name not in started:
            generator = start_server(
                tmp_path_factory.mktemp(f"offer-{name}"),
                hosts=("localhost", "off.test"),
                extra_toml=f"\n[auth]\n{COMBINATIONS[name][0]}\n",
            )
            started[name] = next(generator)
            stops.append(generator)
        return started[name]

    yield get
    for generator in stops:
        next(generator, None)


OPEN = "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='{to}' version='1.0'/>"


def wss_first_elements(server, tmp_path, to: str = "localhost") -> list[Element]:
    """The server's answer to ``<open/>`` on the ``peer`` listener, presenting the valid client certificate:
    every message until the features, or until the stream is closed."""
    context = websockets_context(tmp_path, server.pki.valid)
    elements: list[Element] = []
    with connect(server.url("peer", "wss"), ssl=context, subprotocols=["xmpp"], open_timeout=10) as conn:
        conn.send(OPEN.format(to=to))
        while not elements or elements[-1].tag not in (ns.FEATURES, ns.WS_CLOSE):
            elements.append(fromstring(conn.recv(timeout=10)))
    return elements


@pytest.mark.parametrize("name", list(COMBINATIONS))
def test_wss_offers_the_configured_mechanisms_the_methods_serve(servers, tmp_path, name):
    opened, features = wss_first_elements(servers(name), tmp_path)
    assert opened.tag == ns.WS_OPEN and features.tag == ns.FEATURES
    check_offer(name, mechanisms_of(features))


@pytest.mark.parametrize("name", list(COMBINATIONS))
def test_bosh_offers_the_configured_mechanisms_the_methods_serve(servers, tmp_path, name):
    server = servers(name)
    _, body = BoshClient(server, tmp_path, server.pki.valid, listener="peer").create(rid=100)
    (features,) = body
    check_offer(name, mechanisms_of(features))


def test_a_mechanism_no_method_serves_stops_start_up_with_one_line(tmp_path):
    config = tmp_path / "xmppauth.toml"
    config.write_text(
        '[[listen.c2s]]\nport = 5222\nip_address = "127.0.0.1"\n'
        '[auth]\nmethods = ["pki"]\nsasl_mechanisms = ["external", "plain"]\n'
    )
    done = manage(environment(tmp_path, config), "runc2s", timeout=120)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "auth.sasl_mechanisms[1]" in lines[0] and "'plain'" in lines[0] and "rdbms" in lines[0]


# --- 2. hosted domains, over TCP -------------------------------------------------------------------------


def disable(name: str) -> None:
    row, _ = Domain.objects.get_or_create(name=name)
    row.enabled = False
    row.save()  # as the admin does


def assert_host_unknown_and_no_login(data: bytes) -> None:
    assert b"<host-unknown" in data and STREAM_END in data, data
    assert b"<stream:features" not in data, data


def test_tcp_a_config_host_whose_row_an_admin_disabled_is_host_unknown_and_nobody_logs_in(c2s, tmp_path, pki):
    port = c2s("tls", hosts=("localhost",))
    sock, data = tcp_features(port, tmp_path, pki.valid)
    with sock:
        assert b"<mechanism>EXTERNAL</mechanism>" in data  # the pass case: served
    disable("localhost")
    events = AuthEvent.objects.count()
    sock, data = tcp_features(port, tmp_path, pki.valid)
    with sock:
        data += read_to_eof(sock)
    assert_host_unknown_and_no_login(data)
    assert AuthEvent.objects.count() == events  # no SASL was reached, so no attempt at all


@pytest.mark.parametrize("enabled", [True, None], ids=["enabled-row", "no-row"])
def test_tcp_a_config_host_with_an_enabled_or_no_row_is_served(c2s, tmp_path, pki, enabled):
    if enabled is not None:
        Domain.objects.update_or_create(name="localhost", defaults={"enabled": enabled})
    else:
        Domain.objects.filter(name="localhost").delete()
    port = c2s("tls")
    sock, data = tcp_features(port, tmp_path, pki.valid)
    with sock:
        assert b"<mechanism>EXTERNAL</mechanism>" in data, data
        assert b"<success" in sasl(sock, auth_external("="))


def test_tcp_a_row_for_a_host_the_config_does_not_list_hosts_nothing(c2s, tmp_path, pki):
    Domain.objects.create(name="ghost.test", enabled=True)
    port = c2s("tls", hosts=("localhost",))
    sock, data = tcp_features(port, tmp_path, pki.valid, to="ghost.test")
    with sock:
        data += read_to_eof(sock)
    assert_host_unknown_and_no_login(data)


# --- 2. hosted domains, over wss and BOSH (another process: the bound across processes) ------------------


def server_domain_rows(server, **rows: bool) -> None:
    """Set ``Domain`` rows (name -> enabled) in the server's database from another process, then wait out
    the server's change feed (accounts.changefeed.POLL_INTERVAL): the documented bound across processes."""
    statements = "; ".join(
        f"Domain.objects.update_or_create(name={name.replace('_', '.')!r}, defaults={{'enabled': {enabled}}})"
        for name, enabled in rows.items()
    )
    server.manage("shell", "-c", f"from accounts.models import Domain; {statements}")
    time.sleep(changefeed.POLL_INTERVAL + 0.2)


def test_wss_and_bosh_a_disabled_config_host_is_host_unknown_a_row_alone_hosts_nothing(servers, tmp_path):
    server = servers("pki")
    opened, features = wss_first_elements(server, tmp_path, to="off.test")  # pass case: a config host, no row
    assert features.tag == ns.FEATURES and mechanisms_of(features) == ["EXTERNAL"]
    server_domain_rows(server, off_test=False, ghost_test=True)
    for to in ("off.test", "ghost.test"):
        elements = wss_first_elements(server, tmp_path, to=to)
        assert [element.tag for element in elements] == [ns.WS_OPEN, ns.STREAM_ERROR, ns.WS_CLOSE], to
        assert elements[1].find(ns.qname(ns.STREAM_ERRORS, "host-unknown")) is not None, to
        bosh = BoshClient(server, tmp_path, server.pki.valid, listener="peer")
        status, _, body = bosh.post(rid=1, to=to, wait=30, hold=1, xmpp_version="1.0")
        assert status == 200 and body.get("type") == "terminate", body.attrib
        assert body.get("condition") == "host-unknown", body.attrib
    # localhost, a config host with no row disabled, is still served
    _, body = BoshClient(server, tmp_path, server.pki.valid, listener="peer").create(rid=100)
    assert mechanisms_of(body[0]) == ["EXTERNAL"]
