"""Tests for xmppauth.config: the MongooseIM-style TOML file an operator writes. Pure: no database."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.seed_configs import SEED_EXAMPLE_1, SEED_EXAMPLE_2
from xmppauth.config import (
    Config,
    ConfigError,
    HttpHandler,
    describe,
    load_config,
    parse_config,
)

PROJECT_DIR = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "xmppauth.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def parse(text: str, base_dir: str | Path = "/etc/xmppauth") -> Config:
    return parse_config(tomllib.loads(text), "test.toml", base_dir=base_dir)


def config_error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return str(info.value)


# --- the seed examples and the committed default --------------------------------------------------------


def test_seed_example_1_loads_as_written(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SEED_EXAMPLE_1))

    assert config.hosts == ("localhost",)
    (c2s,) = config.listen_c2s
    assert (c2s.port, c2s.ip_address, c2s.max_stanza_size) == (5222, "0.0.0.0", 65536)
    assert c2s.tls is not None
    assert c2s.tls.mode == "starttls"  # MongooseIM's default mode when tls options are present
    assert c2s.tls.verify_mode == "peer"
    assert c2s.tls.disconnect_on_failure is True
    assert c2s.tls.cacertfile == str(tmp_path / "ca.pem")
    assert c2s.tls.certfile is None  # start-up uses the bootstrap server certificate

    (http,) = config.listen_http
    assert http.port == 5285
    assert http.tls is not None and http.tls.mode == "tls"  # tls options on http mean HTTPS
    assert http.tls.verify_mode == "peer"
    assert http.handlers == (
        HttpHandler(kind="mod_bosh", host="_", path="/http-bind"),
        HttpHandler(kind="mod_websockets", host="_", path="/ws-xmpp"),
    )

    assert config.auth.methods == ("pki",)
    assert config.auth.sasl_mechanisms == ("external",)
    assert config.auth.sasl_external == ("standard",)


def test_seed_example_2_loads_as_written(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SEED_EXAMPLE_2))

    (c2s,) = config.listen_c2s
    assert c2s.tls is not None and c2s.tls.verify_mode == "peer"
    assert config.listen_http == ()
    assert config.auth.methods == ("rdbms", "pki")
    assert config.auth.sasl_mechanisms == ("scram_sha1", "external")


def test_committed_development_config_loads() -> None:
    config = load_config(PROJECT_DIR / "xmppauth.toml")

    assert config.hosts == ("localhost",)
    assert [(li.port, li.tls.mode if li.tls else None) for li in config.listen_c2s] == [
        (5222, "starttls"),
        (5223, "tls"),
    ]
    assert all(li.ip_address == "127.0.0.1" for li in config.listen_c2s)
    (http,) = config.listen_http
    assert http.port == 5443
    assert {h.path for h in http.handlers} == {"/ws-xmpp", "/http-bind"}
    tls = config.listen_c2s[0].tls
    assert tls is not None
    assert tls.certfile == str(PROJECT_DIR / "var" / "pki" / "server.pem")
    assert tls.disconnect_on_failure is False
    assert config.auth.methods == ("pki",)


def test_empty_file_gives_the_defaults() -> None:
    config = parse("")

    assert config.hosts == ("localhost",)
    assert config.listen_c2s == () and config.listen_http == ()
    assert config.auth.methods == ("pki",)
    assert config.options.crl_grace_seconds == 3600
    assert config.options.crl_refresh_min_seconds == 60
    assert config.options.crl_refresh_max_seconds == 3600
    assert config.options.crl_fetch_timeout_seconds == 10
    assert config.options.ping_interval_seconds == 60
    assert config.options.session_lease_seconds == 30
    assert config.options.trusted_proxies == ()


# --- listeners ------------------------------------------------------------------------------------------


def test_array_and_single_table_forms_give_the_same_listener() -> None:
    single = parse('[listen.c2s]\nport = 5222\ntls.mode = "starttls_required"\n')
    array = parse('[[listen.c2s]]\nport = 5222\ntls.mode = "starttls_required"\n')

    assert single.listen_c2s == array.listen_c2s
    assert single.listen_c2s[0].tls is not None
    assert single.listen_c2s[0].tls.mode == "starttls_required"


def test_several_c2s_listeners_in_array_form() -> None:
    config = parse('[[listen.c2s]]\nport = 5222\n[[listen.c2s]]\nport = 5223\ntls.mode = "tls"\n')

    assert [li.port for li in config.listen_c2s] == [5222, 5223]
    assert config.listen_c2s[0].tls is None  # no tls table: no TLS offered
    assert config.listen_c2s[1].tls is not None and config.listen_c2s[1].tls.mode == "tls"


def test_listener_defaults() -> None:
    config = parse("[listen.c2s]\n[listen.http]\n")

    assert (config.listen_c2s[0].port, config.listen_c2s[0].ip_address) == (5222, "0.0.0.0")
    assert (config.listen_http[0].port, config.listen_http[0].tls) == (5443, None)
    assert config.listen_http[0].handlers == ()


def test_http_listener_accepts_single_table_handler() -> None:
    config = parse('[listen.http]\n[listen.http.handlers.mod_websockets]\npath = "/ws"\n')

    assert config.listen_http[0].handlers == (HttpHandler(kind="mod_websockets", host="_", path="/ws"),)


def test_http_handler_without_path_is_rejected() -> None:
    message = config_error('[listen.http]\n[[listen.http.handlers.mod_bosh]]\nhost = "_"\n')

    assert "listen.http.handlers.mod_bosh[0].path" in message


def test_unknown_http_handler_is_rejected_with_accepted_kinds() -> None:
    message = config_error('[listen.http]\n[[listen.http.handlers.mongoose_admin_api]]\npath = "/api"\n')

    assert "listen.http.handlers.mongoose_admin_api" in message
    assert "mod_websockets" in message and "mod_bosh" in message


def test_http_tls_mode_other_than_tls_is_rejected() -> None:
    message = config_error('[listen.http]\ntls.mode = "starttls"\n')

    assert "listen.http.tls.mode" in message and "'starttls'" in message


def test_max_stanza_size_infinity_is_refused() -> None:
    message = config_error('[listen.c2s]\nmax_stanza_size = "infinity"\n')

    assert "listen.c2s.max_stanza_size" in message and "infinity" in message


def test_max_stanza_size_is_read() -> None:
    assert parse("[listen.c2s]\nmax_stanza_size = 10_000\n").listen_c2s[0].max_stanza_size == 10000


def test_backlog_is_mongooseims_with_its_default_of_1024() -> None:
    assert parse("[listen.c2s]\n").listen_c2s[0].backlog == 1024
    assert parse("[listen.c2s]\nbacklog = 4096\n").listen_c2s[0].backlog == 4096
    for bad in ("0", '"many"', "-5"):
        assert "listen.c2s.backlog" in config_error(f"[listen.c2s]\nbacklog = {bad}\n")


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_port_outside_1_to_65535_is_rejected(port: int) -> None:
    message = config_error(f"[[listen.c2s]]\nport = {port}\n")

    assert "listen.c2s[0].port" in message and "1..65535" in message


def test_port_as_string_is_a_type_error() -> None:
    message = config_error('[listen.c2s]\nport = "5222"\n')

    assert "listen.c2s.port" in message and "expected an integer" in message


def test_invalid_ip_address_is_rejected() -> None:
    assert "listen.c2s.ip_address" in config_error('[listen.c2s]\nip_address = "localhost"\n')


def test_two_listeners_on_the_same_port_are_rejected() -> None:
    message = config_error(
        '[listen.c2s]\nport = 5222\n[listen.http]\nport = 5222\nip_address = "127.0.0.1"\n'
    )

    assert "listen.http.port" in message and "listen.c2s" in message


def test_same_port_on_different_addresses_is_allowed() -> None:
    config = parse(
        '[[listen.c2s]]\nport = 5222\nip_address = "127.0.0.1"\n'
        '[[listen.c2s]]\nport = 5222\nip_address = "127.0.0.2"\n'
    )

    assert len(config.listen_c2s) == 2


# --- TLS options ----------------------------------------------------------------------------------------


def test_verify_peer_false_means_none() -> None:
    tls = parse("[listen.c2s]\ntls.verify_peer = false\n").listen_c2s[0].tls

    assert tls is not None and tls.verify_mode == "none"


def test_verify_peer_true_means_peer() -> None:
    tls = parse("[listen.c2s]\ntls.verify_peer = true\n").listen_c2s[0].tls

    assert tls is not None and tls.verify_mode == "peer"


def test_verify_peer_agreeing_with_verify_mode_is_accepted() -> None:
    tls = parse('[listen.c2s]\ntls.verify_peer = true\ntls.verify_mode = "peer"\n').listen_c2s[0].tls

    assert tls is not None and tls.verify_mode == "peer"


def test_verify_peer_contradicting_verify_mode_is_rejected() -> None:
    message = config_error('[listen.c2s]\ntls.verify_peer = true\ntls.verify_mode = "none"\n')

    assert "listen.c2s.tls.verify_peer" in message and "verify_mode" in message


def test_verify_peer_true_contradicts_selfsigned_peer() -> None:
    assert "verify_peer" in config_error(
        '[listen.c2s]\ntls.verify_peer = true\ntls.verify_mode = "selfsigned_peer"\n'
    )


def test_selfsigned_peer_is_accepted() -> None:
    tls = parse('[listen.c2s]\ntls.verify_mode = "selfsigned_peer"\n').listen_c2s[0].tls

    assert tls is not None and tls.verify_mode == "selfsigned_peer"


def test_each_selfsigned_peer_listener_gets_a_startup_warning_about_pinning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("WARNING", logger="xmppauth.config")
    parse(
        '[[listen.c2s]]\nport = 5222\ntls.verify_mode = "selfsigned_peer"\n'
        '[[listen.c2s]]\nport = 5223\ntls.mode = "tls"\ntls.verify_mode = "peer"\n'
        '[[listen.http]]\nport = 5443\ntls.verify_mode = "selfsigned_peer"\n'
        '[[listen.http.handlers.mod_websockets]]\npath = "/ws-xmpp"\n'
    )
    warnings = [r.getMessage() for r in caplog.records if "selfsigned_peer" in r.getMessage()]
    assert len(warnings) == 2, warnings
    assert "listen.c2s[0].tls.verify_mode" in warnings[0]
    assert "listen.http[0].tls.verify_mode" in warnings[1]
    assert all("pinned" in text and "trust on first use" in text for text in warnings)
    assert all(r.levelname == "WARNING" for r in caplog.records if "selfsigned_peer" in r.getMessage())


def test_peer_listener_gets_no_pinning_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="xmppauth.config")
    parse('[listen.c2s]\ntls.verify_mode = "peer"\n')
    assert "selfsigned_peer" not in caplog.text


def test_unknown_verify_mode_value_is_rejected_with_accepted_values() -> None:
    message = config_error('[[listen.c2s]]\ntls.verify_mode = "strict"\n')

    assert "listen.c2s[0].tls.verify_mode" in message
    assert "'strict'" in message
    assert "peer, selfsigned_peer, none" in message


def test_unknown_tls_mode_is_rejected() -> None:
    message = config_error('[listen.c2s]\ntls.mode = "ssl"\n')

    assert "listen.c2s.tls.mode" in message and "starttls, starttls_required, tls" in message


def test_boolean_must_be_a_real_toml_boolean() -> None:
    message = config_error('[listen.c2s]\ntls.disconnect_on_failure = "false"\n')

    assert "listen.c2s.tls.disconnect_on_failure" in message and "boolean" in message


def test_verify_peer_as_integer_is_a_type_error() -> None:
    assert "listen.c2s.tls.verify_peer" in config_error("[listen.c2s]\ntls.verify_peer = 1\n")


def test_relative_paths_are_resolved_against_the_config_directory(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = write(
        tmp_path / "etc",
        '[listen.c2s]\ntls.certfile = "pki/server.pem"\ntls.keyfile = "../keys/server.key"\n'
        'tls.cacertfile = "/abs/ca.pem"\ntls.crl_files = ["a.crl", "/abs/b.crl"]\n',
    )

    tls = load_config(path).listen_c2s[0].tls

    assert tls is not None
    assert tls.certfile == str(tmp_path / "etc" / "pki" / "server.pem")
    assert tls.keyfile == str(tmp_path / "keys" / "server.key")
    assert tls.cacertfile == "/abs/ca.pem"
    assert tls.crl_files == (str(tmp_path / "etc" / "a.crl"), "/abs/b.crl")


def test_relative_paths_resolve_against_config_directory_not_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    write(tmp_path / "etc", '[listen.c2s]\ntls.cacertfile = "ca.pem"\n')
    monkeypatch.chdir(tmp_path)

    tls = load_config("etc/xmppauth.toml").listen_c2s[0].tls

    assert tls is not None and tls.cacertfile == str(tmp_path / "etc" / "ca.pem")


def test_crl_files_must_be_an_array_of_strings() -> None:
    message = config_error('[listen.c2s]\ntls.crl_files = "a.crl"\n')

    assert "listen.c2s.tls.crl_files" in message and "array" in message


# --- unknown keys ---------------------------------------------------------------------------------------


def test_misspelled_key_is_rejected_with_key_named_and_suggestion() -> None:
    message = config_error(
        '[[listen.c2s]]\nport = 5222\n[[listen.c2s]]\nport = 5223\ntls.verify_mod = "peer"\n'
    )

    assert "'listen.c2s[1].tls.verify_mod'" in message
    assert "did you mean 'listen.c2s[1].tls.verify_mode'" in message
    assert "verify_mode, verify_peer" in message  # lists the accepted keys


def test_unknown_top_level_section_is_rejected() -> None:
    message = config_error("[modules.mod_ping]\n")

    assert "'modules'" in message and "general, listen, auth" in message


def test_unsupported_listener_type_is_rejected() -> None:
    message = config_error("[[listen.s2s]]\nport = 5269\n")

    assert "'listen.s2s'" in message and "c2s, http" in message


def test_misspelled_auth_key_gets_suggestion() -> None:
    message = config_error('[auth]\nsasl_mechanism = ["external"]\n')

    assert "'auth.sasl_mechanism'" in message and "did you mean 'auth.sasl_mechanisms'" in message


def test_listed_mongooseim_keys_are_ignored_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="xmppauth.config")

    config = parse(
        '[general]\nhosts = ["a.example"]\nloglevel = "warning"\ndefault_server_domain = "a.example"\n'
        '[[listen.c2s]]\nport = 5222\naccess = "c2s"\nshaper = "c2s_shaper"\n'
    )

    assert config.listen_c2s[0].port == 5222
    assert "listen.c2s[0].access" in caplog.text and "general.loglevel" in caplog.text


def test_ignored_keys_are_only_ignored_where_listed() -> None:
    # `access` is accepted on c2s listeners only, not on http ones.
    assert "'listen.http.access'" in config_error('[listen.http]\naccess = "c2s"\n')


# --- general --------------------------------------------------------------------------------------------


def test_hosts_are_lowercased() -> None:
    assert parse('[general]\nhosts = ["Example.COM", "b.example"]\n').hosts == ("example.com", "b.example")


def test_duplicate_hosts_after_lowercasing_are_rejected() -> None:
    message = config_error('[general]\nhosts = ["example.com", "EXAMPLE.com"]\n')

    assert "general.hosts" in message and "twice" in message


def test_empty_hosts_is_rejected() -> None:
    assert "general.hosts" in config_error("[general]\nhosts = []\n")


def test_host_that_is_not_a_domain_is_rejected() -> None:
    assert "general.hosts[0]" in config_error('[general]\nhosts = ["user@example.com"]\n')


def test_hosts_must_be_an_array() -> None:
    assert "general.hosts" in config_error('[general]\nhosts = "example.com"\n')


# --- auth -----------------------------------------------------------------------------------------------


def test_unknown_auth_method_is_rejected_with_accepted_methods() -> None:
    message = config_error('[auth]\nmethods = ["pki", "anonymous"]\n')

    assert "auth.methods[1]" in message and "'anonymous'" in message
    assert "pki, db, http, rdbms, ldap" in message


def test_internal_is_rdbms() -> None:
    """Issue 14: MongooseIM's `internal` keeps passwords in our database as `rdbms` does."""
    assert parse('[auth]\nmethods = ["internal", "pki"]\n').auth.methods == ("rdbms", "pki")
    assert "twice" in config_error('[auth]\nmethods = ["internal", "rdbms"]\n')


def test_password_options_follow_mongooseim() -> None:
    config = parse(
        '[auth]\nmethods = ["rdbms"]\nsasl_mechanisms = ["scram_sha256"]\n'
        '[auth.password]\nformat = "scram"\nhash = ["sha256"]\nscram_iterations = 20000\n'
    )
    assert config.auth.password.hashes == ("sha256",) and config.auth.password.scram_iterations == 20000
    assert config.auth.password_methods == ("rdbms",)


def test_plain_password_format_is_refused() -> None:
    message = config_error('[auth]\nmethods = ["rdbms"]\n[auth.password]\nformat = "plain"\n')
    assert "auth.password.format" in message and "scram" in message


def test_scram_mechanism_without_its_hash_is_refused() -> None:
    message = config_error(
        '[auth]\nmethods = ["rdbms"]\nsasl_mechanisms = ["scram_sha512"]\n'
        '[auth.password]\nhash = ["sha256"]\n'
    )
    assert "auth.password.hash" in message and "scram_sha512" in message


def test_too_few_scram_iterations_are_refused() -> None:
    message = config_error('[auth]\nmethods = ["rdbms"]\n[auth.password]\nscram_iterations = 1000\n')
    assert "auth.password.scram_iterations" in message and "4096" in message


def test_method_and_methods_together_are_rejected() -> None:
    message = config_error('[auth]\nmethod = ["pki"]\nmethods = ["pki"]\n')

    assert "auth.method" in message and "not both" in message


def test_empty_methods_is_rejected() -> None:
    assert "auth.methods" in config_error("[auth]\nmethods = []\n")


def test_duplicate_method_is_rejected() -> None:
    assert "twice" in config_error('[auth]\nmethods = ["pki", "pki"]\n')


def test_unknown_sasl_mechanism_is_rejected() -> None:
    message = config_error('[auth]\nsasl_mechanisms = ["EXTERNAL"]\n')

    assert "auth.sasl_mechanisms[0]" in message and "external" in message


def test_mongooseim_mechanism_we_do_not_implement_is_rejected() -> None:
    message = config_error('[auth]\nsasl_mechanisms = ["external", "digest"]\n')

    assert "auth.sasl_mechanisms[1]" in message and "does not implement" in message


def test_mechanism_no_method_serves_stops_start_up() -> None:
    """Issue 14 §5: no silent no-op; the line names the entry and what would serve it."""
    message = config_error('[auth]\nmethods = ["pki"]\nsasl_mechanisms = ["external", "plain"]\n')
    assert "auth.sasl_mechanisms[1]" in message and "'plain'" in message and "rdbms" in message
    message = config_error('[auth]\nmethods = ["rdbms"]\nsasl_mechanisms = ["scram_sha256", "external"]\n')
    assert "auth.sasl_mechanisms[1]" in message and "pki" in message


def test_http_method_serves_no_password() -> None:
    """Our http method asks only get_certs: a password mechanism through it would never be offered."""
    text = '[auth]\nmethods = ["http"]\nsasl_mechanisms = ["plain"]\n'
    text += '[outgoing_pools.http.auth]\nconnection.host = "https://auth.example:8000"\n'
    assert "auth.sasl_mechanisms[0]" in config_error(text)


def test_ldap_is_accepted_with_its_options() -> None:
    message = config_error('[auth]\nmethods = ["pki", "ldap"]\n')
    assert "auth.ldap.base" in message  # implemented: its own options are now what is missing


def test_default_mechanisms_are_those_the_methods_serve() -> None:
    assert parse('[auth]\nmethods = ["pki"]\n').auth.sasl_mechanisms == ("external",)
    mechanisms = parse('[auth]\nmethods = ["rdbms", "pki"]\n').auth.sasl_mechanisms
    assert mechanisms[0] == "external" and mechanisms[-1] == "plain" and "scram_sha256_plus" in mechanisms


def test_password_options_without_a_password_method_warn(caplog: pytest.LogCaptureFixture) -> None:
    parse('[auth]\nmethods = ["pki"]\n[auth.password]\nhash = ["sha256"]\n')
    assert "auth.password is set" in caplog.text


def test_sasl_external_verifiers_and_common_name_affixes() -> None:
    auth = parse(
        '[auth]\nsasl_external = ["standard", "common_name", "mypackage.verifiers.verify"]\n'
        'sasl_external_common_name.prefix = "cert-"\nsasl_external_common_name.suffix = ""\n'
    ).auth

    assert auth.sasl_external == ("standard", "common_name", "mypackage.verifiers.verify")
    assert (auth.common_name_prefix, auth.common_name_suffix) == ("cert-", "")


def test_unknown_sasl_external_verifier_is_rejected() -> None:
    message = config_error('[auth]\nsasl_external = ["cn"]\n')

    assert "auth.sasl_external[0]" in message and "standard, common_name, auth_id" in message


def test_auth_id_verifier_logs_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    parse('[auth]\nsasl_external = ["auth_id"]\n')

    assert any(r.levelname == "WARNING" and "auth_id" in r.getMessage() for r in caplog.records)


def test_http_method_reads_mongooseim_pool_and_basic_auth() -> None:
    auth = parse(
        '[auth]\nmethods = ["http"]\nsasl_mechanisms = ["external"]\n'
        '[auth.http]\nbasic_auth = "xmpp:s3cret"\n'
        '[outgoing_pools.http.auth]\nconnection.host = "https://auth.example:8000"\n'
        'connection.path_prefix = "/api"\nconnection.request_timeout = 5000\n'
    ).auth

    assert auth.http is not None
    assert auth.http.base_url == "https://auth.example:8000/api/"
    assert auth.http.request_timeout_ms == 5000
    assert auth.http.basic_auth == "xmpp:s3cret"
    assert "s3cret" not in repr(auth.http)


def test_http_method_without_pool_is_rejected() -> None:
    message = config_error('[auth]\nmethods = ["http"]\n')

    assert "outgoing_pools.http.auth.connection.host" in message


def test_http_pool_host_with_credentials_is_rejected() -> None:
    message = config_error(
        '[auth]\nmethods = ["http"]\n[outgoing_pools.http.auth]\nconnection.host = "https://u:p@auth.example"\n'
    )

    assert "outgoing_pools.http.auth.connection.host" in message and "basic_auth" in message


def test_basic_auth_error_does_not_echo_the_secret() -> None:
    message = config_error(
        '[auth]\nmethods = ["http"]\n[auth.http]\nbasic_auth = "nocolonsecret"\n'
        '[outgoing_pools.http.auth]\nconnection.host = "http://127.0.0.1:8000"\n'
    )

    assert "auth.http.basic_auth" in message and "nocolonsecret" not in message


# --- [xmppauth] options ---------------------------------------------------------------------------------


BEHIND_PROXY = '[[listen.http]]\nport = 5280\nip_address = "127.0.0.1"\nbehind_tls_proxy = true\n'


def test_xmppauth_options_are_read() -> None:
    options = parse(
        BEHIND_PROXY + "[xmppauth]\n"
        'trusted_proxies = ["10.0.0.5", "192.168.0.0/16", "::1"]\n'
        "crl_grace_seconds = 0\ncrl_refresh_min_seconds = 30\ncrl_refresh_max_seconds = 600\n"
        "ping_interval_seconds = 0\nsession_lease_seconds = 10\ncrl_fail_open = true\n"
    ).options

    assert options.trusted_proxies == (
        ipaddress.ip_network("10.0.0.5/32"),
        ipaddress.ip_network("192.168.0.0/16"),
        ipaddress.ip_network("::1/128"),
    )
    assert (options.crl_grace_seconds, options.crl_refresh_min_seconds, options.crl_refresh_max_seconds) == (
        0,
        30,
        600,
    )
    assert (options.ping_interval_seconds, options.session_lease_seconds) == (0, 10)
    assert options.crl_fail_open is True


def test_trusted_proxy_membership() -> None:
    options = parse(BEHIND_PROXY + '[xmppauth]\ntrusted_proxies = ["10.0.0.0/8"]\n').options

    assert options.is_trusted_proxy("10.1.2.3")
    assert not options.is_trusted_proxy("11.1.2.3")
    assert not options.is_trusted_proxy("not an address")


def test_no_trusted_proxies_by_default_trusts_nobody() -> None:
    assert not parse("").options.is_trusted_proxy("127.0.0.1")


def test_invalid_trusted_proxy_is_rejected() -> None:
    assert "xmppauth.trusted_proxies[0]" in config_error('[xmppauth]\ntrusted_proxies = ["nginx"]\n')


def test_trusted_proxies_without_a_listener_behind_a_proxy_is_rejected() -> None:
    message = config_error('[xmppauth]\ntrusted_proxies = ["10.0.0.5"]\n')
    assert "xmppauth.trusted_proxies" in message and "behind_tls_proxy" in message


def test_listener_behind_a_proxy_without_trusted_proxies_is_rejected() -> None:
    message = config_error(BEHIND_PROXY)
    assert "listen.http[0].behind_tls_proxy" in message and "trusted_proxies" in message


def test_a_tls_listener_cannot_be_behind_a_proxy() -> None:
    message = config_error(
        '[[listen.http]]\nport = 5443\nbehind_tls_proxy = true\ntls.verify_mode = "peer"\n'
        '[xmppauth]\ntrusted_proxies = ["10.0.0.5"]\n'
    )
    assert "listen.http[0].behind_tls_proxy" in message and "terminates TLS itself" in message


def test_a_plain_listener_behind_a_proxy_is_read() -> None:
    config = parse(BEHIND_PROXY + '[xmppauth]\ntrusted_proxies = ["127.0.0.1"]\n')
    assert config.listen_http[0].behind_tls_proxy and config.listen_http[0].tls is None
    assert not parse("[[listen.http]]\nport = 5280\n").listen_http[0].behind_tls_proxy


def test_crl_refresh_max_below_min_is_rejected() -> None:
    message = config_error("[xmppauth]\ncrl_refresh_min_seconds = 600\ncrl_refresh_max_seconds = 60\n")

    assert "xmppauth.crl_refresh_max_seconds" in message


def test_negative_ping_interval_is_rejected() -> None:
    assert "xmppauth.ping_interval_seconds" in config_error("[xmppauth]\nping_interval_seconds = -1\n")


def test_metrics_path_is_read_and_checked() -> None:
    assert parse("").options.metrics_path == "/metrics"
    assert parse('[xmppauth]\nmetrics_path = "/ops/metrics"\n').options.metrics_path == "/ops/metrics"
    assert parse('[xmppauth]\nmetrics_path = ""\n').options.metrics_path == ""
    for bad in ('"metrics"', '"/"', '"/admin/metrics"', '"/crl"', '"/static/m"', '"/m?x=1"', "1"):
        assert "xmppauth.metrics_path" in config_error(f"[xmppauth]\nmetrics_path = {bad}\n")
    handler = (
        '[[listen.http]]\nport = 5280\n[[listen.http.handlers.mod_bosh]]\nhost = "_"\npath = "/http-bind"\n'
    )
    message = config_error(handler + '[xmppauth]\nmetrics_path = "/http-bind"\n')
    assert "xmppauth.metrics_path" in message and "handler" in message


def test_certificate_expiry_warning_days_is_read_and_checked() -> None:
    assert parse("").options.certificate_expiry_warning_days == 30
    assert (
        parse("[xmppauth]\ncertificate_expiry_warning_days = 14\n").options.certificate_expiry_warning_days
        == 14
    )
    for bad in ("0", '"30"'):
        message = config_error(f"[xmppauth]\ncertificate_expiry_warning_days = {bad}\n")
        assert "xmppauth.certificate_expiry_warning_days" in message


# --- files ----------------------------------------------------------------------------------------------


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[listen.c2s\nport = 5222\n")

    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_directory_instead_of_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)


def test_error_message_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[listen.c2s]\nprot = 5222\n")

    with pytest.raises(ConfigError) as info:
        load_config(path)

    assert str(path) in str(info.value) and "did you mean 'listen.c2s.port'" in str(info.value)


# --- describe and start-up ------------------------------------------------------------------------------


def test_describe_is_one_line_without_secrets() -> None:
    config = parse(
        '[listen.c2s]\ntls.mode = "tls"\n'
        '[auth]\nmethods = ["http", "pki"]\n[auth.http]\nbasic_auth = "xmpp:s3cret"\n'
        '[outgoing_pools.http.auth]\nconnection.host = "https://auth.example"\n'
    )

    line = describe(config)

    assert "\n" not in line
    assert "0.0.0.0:5222 tls verify=peer" in line
    assert "methods=http,pki" in line
    assert "s3cret" not in line


def test_manage_py_check_with_misspelled_config_exits_with_one_line(tmp_path: Path) -> None:
    config = write(tmp_path, '[listen.c2s]\nport = 5222\ntls.verify_mod = "peer"\n')
    env = dict(os.environ, XMPPAUTH_CONFIG=str(config), XMPPAUTH_VAR_DIR=str(tmp_path))

    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode != 0
    assert "listen.c2s.tls.verify_mod" in result.stderr
    assert "did you mean 'listen.c2s.tls.verify_mode'" in result.stderr
    assert "Traceback" not in result.stderr


# --- verify_mode none: no client certificate, so no EXTERNAL there (issue 12 point 2) ----------------------

NOBODY = "nobody can log in on this listener"


def no_login_warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    caplog.clear()
    caplog.set_level("WARNING", logger="xmppauth.config")
    parse(text)
    return [record.getMessage() for record in caplog.records if NOBODY in record.getMessage()]


def test_verify_mode_none_with_only_external_warns_once_naming_the_listener(caplog) -> None:
    (line,) = no_login_warnings(caplog, '[listen.c2s]\nport = 5222\ntls.verify_mode = "none"\n')
    assert line.startswith(
        'test.toml: listen.c2s (0.0.0.0:5222): tls.verify_mode = "none" requests no client'
    )
    assert "\n" not in line


def test_verify_peer_false_warns_like_verify_mode_none(caplog) -> None:
    (line,) = no_login_warnings(caplog, "[listen.c2s]\ntls.verify_peer = false\n")
    assert line.startswith("test.toml: listen.c2s (0.0.0.0:5222): ")


def test_the_warning_names_the_listener_in_an_array_of_tables(caplog) -> None:
    text = (
        '[[listen.c2s]]\nport = 5222\ntls.verify_mode = "peer"\n'
        '[[listen.c2s]]\nport = 5223\nip_address = "127.0.0.1"\ntls.mode = "tls"\ntls.verify_mode = "none"\n'
    )
    (line,) = no_login_warnings(caplog, text)
    assert line.startswith("test.toml: listen.c2s[1] (127.0.0.1:5223): ")


@pytest.mark.parametrize("mode", ["peer", "selfsigned_peer"])
def test_listeners_that_request_a_certificate_get_no_warning(caplog, mode) -> None:
    text = f'[listen.c2s]\ntls.verify_mode = "{mode}"\n[listen.http]\ntls.verify_mode = "{mode}"\n'
    text += '[[listen.http.handlers.mod_websockets]]\npath = "/ws-xmpp"\n'
    assert no_login_warnings(caplog, text) == []


def test_no_warning_when_another_served_mechanism_remains(caplog) -> None:
    text = '[listen.c2s]\ntls.verify_mode = "none"\n[auth]\nmethods = ["pki", "rdbms"]\n'
    text += 'sasl_mechanisms = ["external", "plain"]\n'
    assert no_login_warnings(caplog, text) == []


def test_password_mechanisms_make_a_verify_mode_none_listener_usable(caplog) -> None:
    text = '[listen.c2s]\ntls.verify_mode = "none"\n[auth]\nmethods = ["rdbms"]\n'
    text += 'sasl_mechanisms = ["scram_sha256"]\n'
    assert no_login_warnings(caplog, text) == []


def test_https_listener_serving_xmpp_with_verify_mode_none_warns(caplog) -> None:
    text = '[listen.http]\nport = 5443\ntls.verify_mode = "none"\n'
    text += '[[listen.http.handlers.mod_bosh]]\npath = "/http-bind"\n'
    (line,) = no_login_warnings(caplog, text)
    assert line.startswith("test.toml: listen.http (0.0.0.0:5443): ")


def test_https_listener_without_any_xmpp_handler_gets_no_warning(caplog) -> None:
    # Only the admin is served over HTTP then: no XMPP login to lose.
    assert no_login_warnings(caplog, '[listen.http]\ntls.verify_mode = "none"\n') == []
