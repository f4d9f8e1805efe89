"""``tls.cacert_domains`` in xmppauth.config: the hosts a listener's ``tls.cacertfile`` CAs may vouch for.

Issue 11 point 10. Pure: no database. Every refusal is a ConfigError naming the dotted key.
"""

from __future__ import annotations

import tomllib

import pytest

from xmppauth.config import Config, ConfigError, describe, parse_config

HOSTS = '[general]\nhosts = ["a.example", "b.example"]\n'


def parse(text: str) -> Config:
    return parse_config(tomllib.loads(HOSTS + text), "test.toml", base_dir="/etc/xmppauth")


def config_error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return str(info.value)


def test_cacert_domains_next_to_cacertfile_is_kept_normalised_like_hosts() -> None:
    config = parse('[listen.c2s]\ntls.cacertfile = "ca.pem"\ntls.cacert_domains = ["A.Example."]\n')
    (c2s,) = config.listen_c2s
    assert c2s.tls is not None
    assert c2s.tls.cacert_domains == ("a.example",)
    assert "cacertfile CAs for a.example only" in describe(config)


def test_cacert_domains_is_empty_when_not_given() -> None:
    (c2s,) = parse('[listen.c2s]\ntls.cacertfile = "ca.pem"\n').listen_c2s
    assert c2s.tls is not None and c2s.tls.cacert_domains == ()


def test_cacert_domains_on_an_http_listener_is_checked_too() -> None:
    (http,) = parse(
        '[[listen.http]]\ntls.cacertfile = "ca.pem"\ntls.cacert_domains = ["b.example"]\n'
    ).listen_http
    assert http.tls is not None and http.tls.cacert_domains == ("b.example",)
    message = config_error('[[listen.http]]\ntls.cacertfile = "ca.pem"\ntls.cacert_domains = ["c.example"]\n')
    assert message.startswith("test.toml: listen.http[0].tls.cacert_domains[0]: ")


def test_cacert_domains_naming_a_host_we_do_not_serve_stops_start_up() -> None:
    message = config_error(
        '[[listen.c2s]]\ntls.cacertfile = "ca.pem"\ntls.cacert_domains = ["a.example", "c.example"]\n'
    )
    assert message == (
        "test.toml: listen.c2s[0].tls.cacert_domains[1]: 'c.example' is not one of general.hosts "
        "(a.example, b.example)"
    )


def test_cacert_domains_without_cacertfile_stops_start_up() -> None:
    message = config_error('[listen.c2s]\ntls.cacert_domains = ["a.example"]\n')
    assert message.startswith("test.toml: listen.c2s.tls.cacert_domains: ")
    assert "listen.c2s.tls.cacertfile, which is not set" in message


def test_empty_cacert_domains_stops_start_up() -> None:
    # An empty list would read as "no domain" but mean "every domain": refused, leave the key out instead.
    message = config_error('[listen.c2s]\ntls.cacertfile = "ca.pem"\ntls.cacert_domains = []\n')
    assert message.startswith("test.toml: listen.c2s.tls.cacert_domains: must name at least one host")


def test_cacert_domains_listed_twice_after_lowercasing_stops_start_up() -> None:
    message = config_error(
        '[listen.c2s]\ntls.cacertfile = "ca.pem"\ntls.cacert_domains = ["a.example", "A.EXAMPLE"]\n'
    )
    assert message == (
        "test.toml: listen.c2s.tls.cacert_domains: 'a.example' is listed twice (compared lowercased)"
    )


def test_cacert_domains_must_be_an_array_of_strings() -> None:
    message = config_error('[listen.c2s]\ntls.cacertfile = "ca.pem"\ntls.cacert_domains = "a.example"\n')
    assert message.startswith("test.toml: listen.c2s.tls.cacert_domains: expected an array of strings")
