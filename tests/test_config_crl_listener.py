"""Where our CRLs are published (issue 11 point 9): ``crl_only`` listeners and ``[xmppauth] crl_base_url``.

The config keys are checked at load time (start-up stops with one line naming the key); the distribution
point new certificates name follows them (``certauth.services.crl_base_url``). The running listener is
tested in ``tests/transport/test_crl_listener.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from certauth import services
from xmppauth.config import Config, ConfigError, describe, parse_config

PROJECT_DIR = Path(__file__).resolve().parent.parent

HTTPS = """
[[listen.http]]
  port = 5443
  tls.verify_mode = "peer"
  tls.disconnect_on_failure = true
  [[listen.http.handlers.mod_bosh]]
    path = "/http-bind"
"""
CRL_LISTENER = """
[[listen.http]]
  port = 8080
  ip_address = "127.0.0.1"
  crl_only = true
"""


def parse(text: str) -> Config:
    return parse_config(tomllib.loads(text), "test.toml", base_dir="/etc/xmppauth")


def config_error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return str(info.value)


def test_a_crl_only_listener_is_plain_http_and_described_as_such():
    config = parse(HTTPS + CRL_LISTENER)
    crl = config.listen_http[1]
    assert crl.crl_only and crl.tls is None and crl.handlers == ()
    assert not config.listen_http[0].crl_only
    assert "127.0.0.1:8080 plain http [CRLs only]" in describe(config)


def test_a_crl_only_listener_with_tls_stops_start_up():
    message = config_error(CRL_LISTENER + '  tls.verify_mode = "none"\n')
    assert message.startswith("test.toml: listen.http[0].tls: a crl_only listener serves plain HTTP")


def test_a_crl_only_listener_with_handlers_stops_start_up():
    message = config_error(
        HTTPS + CRL_LISTENER + '  [[listen.http.handlers.mod_websockets]]\n    path = "/ws"\n'
    )
    assert message.startswith("test.toml: listen.http[1].handlers: a crl_only listener serves only our CRLs")


def test_crl_only_must_be_a_boolean():
    assert "listen.http.crl_only: expected a boolean" in config_error('[listen.http]\ncrl_only = "yes"\n')


def test_crl_base_url_on_a_plain_listener_port_is_accepted():
    config = parse(HTTPS + CRL_LISTENER + '[xmppauth]\ncrl_base_url = "http://xmpp.example.com:8080/"\n')
    assert config.options.crl_base_url == "http://xmpp.example.com:8080/"


def test_crl_base_url_without_port_means_port_80():
    listener = "[[listen.http]]\nport = 80\ncrl_only = true\n"
    assert parse(listener + '[xmppauth]\ncrl_base_url = "http://crl.example.com"\n').options.crl_base_url
    message = config_error(CRL_LISTENER + '[xmppauth]\ncrl_base_url = "http://crl.example.com"\n')
    assert "names port 80, but no [[listen.http]] without tls listens there" in message


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://xmpp.example.com:8080", 'must look like "http://host[:port]"'),
        ("ftp://xmpp.example.com:8080", 'must look like "http://host[:port]"'),
        ("xmpp.example.com:8080", 'must look like "http://host[:port]"'),
        ("http://xmpp.example.com:8080/pki", "must be scheme, host and port only"),
        ("http://user:pw@xmpp.example.com:8080", "must be scheme, host and port only"),
        ("http://xmpp.example.com:8080?x=1", "must be scheme, host and port only"),
        ("http://xmpp.example.com:99999", "has an invalid port"),
        ("http://xmpp.example.com:9090", "names port 9090, but no [[listen.http]] without tls"),
        ("http://xmpp.example.com:5443", "names port 5443, but no [[listen.http]] without tls"),
    ],
)
def test_crl_base_url_that_points_nowhere_we_serve_stops_start_up(url, why):
    message = config_error(HTTPS + CRL_LISTENER + f'[xmppauth]\ncrl_base_url = "{url}"\n')
    assert message.startswith("test.toml: xmppauth.crl_base_url: ")
    assert why in message


def test_manage_py_check_with_a_crl_base_url_nobody_serves_exits_with_one_line(tmp_path: Path):
    config = tmp_path / "xmppauth.toml"
    config.write_text(HTTPS + '[xmppauth]\ncrl_base_url = "http://xmpp.example.com:8080"\n')
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
    lines = [line for line in result.stderr.splitlines() if "crl_base_url" in line]
    assert len(lines) == 1 and "names port 8080, but no [[listen.http]] without tls" in lines[0]


# --- which URL new certificates name ----------------------------------------------------------------------


@pytest.fixture
def no_public_url(settings):
    settings.XMPPAUTH_PUBLIC_URL = ""
    return settings


def test_the_first_crl_only_listener_is_the_default_distribution_point(no_public_url):
    no_public_url.XMPP = parse('[general]\nhosts = ["xmpp.example.com"]\n' + HTTPS + CRL_LISTENER)
    assert services.crl_base_url() == "http://xmpp.example.com:8080"


def test_crl_base_url_is_the_distribution_point_when_set(no_public_url):
    no_public_url.XMPP = parse(
        HTTPS + CRL_LISTENER + '[xmppauth]\ncrl_base_url = "http://crl.example.com:8080/"\n'
    )
    assert services.crl_base_url() == "http://crl.example.com:8080"


def test_the_environments_public_url_overrides_crl_base_url(settings):
    settings.XMPP = parse(HTTPS + CRL_LISTENER + '[xmppauth]\ncrl_base_url = "http://crl.example.com:8080"\n')
    settings.XMPPAUTH_PUBLIC_URL = "http://proxy.example.com"
    assert services.crl_base_url() == "http://proxy.example.com"


def test_without_a_crl_listener_the_first_http_listener_stays_the_distribution_point(no_public_url):
    no_public_url.XMPP = parse('[general]\nhosts = ["xmpp.example.com"]\n' + HTTPS)
    assert services.crl_base_url() == "https://xmpp.example.com:5443"


@pytest.mark.django_db
def test_a_new_certificate_names_the_crl_listener(no_public_url):
    from accounts.models import Account, Domain
    from certauth import pki

    no_public_url.XMPP = parse(
        HTTPS + CRL_LISTENER + '[xmppauth]\ncrl_base_url = "http://crl.example.com:8080"\n'
    )
    ca = services.create_ca("CRL listener CA")
    account = Account.objects.create(localpart="alice", domain=Domain.objects.create(name="localhost"))
    issued = services.issue_for_account(account, ca=ca, days=1)
    assert pki.crl_distribution_urls(issued.certificate) == [f"http://crl.example.com:8080/crl/{ca.pk}.crl"]


# --- the start-up warning when the distribution point demands a certificate -------------------------------


def test_start_up_warns_when_new_certificates_would_name_a_listener_that_demands_a_certificate(no_public_url):
    from transport.checks import crl_distribution_point_check

    no_public_url.XMPP = parse('[general]\nhosts = ["xmpp.example.com"]\n' + HTTPS)
    (warning,) = crl_distribution_point_check()
    assert warning.id == "transport.W001"
    assert "https://xmpp.example.com:5443/crl/" in warning.msg and "crl_only = true" in warning.hint


@pytest.mark.parametrize(
    "extra",
    [
        CRL_LISTENER,
        CRL_LISTENER + '[xmppauth]\ncrl_base_url = "http://crl.example.com:8080"\n',
    ],
)
def test_no_warning_when_the_crls_are_served_without_a_certificate(no_public_url, extra):
    from transport.checks import crl_distribution_point_check

    no_public_url.XMPP = parse(HTTPS + extra)
    assert crl_distribution_point_check() == []


def test_no_warning_when_the_https_listener_lets_clients_without_certificate_in(no_public_url):
    from transport.checks import crl_distribution_point_check

    no_public_url.XMPP = parse(HTTPS.replace("disconnect_on_failure = true", "disconnect_on_failure = false"))
    assert crl_distribution_point_check() == []


def test_no_warning_when_the_environment_names_the_public_url(settings):
    from transport.checks import crl_distribution_point_check

    settings.XMPP = parse(HTTPS)
    settings.XMPPAUTH_PUBLIC_URL = "http://proxy.example.com"
    assert crl_distribution_point_check() == []
