"""The ``xmpptls:`` endpoint description: keys, listener index and config errors that name the key.

Serving with it is tested end to end in test_daphne_tls_scope.py and test_runxmpp_http.py.
"""

from __future__ import annotations

import pytest
from twisted.internet.endpoints import serverFromString

from transport.http.tls_endpoint import EndpointConfigError, XmppTlsEndpointParser
from xmppauth.config import parse_config


@pytest.fixture
def two_listeners(settings):
    settings.XMPP = parse_config(
        {"listen": {"http": [{"port": 5443, "tls": {}}, {"port": 5280, "ip_address": "127.0.0.1"}]}}
    )


def test_twisted_finds_the_xmpptls_plugin_by_its_prefix():
    from twisted.internet.interfaces import IStreamServerEndpointStringParser
    from twisted.plugin import getPlugins

    assert any(p.prefix == "xmpptls" for p in getPlugins(IStreamServerEndpointStringParser))


def test_unknown_key_is_refused_naming_the_accepted_keys(two_listeners):
    with pytest.raises(EndpointConfigError, match=r"certKey.*accepted: listener, port, interface, backlog"):
        serverFromString(None, "xmpptls:port=5443:certKey=server.pem")


def test_positional_value_is_refused(two_listeners):
    with pytest.raises(EndpointConfigError, match="key=value"):
        XmppTlsEndpointParser().parseStreamServer(None, "5443")


def test_listener_without_tls_table_is_refused_pointing_to_tcp(two_listeners):
    with pytest.raises(EndpointConfigError, match=r"listen.http\[1\] has no tls table.*tcp:port=5280"):
        serverFromString(None, "xmpptls:listener=1")


def test_listener_index_out_of_range_names_the_accepted_range(two_listeners):
    with pytest.raises(EndpointConfigError, match=r"listener=2: .* accepted: listener=0..1"):
        serverFromString(None, "xmpptls:listener=2")


def test_port_that_is_not_a_number_is_refused(two_listeners):
    with pytest.raises(EndpointConfigError, match="port='https': expected an integer"):
        serverFromString(None, "xmpptls:port=https")


@pytest.mark.django_db
def test_port_interface_and_backlog_default_to_the_listeners_and_may_be_overridden(tmp_path, settings):
    from tests.transport.tlsclient import make_pki

    pki = make_pki(tmp_path)
    settings.XMPP = parse_config(
        {
            "listen": {
                "http": [
                    {
                        "port": 5443,
                        "ip_address": "127.0.0.1",
                        "backlog": 333,
                        "tls": {"certfile": str(pki.server_certfile), "keyfile": str(pki.server_keyfile)},
                    }
                ]
            }
        }
    )
    default = serverFromString(None, "xmpptls:listener=0")
    assert (default.port, default.interface, default.backlog) == (5443, "127.0.0.1", 333)
    overridden = serverFromString(None, "xmpptls:listener=0:port=6443:interface=0.0.0.0:backlog=77")
    assert (overridden.port, overridden.interface, overridden.backlog) == (6443, "0.0.0.0", 77)
    assert overridden.server_tls.options.certfile == str(pki.server_certfile)
