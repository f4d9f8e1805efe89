"""certauth.authmethods without the database: configuration and MongooseIM's PEM answer parsing."""

from __future__ import annotations

import pytest

from certauth.authmethods import (
    DbMethod,
    HttpMethod,
    PasswordOnlyMethod,
    PkiMethod,
    build_methods,
    pem_certificate_ders,
    supports_external,
)
from tests.certs import make_ca, make_client
from xmppauth.config import AuthConfig, HttpAuthOptions, LdapAuthOptions, LdapPoolOptions


def test_methods_are_built_in_the_configured_order():
    options = HttpAuthOptions(host="http://auth.test:8000", path_prefix="/api/", request_timeout_ms=1500)
    methods = build_methods(AuthConfig(methods=("http", "db", "pki", "rdbms"), http=options))
    assert [type(m) for m in methods] == [HttpMethod, DbMethod, PkiMethod, PasswordOnlyMethod]
    assert methods[0].base_url == "http://auth.test:8000/api/"
    assert methods[0].timeout == 1.5


def test_rdbms_does_not_support_external():
    assert not supports_external(build_methods(AuthConfig(methods=("rdbms",))))


def test_ldap_supports_external_and_needs_its_options():
    ldap = LdapAuthOptions(base="ou=users,dc=example,dc=com", pools=(("default", LdapPoolOptions()),))
    assert supports_external(build_methods(AuthConfig(methods=("ldap",), ldap=ldap)))
    with pytest.raises(ValueError, match="auth.ldap"):
        build_methods(AuthConfig(methods=("ldap",)))


@pytest.mark.parametrize("name", ["pki", "db"])
def test_certificate_methods_support_external(name):
    assert supports_external(build_methods(AuthConfig(methods=(name,))))


def test_http_method_without_a_service_is_a_configuration_error():
    with pytest.raises(ValueError, match="outgoing_pools.http.auth"):
        build_methods(AuthConfig(methods=("http",)))


def test_pem_bundle_yields_each_certificate_der_byte_for_byte():
    ca = make_ca()
    one, two = make_client(ca), make_client(ca)
    body = b"user certificates\n" + one.pem + b"\n# comment\n" + two.pem
    assert pem_certificate_ders(body) == [one.der, two.der]


def test_pem_block_with_invalid_base64_is_skipped():
    good = make_client(make_ca())
    body = b"-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n" + good.pem
    assert pem_certificate_ders(body) == [good.der]


def test_other_pem_blocks_are_not_certificates():
    assert pem_certificate_ders(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n") == []
