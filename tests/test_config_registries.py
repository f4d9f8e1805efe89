"""The registries the config loader checks against (issue 13 §3), each owned by the module that implements it:
auth methods (``certauth.authmethods``), EXTERNAL verifiers (``certauth.identity``), verify modes
(``certauth.verify``).

An unknown name is one start-up line naming the key and the registry's accepted names; a dotted-path verifier
that does not import stops a server process at start-up naming ``auth.sasl_external``; and a method or a
verifier added with one registration is accepted by the loader and used at login.
"""

from __future__ import annotations

import tomllib

import pytest

from certauth import authmethods, identity
from certauth.authmethods import AUTH_METHODS, EXTERNAL, AuthMethod, ExternalAttempt, MethodVerdict, register
from certauth.identity import VERIFIERS, VerifierSpec, register_verifier
from certauth.verify import VERIFY_MODES
from tests.transport.runc2s_process import environment, manage
from transport.xmpp.jid import Jid
from xmppauth.config import ConfigError, parse_config


def config_error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(text), "test.toml")
    return str(info.value)


@pytest.mark.parametrize(
    ("text", "key", "accepted"),
    [
        ('[auth]\nmethods = ["nope"]\n', "auth.methods[0]", ", ".join(AUTH_METHODS)),
        ('[auth]\nsasl_external = ["cn"]\n', "auth.sasl_external[0]", ", ".join(VERIFIERS)),
        ('[listen.c2s]\ntls.verify_mode = "strict"\n', "listen.c2s.tls.verify_mode", ", ".join(VERIFY_MODES)),
    ],
    ids=["method", "verifier", "verify_mode"],
)
def test_an_unknown_name_is_one_line_naming_the_key_and_the_registry(text, key, accepted):
    message = config_error(text)
    assert "\n" not in message
    assert message.startswith(f"test.toml: {key}: unknown ") and f"accepted: {accepted}" in message


def test_the_registries_hold_what_the_loader_names():
    assert list(AUTH_METHODS) == ["pki", "db", "http", "rdbms", "ldap"]
    assert list(VERIFIERS) == ["standard", "common_name", "auth_id"]
    assert list(VERIFY_MODES) == ["peer", "selfsigned_peer", "none"]
    assert (
        not VERIFY_MODES["none"].requests_certificate and VERIFY_MODES["selfsigned_peer"].accepts_self_signed
    )


def test_a_dotted_verifier_that_does_not_import_stops_start_up_with_one_line(tmp_path):
    config = tmp_path / "xmppauth.toml"
    config.write_text(
        '[[listen.c2s]]\nport = 5222\nip_address = "127.0.0.1"\n'
        '[auth]\nsasl_external = ["standard", "no.such.verify"]\n'
    )
    env = environment(tmp_path, config)
    assert manage(env, "migrate", "--noinput").returncode == 0  # runc2s reads the database first
    done = manage(env, "runc2s", timeout=120)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if "configuration error" in line]
    assert line == done.stderr.strip().splitlines()[-1]  # the last word, on one line
    assert "auth.sasl_external[1]" in line and "'no.such.verify' cannot be imported" in line


def test_a_dotted_verifier_that_imports_passes_the_start_up_check():
    from certauth.configcas import check_verifiers

    config = parse_config({"auth": {"sasl_external": ["standard", f"{__name__}.verify_fixed"]}}, "test.toml")
    check_verifiers(config)  # no error
    with pytest.raises(ConfigError, match=r"^test\.toml: auth\.sasl_external\[0\]: .*cannot be imported"):
        check_verifiers(parse_config({"auth": {"sasl_external": [f"{__name__}.missing"]}}, "test.toml"))


def verify_fixed(facts, authzid, domain):
    return f"fixed@{domain}"


# --- one class plus one registration ----------------------------------------------------------------------


class AllowListed(AuthMethod):
    """A test method: EXTERNAL for the JIDs in ``ALLOWED`` only."""

    name = "allowlisted"
    serves = frozenset({EXTERNAL})
    ALLOWED = ("alice@localhost",)

    def authenticate_external(self, attempt: ExternalAttempt) -> MethodVerdict:
        if attempt.jid in self.ALLOWED:
            return MethodVerdict(True, "on the test allow list")
        return MethodVerdict(False, "not on the test allow list")


@pytest.fixture
def allowlisted():
    register(AllowListed)
    yield AllowListed
    del AUTH_METHODS[AllowListed.name]


def test_a_method_registered_once_is_accepted_by_the_loader_and_serves_external(allowlisted):
    auth = parse_config({"auth": {"methods": ["allowlisted"]}}, "test.toml").auth
    assert auth.methods == ("allowlisted",) and auth.sasl_mechanisms == ("external",)
    assert auth.served_mechanisms == ("external",) and auth.password_methods == ()
    assert [type(method) for method in authmethods.build_methods(auth)] == [AllowListed]
    message = config_error('[auth]\nmethods = ["allowlisted"]\nsasl_mechanisms = ["plain"]\n')
    assert "auth.sasl_mechanisms[0]" in message and "rdbms" in message


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        register(type("Again", (AuthMethod,), {"name": "pki"}))
    with pytest.raises(ValueError, match="already registered"):
        register(type("Alias", (AuthMethod,), {"name": "other", "aliases": ("internal",)}))


@pytest.mark.django_db
def test_a_registered_method_decides_a_real_login_both_ways(allowlisted):
    from certauth import services, trust
    from certauth.authenticator import CertificateAuthenticator
    from tests.certs import make_ca, make_client
    from xmppauth.config import Config, TlsOptions

    ca = make_ca("registry test CA")
    services.import_ca(ca.pem, name="registry test CA")
    trust.invalidate()
    config = Config(hosts=("localhost",), auth=parse_config({"auth": {"methods": ["allowlisted"]}}).auth)
    for jid, accepted in (("alice@localhost", True), ("bob@localhost", False)):
        auth = CertificateAuthenticator(config, TlsOptions(verify_mode="peer"), "tcp", "127.0.0.1:1")
        check = auth.check_certificate([make_client(ca, jids=[jid]).der])
        result = auth.authenticate_external(check.facts, None, "localhost")
        assert (result.jid == jid) is accepted, result
        assert (
            "allowlisted: on the test allow list" if accepted else "not on the test allow list"
        ) in result.reason
    trust.invalidate()


@pytest.fixture
def serial_name():
    spec = register_verifier(
        VerifierSpec("serial_name", lambda facts, authzid, domain, *_: Jid(f"s{facts.common_name}", domain))
    )
    yield spec
    del VERIFIERS[spec.name]


def test_a_verifier_registered_once_is_accepted_by_the_loader_and_used(serial_name):
    auth = parse_config({"auth": {"sasl_external": ["serial_name"]}}, "test.toml").auth

    class Facts:
        xmpp_addrs = ()
        common_name = "42"
        fingerprint_sha256 = "00"
        subject = "CN=42"

    decision = identity.resolve_identity(Facts(), None, "localhost", ["localhost"], auth.sasl_external)
    assert (decision.jid, decision.verifier) == ("s42@localhost", "serial_name")
