"""The LDAP method's options: MongooseIM's [outgoing_pools.ldap.<tag>], [auth.ldap]; refused in one line."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from xmppauth.config import Config, ConfigError, parse_config

# MongooseIM's own examples (doc/authentication-methods/ldap.md), with methods and mechanisms around them.
MONGOOSEIM_EXAMPLE = """
[auth]
methods = ["ldap"]
sasl_mechanisms = ["plain", "external"]

[auth.ldap]
  base = "ou=Users,dc=example,dc=com"
  filter = "(objectClass=inetOrgPerson)"

[outgoing_pools.ldap.default]
  workers = 5
  connection.servers = ["ldap-server.example.com"]
  connection.rootdn = "cn=admin,dc=example,dc=com"
  connection.password = "ldap-admin-password"

[outgoing_pools.ldap.bind]
  connection.servers = ["ldap-server.example.com"]
"""


def parse(text: str, base_dir: str | Path = "/etc/xmppauth") -> Config:
    return parse_config(tomllib.loads(text), "test.toml", base_dir=base_dir)


def config_error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_mongooseim_example_loads_as_written() -> None:
    auth = parse(MONGOOSEIM_EXAMPLE).auth
    assert auth.methods == ("ldap",) and auth.sasl_mechanisms == ("plain", "external")
    assert auth.ldap is not None
    assert auth.ldap.base == "ou=Users,dc=example,dc=com"
    assert auth.ldap.filter == "(objectClass=inetOrgPerson)"
    assert auth.ldap.uids == (("uid", "%u"),)
    default = auth.ldap.pool("default")
    assert default is not None and default.workers == 5 and default.effective_port == 389
    assert default.rootdn == "cn=admin,dc=example,dc=com" and "ldap-admin-password" not in repr(default)
    bind = auth.ldap.pool("bind")
    assert bind is not None and bind.rootdn == ""


def test_ldap_serves_plain_and_external_but_not_scram() -> None:
    text = MONGOOSEIM_EXAMPLE.replace('["plain", "external"]', '["scram_sha256", "plain"]')
    assert "auth.sasl_mechanisms[0]" in config_error(text)


def test_base_is_required() -> None:
    text = '[auth]\nmethods = ["ldap"]\n[outgoing_pools.ldap.default]\nconnection.servers = ["a"]\n'
    assert "auth.ldap.base" in config_error(text)


def test_the_search_pool_is_required() -> None:
    text = '[auth]\nmethods = ["ldap"]\n[auth.ldap]\nbase = "dc=x"\n'
    assert "outgoing_pools.ldap.default" in config_error(text)
    text += 'pool_tag = "mine"\n[outgoing_pools.ldap.default]\nconnection.servers = ["a"]\n'
    assert "outgoing_pools.ldap.mine" in config_error(text)


def test_uids_with_format() -> None:
    text = MONGOOSEIM_EXAMPLE.replace(
        'filter = "(objectClass=inetOrgPerson)"',
        'uids = [{attr = "uid", format = "%u@example.org"}, {attr = "another_uid"}]',
    )
    assert parse(text).auth.ldap.uids == (("uid", "%u@example.org"), ("another_uid", "%u"))  # type: ignore[union-attr]
    bad = MONGOOSEIM_EXAMPLE.replace(
        'filter = "(objectClass=inetOrgPerson)"', 'uids = [{attr = "uid", format = "x"}]'
    )
    assert "auth.ldap.uids[0].format" in config_error(bad)


def test_filter_must_be_parenthesised() -> None:
    text = MONGOOSEIM_EXAMPLE.replace('"(objectClass=inetOrgPerson)"', '"objectClass=inetOrgPerson"')
    assert "auth.ldap.filter" in config_error(text)


def test_dn_filter_and_local_filter() -> None:
    text = MONGOOSEIM_EXAMPLE.replace(
        'filter = "(objectClass=inetOrgPerson)"',
        'dn_filter = {filter = "(&(name=%s)(owner=%D)(user=%u@%d))", attributes = ["sn"]}\n'
        'local_filter.operation = "notequal"\nlocal_filter.attribute = "accountStatus"\n'
        'local_filter.values = ["disabled", "blacklisted"]\nderef = "always"',
    )
    ldap = parse(text).auth.ldap
    assert ldap is not None and ldap.dn_filter is not None and ldap.dn_filter.attributes == ("sn",)
    assert ldap.local_filter is not None and ldap.local_filter.operation == "notequal"
    assert ldap.deref == "always"
    bad = text.replace('deref = "always"', 'deref = "sometimes"')
    assert "auth.ldap.deref" in config_error(bad)


def test_tls_spellings(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    pool = '[outgoing_pools.ldap.default]\nconnection.servers = ["a"]\n'
    base = '[auth]\nmethods = ["ldap"]\n[auth.ldap]\nbase = "dc=x"\n'
    ldaps = parse(base + pool + 'connection.encrypt = "tls"\n', tmp_path).auth.ldap.pool("default")  # type: ignore[union-attr]
    assert ldaps.encrypt == "tls" and ldaps.effective_port == 636 and ldaps.tls_verify_peer
    table = parse(base + pool + f'connection.tls.cacertfile = "{ca}"\n', tmp_path).auth.ldap.pool("default")  # type: ignore[union-attr]
    assert table.encrypt == "tls" and table.tls_cacertfile == str(ca)
    starttls = base + pool + f'connection.encrypt = "starttls"\nconnection.tls.cacertfile = "{ca}"\n'
    assert parse(starttls, tmp_path).auth.ldap.pool("default").effective_port == 389  # type: ignore[union-attr]
    none = base + pool + 'connection.encrypt = "none"\nconnection.tls.verify_mode = "none"\n'
    assert "connection.tls" in config_error(none)
    missing = base + pool + 'connection.tls.cacertfile = "/nonexistent/ca.pem"\n'
    assert "cacertfile" in config_error(missing)
    unverified = base + pool + 'connection.tls.verify_mode = "none"\n'
    assert parse(unverified).auth.ldap.pool("default").tls_verify_peer is False  # type: ignore[union-attr]


def test_an_unverified_directory_is_said_at_start_up(caplog: pytest.LogCaptureFixture) -> None:
    base = '[auth]\nmethods = ["ldap"]\n[auth.ldap]\nbase = "dc=x"\n[outgoing_pools.ldap.default]\n'
    with caplog.at_level("WARNING"):
        parse(base + 'connection.encrypt = "tls"\n')
    assert "not verified" not in caplog.text
    with caplog.at_level("WARNING"):
        parse(base + 'connection.tls.verify_mode = "none"\n')
    assert "outgoing_pools.ldap.default.connection.tls" in caplog.text and "not verified" in caplog.text


def test_unknown_keys_are_refused_with_their_path() -> None:
    text = MONGOOSEIM_EXAMPLE.replace("workers = 5", "workers = 5\nconnection.sever = 1")
    assert "outgoing_pools.ldap.default.connection.sever" in config_error(text)
    assert "auth.ldap.bse" in config_error(MONGOOSEIM_EXAMPLE.replace("base =", "bse = 1\nbase ="))


def test_ldap_options_without_the_method_are_not_used(caplog: pytest.LogCaptureFixture) -> None:
    text = '[auth]\nmethods = ["pki"]\n[auth.ldap]\nbase = "dc=x"\n'
    with caplog.at_level("INFO"):
        assert parse(text).auth.ldap is None
    assert "does not include" in caplog.text
