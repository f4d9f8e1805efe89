"""The Origin rule for the WebSocket and BOSH endpoints (``transport.http.origin``), without a server.

A request without ``Origin`` (a native client), from the request's own origin (scheme + ``Host``), or from an
origin on the handler's ``allowed_origins`` passes; every other page is refused (RFC 6454, RFC 6455 §10.2).
The BOSH app is driven through ASGI: a refused page gets HTTP 403 with ``policy-violation`` and no CORS
header, and CORS answers name the allowed origin, never ``*``.
"""

from __future__ import annotations

import asyncio
import tomllib

import pytest

from transport.http.bosh import BoshApp
from transport.http.origin import check_origin, cors_headers
from xmppauth.config import ConfigError, parse_config
from xmppauth.origins import Origin, parse_allowed_origin, parse_origin

WEB_CLIENT = "https://chat.example.com"
CONFIG_TEXT = f"""
[general]
  hosts = ["localhost"]
[[listen.http]]
  port = 5443
  tls.mode = "tls"
  [[listen.http.handlers.mod_websockets]]
    path = "/ws-xmpp"
    allowed_origins = ["{WEB_CLIENT}", "http://127.0.0.1:8080"]
  [[listen.http.handlers.mod_bosh]]
    path = "/http-bind"
    allowed_origins = ["{WEB_CLIENT}"]
[[listen.http]]
  port = 5444
  tls.mode = "tls"
  [[listen.http.handlers.mod_websockets]]
    path = "/ws-xmpp"
"""


def parse(text: str):
    return parse_config(tomllib.loads(text), "test.toml", base_dir="/etc/xmppauth")


CONFIG = parse(CONFIG_TEXT)
FIRST, SECOND = CONFIG.listen_http


def scope(
    origin: str | list[str] | None,
    *,
    host: str | None = "localhost:5443",
    scheme: str = "wss",
    path: str = "/ws-xmpp",
    kind: str = "websocket",
    extensions: dict | None = None,
    method: str = "GET",
) -> dict:
    headers = [] if host is None else [(b"host", host.encode())]
    for value in [origin] if isinstance(origin, str) else origin or []:
        headers.append((b"origin", value.encode()))
    return {
        "type": kind,
        "scheme": scheme,
        "path": path,
        "method": method,
        "headers": headers,
        "client": ["192.0.2.7", 40000],
        "extensions": extensions or {},
    }


def ws_verdict(origin, listener=FIRST, **kwargs):
    return check_origin(CONFIG, listener, scope(origin, **kwargs), "mod_websockets")


# --- what passes ---------------------------------------------------------------------------------------


def test_a_handshake_without_origin_passes_as_a_native_client():
    verdict = ws_verdict(None)
    assert verdict.allowed and verdict.origin is None


def test_the_listeners_own_origin_passes():
    verdict = ws_verdict("https://localhost:5443")
    assert verdict.allowed and verdict.reason == "same origin"


def test_the_own_origin_with_the_default_port_left_out_passes():
    assert ws_verdict("https://xmpp.example.com", host="xmpp.example.com").allowed
    assert ws_verdict("https://xmpp.example.com", host="xmpp.example.com:443").allowed


def test_own_origin_is_compared_without_case():
    assert ws_verdict("https://LocalHost:5443", host="localhost:5443").allowed


def test_an_origin_in_allowed_origins_passes():
    verdict = ws_verdict(WEB_CLIENT)
    assert verdict.allowed and verdict.reason == "in allowed_origins of mod_websockets /ws-xmpp"
    assert ws_verdict("http://127.0.0.1:8080").allowed


def test_a_plain_http_request_from_a_trusted_proxy_counts_as_https():
    # transport.http.proxy_cert adds the TLS extension for a trusted TLS-terminating proxy only
    verdict = ws_verdict(
        "https://xmpp.example.com", host="xmpp.example.com", scheme="ws", extensions={"tls": {}}
    )
    assert verdict.allowed


# --- what is refused -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",  # another host
        "https://evil.example:5443",
        "https://localhost:5444",  # another port
        "https://localhost",  # the default port is another port
        "http://localhost:5443",  # another scheme
        "null",  # sandboxed frame, file: or data: page: any page can have it
        "https://localhost.evil.example:5443",  # look-alikes
        "https://evil-localhost:5443",
        "https://xn--lcalhost-9qi:5443",  # "lоcalhost" with a Cyrillic о, as a browser sends it
        "https://lоcalhost:5443",  # the same, raw (never an RFC 6454 serialisation)
        "https://localhost:5443.evil.example",
        "https://localhost:5443/",  # a URL, not an origin
        "https://localhost:5443@evil.example",
        "https://user@localhost:5443",
        "https://chat.example.com.evil.example",  # look-alike of the allowed origin
        "http://chat.example.com",  # the allowed origin's host over another scheme
        "https://chat.example.com:8443",
        "",
        "*",
    ],
)
def test_any_other_page_is_refused(origin):
    verdict = ws_verdict(origin)
    assert not verdict.allowed
    assert verdict.origin.encode("latin-1") == origin.encode()  # as sent (headers are bytes, read as latin-1)


def test_the_reason_names_our_origin_and_the_handler():
    verdict = ws_verdict("https://evil.example")
    assert verdict.reason == (
        "neither this listener's own origin (https://localhost:5443) "
        "nor in allowed_origins of mod_websockets /ws-xmpp"
    )


def test_null_is_refused_with_its_reason():
    assert "opaque origin" in ws_verdict("null").reason


def test_several_origin_headers_are_refused():
    verdict = ws_verdict(["https://localhost:5443", "https://localhost:5443"])
    assert not verdict.allowed and verdict.reason == "2 Origin headers"


def test_without_host_only_the_allow_list_passes():
    assert not ws_verdict("https://localhost:5443", host=None).allowed
    assert "no usable Host header" in ws_verdict("https://localhost:5443", host=None).reason
    assert ws_verdict(WEB_CLIENT, host=None).allowed


def test_a_listener_with_its_own_handler_uses_only_its_own_allow_list():
    assert not ws_verdict(WEB_CLIENT, listener=SECOND, host="localhost:5444").allowed
    assert ws_verdict("https://localhost:5444", listener=SECOND, host="localhost:5444").allowed


def test_an_unknown_listener_uses_the_allow_lists_of_every_handler_at_the_path():
    assert ws_verdict(WEB_CLIENT, listener=None).allowed
    assert not ws_verdict("https://evil.example", listener=None).allowed


def test_the_allow_list_is_per_handler_kind():
    # 127.0.0.1:8080 is allowed on mod_websockets only
    bosh = scope("http://127.0.0.1:8080", path="/http-bind", kind="http", method="POST")
    assert not check_origin(CONFIG, FIRST, bosh, "mod_bosh").allowed
    assert check_origin(CONFIG, FIRST, scope(WEB_CLIENT, path="/http-bind", kind="http"), "mod_bosh").allowed


# --- parsing and the config key ------------------------------------------------------------------------


def test_origins_are_parsed_as_rfc6454_tuples():
    assert parse_origin("https://Chat.Example.com") == Origin("https", "chat.example.com", 443)
    assert parse_origin("http://[::1]:8080") == Origin("http", "[::1]", 8080)
    assert str(parse_origin("https://chat.example.com:443")) == "https://chat.example.com"


def test_allowed_origins_are_stored_in_canonical_form():
    assert parse_allowed_origin("HTTPS://Chat.Example.COM:443") == "https://chat.example.com"
    assert parse_allowed_origin("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    handler = (
        parse(CONFIG_TEXT.replace(WEB_CLIENT, "HTTPS://Chat.Example.COM:443")).listen_http[0].handlers[0]
    )
    assert handler.allowed_origins == ("https://chat.example.com", "http://127.0.0.1:8080")


def config_with_origins(origins: str, kind: str = "mod_bosh") -> str:
    return f"""
[[listen.http]]
  [[listen.http.handlers.{kind}]]
    path = "/p"
    allowed_origins = {origins}
"""


@pytest.mark.parametrize(
    ("origins", "message"),
    [
        ('["null"]', "listen.http[0].handlers.mod_bosh[0].allowed_origins[0]: 'null' is the opaque origin"),
        ('["*"]', "allowed_origins[0]: '*' is not scheme://host[:port]"),
        (
            '["https://a.example", "https://chat.example.com/"]',
            "allowed_origins[1]: 'https://chat.example.com/'",
        ),
        (
            '["ftp://files.example"]',
            "allowed_origins[0]: 'ftp://files.example': the scheme must be http or https",
        ),
        ('["https://a.example:70000"]', "allowed_origins[0]: port 70000 is out of range"),
        ('["chat.example.com"]', "allowed_origins[0]: 'chat.example.com' is not scheme://host[:port]"),
        ('["https://user@chat.example.com"]', "allowed_origins[0]:"),
        ('"https://chat.example.com"', "allowed_origins: expected an array of strings"),
        (
            '["https://a.example", "HTTPS://A.example:443"]',
            "allowed_origins: 'HTTPS://A.example:443' is listed twice (as 'https://a.example')",
        ),
    ],
)
def test_a_bad_allowed_origin_stops_start_up_naming_the_key(origins, message):
    with pytest.raises(ConfigError) as info:
        parse(config_with_origins(origins))
    assert message in str(info.value)


def test_allowed_origins_of_websockets_is_checked_the_same_way():
    with pytest.raises(ConfigError, match=r"handlers\.mod_websockets\[0\]\.allowed_origins\[0\]"):
        parse(config_with_origins('["null"]', kind="mod_websockets"))


# --- CORS headers --------------------------------------------------------------------------------------


def test_cors_names_only_an_allowed_origin_never_a_wildcard():
    allowed = dict(cors_headers(ws_verdict(WEB_CLIENT)))
    assert allowed[b"access-control-allow-origin"] == WEB_CLIENT.encode()
    assert allowed[b"access-control-allow-credentials"] == b"true"
    assert allowed[b"vary"] == b"origin"
    assert b"access-control-allow-origin" not in dict(cors_headers(ws_verdict("https://evil.example")))
    assert b"access-control-allow-origin" not in dict(cors_headers(ws_verdict(None)))


# --- the BOSH app, through ASGI --------------------------------------------------------------------------


def call_bosh(request_scope: dict, body: bytes = b"") -> tuple[int, dict[bytes, bytes], bytes]:
    messages: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        messages.append(message)

    asyncio.run(BoshApp()(request_scope, receive, send))
    start, content = messages
    return start["status"], dict(start["headers"]), content["body"]


@pytest.fixture
def xmpp_config(settings):
    settings.XMPP = CONFIG


def bosh_scope(origin, method="POST", **kwargs):
    return scope(origin, path="/http-bind", kind="http", scheme="https", method=method, **kwargs)


def test_bosh_refuses_a_post_from_another_page_before_reading_it(xmpp_config, caplog):
    status, headers, body = call_bosh(bosh_scope("https://evil.example"), b"not even XML")
    assert status == 403
    assert b"condition='policy-violation'" in body.replace(b'"', b"'")
    assert b"access-control-allow-origin" not in headers
    assert "POST refused (HTTP 403), Origin 'https://evil.example'" in caplog.text


def test_bosh_refuses_a_preflight_from_another_page(xmpp_config):
    status, headers, _ = call_bosh(bosh_scope("https://evil.example", method="OPTIONS"))
    assert status == 403
    assert b"access-control-allow-origin" not in headers
    assert b"access-control-allow-methods" not in headers


def test_bosh_answers_a_preflight_from_an_allowed_page_naming_it(xmpp_config):
    status, headers, _ = call_bosh(bosh_scope(WEB_CLIENT, method="OPTIONS"))
    assert status == 200
    assert headers[b"access-control-allow-origin"] == WEB_CLIENT.encode()
    assert headers[b"access-control-allow-credentials"] == b"true"
    assert headers[b"access-control-allow-methods"] == b"POST, OPTIONS"
    assert headers[b"access-control-allow-headers"] == b"content-type"


def test_bosh_answers_a_same_origin_post_naming_its_origin(xmpp_config):
    status, headers, _ = call_bosh(bosh_scope("https://localhost:5443"), b"<body/>")
    assert status == 400  # past the Origin check: the body is read (and is not XEP-0124's)
    assert headers[b"access-control-allow-origin"] == b"https://localhost:5443"


def test_bosh_without_origin_has_no_cors_headers(xmpp_config):
    status, headers, _ = call_bosh(bosh_scope(None), b"<body/>")
    assert status == 400
    assert not any(name.startswith(b"access-control-") for name in headers)
