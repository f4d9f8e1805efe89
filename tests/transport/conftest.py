"""A Twisted reactor (asyncio, as in production) running in a background thread for the whole test session.

The reactor can run only once per process, so every listener test shares it; tests talk to it with
``on_reactor(f, ...)`` (``blockingCallFromThread``) and to the listeners with ordinary blocking sockets.

``c2s`` starts a real c2s listener (real core, authenticator and test database) trusting ``pki.ca``; a module
that defines its own ``pki`` fixture overrides the one here.
"""

from __future__ import annotations

import dataclasses
import sys
import threading

import pytest


def _install_asyncio_reactor() -> None:
    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import asyncioreactor

        asyncioreactor.install()


@pytest.fixture(scope="session")
def reactor():
    _install_asyncio_reactor()
    from twisted.internet import reactor as the_reactor

    thread = threading.Thread(
        target=the_reactor.run, kwargs={"installSignalHandlers": False}, name="reactor", daemon=True
    )
    thread.start()
    yield the_reactor
    the_reactor.callFromThread(the_reactor.stop)
    thread.join(10)


@pytest.fixture(scope="session")
def on_reactor(reactor):
    from twisted.internet.threads import blockingCallFromThread

    def call(function, *args, **kwargs):
        return blockingCallFromThread(reactor, function, *args, **kwargs)

    return call


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    from tests.transport.tlsclient import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def trusted_ca(pki):
    from certauth import services, trust

    services.import_ca(pki.ca.pem, name="test client CA")
    trust.invalidate()
    yield
    trust.invalidate()


@pytest.fixture
def c2s(on_reactor, pki, trusted_ca):
    """Start a real c2s listener on 127.0.0.1:0; returns its port."""
    from twisted.internet import reactor

    from certauth.configcas import sync_config_cas
    from transport.tcp import listener as tcp
    from xmppauth.config import AuthConfig, C2SListener, Config

    ports = []

    def start(
        mode: str = "starttls",
        *,
        clock=None,
        ping_interval: float = 0,
        auth=None,
        hosts: tuple[str, ...] = ("localhost",),
        xmpp_options=None,
        routed: bool = False,
        **tls_overrides,
    ) -> int:
        options = pki.options(mode=mode, **tls_overrides)
        listener = C2SListener(port=0, ip_address="127.0.0.1", tls=options)
        config = Config(hosts=hosts, listen_c2s=(listener,), auth=auth or AuthConfig(), source="test.toml")
        if xmpp_options is not None:  # the [xmppauth] options (require_revocation, crl_grace_seconds, ...)
            config = dataclasses.replace(config, options=xmpp_options)
        # The core asks for the XEP-0199 keepalive ([xmppauth] ping_interval_seconds; here 0 unless given).
        keepalive = dataclasses.replace(config.options, ping_interval_seconds=ping_interval)
        config = dataclasses.replace(config, options=keepalive)
        if options.cacertfile:  # as every process does at start-up: the file's CAs become rows
            sync_config_cas(config)
        port = on_reactor(
            tcp.listen_c2s,
            listener,
            options,
            [pki.ca.cert],
            reactor,
            core_factory=tcp._default_core_factory(config),
            authenticator_factory=tcp._default_authenticator_factory(config),
            clock=clock,
            # routed: stanzas go through the IM router in this process (roster, XEP-0257, messages)
            bridge_factory=tcp._default_bridge_factory if routed else None,
        )
        ports.append(port)
        return port.getHost().port

    yield start
    for port in ports:
        on_reactor(port.stopListening)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "websockets_tls13: this test needs TLS 1.3 under the websockets.sync client (see below)"
    )


@pytest.fixture(autouse=True)
def _websockets_sync_speaks_tls_1_2(request, monkeypatch):
    """A ``websockets.sync`` client connection over TLS 1.3 fails its test (unless marked websockets_tls13).

    The client reads its socket in a thread while the handshake's request is written from the caller's, on one
    OpenSSL connection; under TLS 1.3 the server's session tickets arrive during that read and the request is
    lost about once in 370 connections (it never reaches the wire; daphne answers nothing and the client times
    out "waiting for handshake response"). ``tlsclient.websockets_context`` (TLS 1.2) avoids it.
    """
    if request.node.get_closest_marker("websockets_tls13"):
        yield
        return
    from websockets.sync.client import ClientConnection

    tls13: list[str] = []
    original = ClientConnection.__init__

    def recording(self, sock, *args, **kwargs):
        version = getattr(sock, "version", None)
        if callable(version) and version() == "TLSv1.3":
            tls13.append(str(sock.getpeername()))
        original(self, sock, *args, **kwargs)

    monkeypatch.setattr(ClientConnection, "__init__", recording)
    yield
    assert not tls13, (
        f"websockets.sync over TLS 1.3 to {tls13}: use tests.transport.tlsclient.websockets_context "
        "(or mark the test websockets_tls13)"
    )
