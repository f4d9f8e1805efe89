"""Stream headers (RFC 6120 §4.7-4.8), features and STARTTLS (§5), through the c2s core with bytes."""

from __future__ import annotations

import pytest

from transport.xmpp import C2SConnection, LocalProtocolError, StartTls, State, StreamSettings
from transport.xmpp import namespaces as ns

from .streamkit import (
    AUTH_EXTERNAL,
    DOMAIN,
    HEADER,
    STARTTLS,
    Client,
    Facts,
    condition_of,
    stream_settings,
    tls_client,
)

SASL_MECHANISMS = ns.qname(ns.SASL, "mechanisms")


def new_client(**overrides) -> Client:
    return Client(C2SConnection(stream_settings(**overrides)))


def stream_error(client: Client) -> str | None:
    errors = [e for e in client.read() if e.tag == ns.STREAM_ERROR]
    assert client.conn.closed and client.server_closed
    return condition_of(errors[-1], ns.STREAM_ERRORS) if errors else None


def mechanisms(features) -> list[str]:
    listing = features.find(SASL_MECHANISMS)
    return [] if listing is None else [m.text for m in listing]


# --- header -----------------------------------------------------------------------------------------------


def test_valid_header_gets_our_header_and_features():
    client = new_client()
    (features,) = client.open()
    assert features.tag == ns.FEATURES
    assert client.header["from"] == DOMAIN and client.header["version"] == "1.0" and client.header["id"]


def test_header_domain_is_compared_case_insensitively():
    client = new_client()
    client.open(to="Example.ORG")
    assert not client.conn.closed and client.conn.domain == DOMAIN


def test_header_for_a_domain_we_do_not_host_is_host_unknown():
    client = new_client()
    client.send(HEADER.format(to="elsewhere.example"))
    assert stream_error(client) == "host-unknown"
    assert client.header is not None  # our header went out before the error (RFC 6120 §4.9.1.2)


def test_header_without_to_is_host_unknown():
    client = new_client()
    client.send(HEADER.format(to=DOMAIN).replace(" to='example.org'", ""))
    assert stream_error(client) == "host-unknown"


@pytest.mark.parametrize("version", ["", " version='0.9'", " version='2.0'", " version='one'"])
def test_header_without_version_1_is_unsupported_version(version):
    client = new_client()
    client.send(HEADER.format(to=DOMAIN).replace(" version='1.0'>", f"{version}>"))
    assert stream_error(client) == "unsupported-version"


def test_header_with_version_1_1_is_accepted():
    client = new_client()
    client.send(HEADER.format(to=DOMAIN).replace("version='1.0'>", "version='1.1'>"))
    assert not client.conn.closed


def test_wrong_stream_namespace_is_invalid_namespace():
    client = new_client()
    client.send(HEADER.format(to=DOMAIN).replace("http://etherx.jabber.org/streams", "urn:wrong"))
    assert stream_error(client) == "invalid-namespace"


def test_wrong_content_namespace_is_invalid_namespace():
    client = new_client()
    client.send(HEADER.format(to=DOMAIN).replace("xmlns='jabber:client'", "xmlns='jabber:server'"))
    assert stream_error(client) == "invalid-namespace"


def test_other_stream_prefix_is_bad_namespace_prefix():
    client = new_client()
    client.send(
        "<foo:stream xmlns='jabber:client' xmlns:foo='http://etherx.jabber.org/streams' "
        "to='example.org' version='1.0'>"
    )
    assert stream_error(client) == "bad-namespace-prefix"


def test_stanza_before_authentication_is_not_authorized():
    client = new_client(tls_mode="none")
    client.open()
    client.send("<message to='romeo@example.org'><body>hi</body></message>")
    assert stream_error(client) == "not-authorized"


def test_unknown_element_during_negotiation_is_unsupported_stanza_type():
    client = new_client()
    client.open()
    client.send("<enable xmlns='urn:xmpp:sm:3'/>")
    assert stream_error(client) == "unsupported-stanza-type"


def test_client_closing_the_stream_gets_our_closing_tag_and_close():
    client = new_client()
    client.open()
    client.send("</stream:stream>")
    client.read()
    assert client.server_closed and client.conn.closed
    assert client.closes()[0].condition is None


def test_close_with_error_from_the_adapter_sends_the_stream_error():
    client = new_client()
    client.open()
    client.events.extend(client.conn.close_with_error("reset", "certificate revoked"))
    (error,) = client.read()
    assert condition_of(error, ns.STREAM_ERRORS) == "reset"
    assert error.findtext(ns.qname(ns.STREAM_ERRORS, "text")) == "certificate revoked"
    assert client.server_closed and client.closes()[0].condition == "reset"


def test_input_after_close_is_ignored():
    client = new_client()
    client.open()
    client.send("</stream:stream>")
    client.read()
    assert client.send("<presence/>") == [] and client.conn.data_to_send() == b""


def test_settings_refuse_unknown_modes():
    with pytest.raises(ValueError, match="tls_mode"):
        StreamSettings(hosted_domains=(DOMAIN,), tls_mode="sometimes")
    with pytest.raises(ValueError, match="framing"):
        StreamSettings(hosted_domains=(DOMAIN,), framing="carrier-pigeon")


# --- STARTTLS ---------------------------------------------------------------------------------------------


def test_starttls_is_offered_without_required_in_starttls_mode():
    (features,) = new_client(tls_mode="starttls").open()
    starttls = features.find(ns.STARTTLS)
    assert starttls is not None and starttls.find(ns.qname(ns.TLS, "required")) is None


def test_starttls_is_offered_with_required_in_starttls_required_mode():
    (features,) = new_client(tls_mode="starttls_required").open()
    assert features.find(ns.STARTTLS).find(ns.qname(ns.TLS, "required")) is not None
    assert features.find(SASL_MECHANISMS) is None  # RFC 6120 §5.3.1


def test_starttls_is_not_offered_in_mode_none_or_over_tls():
    assert new_client(tls_mode="none").open()[0].find(ns.STARTTLS) is None
    assert tls_client().features[0].find(ns.STARTTLS) is None


def test_starttls_gets_proceed_and_a_starttls_event():
    client = new_client()
    client.open()
    events = client.send(STARTTLS)
    assert client.read_one().tag == ns.qname(ns.TLS, "proceed")
    assert events == [StartTls()] and client.conn.state is State.WAIT_TLS


def test_bytes_after_starttls_are_discarded_not_parsed():
    client = new_client()
    client.open()
    client.send(STARTTLS + "<message to='x@example.org'/>")
    client.read()
    client.conn.tls_established(Facts(), True)
    # had the injected message been kept, it would now be a stanza before the header
    assert client.open()[0].tag == ns.FEATURES and not client.conn.closed


def test_after_tls_the_stream_restarts_and_offers_external_with_a_verified_certificate():
    client = new_client()
    client.open()
    client.send(STARTTLS)
    client.read()
    assert client.conn.tls_established(Facts(), True) == []
    (features,) = client.open()
    assert features.find(ns.STARTTLS) is None
    assert mechanisms(features) == ["EXTERNAL"]


def test_starttls_when_tls_is_on_is_refused():
    client = tls_client()
    client.send(STARTTLS)
    assert stream_error(client) == "policy-violation"


def test_starttls_when_not_offered_is_refused():
    client = new_client(tls_mode="none")
    client.open()
    client.send(STARTTLS)
    assert stream_error(client) == "policy-violation"


def test_auth_before_tls_when_tls_is_required_is_encryption_required():
    client = new_client(tls_mode="starttls_required")
    client.open()
    client.send(AUTH_EXTERNAL.format("="))
    failure = client.read_one()
    assert condition_of(failure, ns.SASL) == "encryption-required"
    assert client.auth_requests() == [] and not client.conn.closed


def test_tls_established_at_the_wrong_time_is_a_local_protocol_error():
    client = tls_client()
    with pytest.raises(LocalProtocolError):
        client.conn.tls_established(Facts(), True)


def test_tls_established_accepts_a_certificate_check_object():
    class Check:
        facts = Facts()
        verified = False
        reason = "certificate has expired"

    client = new_client()
    client.open()
    client.send(STARTTLS)
    client.conn.tls_established(Check())
    assert client.conn.peer_verified is False and client.conn.peer_verify_error == "certificate has expired"


def test_header_after_restart_must_name_the_same_domain():
    client = new_client()
    client.open()
    client.send(STARTTLS)
    client.read()
    client.conn.tls_established(Facts(), True)
    elements = client.open(to="other.example")
    assert condition_of(elements[-1], ns.STREAM_ERRORS) == "host-unknown" and client.conn.closed


def test_whole_negotiation_fed_one_byte_at_a_time():
    client = new_client()
    for byte in HEADER.format(to=DOMAIN).encode():
        client.send(bytes([byte]))
    for byte in STARTTLS.encode():
        client.send(bytes([byte]))
    assert [type(e) for e in client.events][-1] is StartTls


def test_before_optional_starttls_an_empty_mechanisms_list_is_left_out():
    (features,) = new_client(tls_mode="starttls").open()
    assert features.find(SASL_MECHANISMS) is None
