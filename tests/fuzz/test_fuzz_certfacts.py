"""Fuzzing the certificate facts extraction (certauth/pki): the xmppAddr otherName decoder (RFC 6120
§13.7.1.4, a DER UTF8String per X.690 §8.1, §10.1) and ``cert_facts`` (CN, SANs, EKU) on arbitrary DER,
on mutated real certificates and on certificates built with arbitrary xmppAddr bytes and CN text.

Properties: ``decode_utf8string`` returns a string or raises ``DerError`` (and reads back what
``encode_utf8string`` wrote); a certificate cryptography loads gives facts, or ``ValueError`` that
the authenticator turns into a refusal (it never escapes as another exception); an xmppAddr is reported only
when its bytes are exactly a DER UTF8String.
"""

from __future__ import annotations

import datetime as dt
import functools

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import example, given
from hypothesis import strategies as st

from certauth.pki import cert_facts, load_certificates
from certauth.pki.oids import XMPPADDR_OID
from certauth.pki.xmppaddr import DerError, decode_utf8string, encode_utf8string
from tests.fuzz import harness


@functools.cache
def real_certificate_der() -> bytes:
    """A real client certificate: xmppAddr, CN, EKU, basicConstraints, AKI (tests/certs.py)."""
    from tests.certs import make_ca, make_client

    return make_client(make_ca("fuzz CA"), jids=["alice@localhost", "bob@localhost"], common_name="alice").der


@functools.cache
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def facts_or_value_error(der: bytes) -> None:
    """Load ``der`` and extract facts: only ValueError may come out (cryptography's and ours)."""
    with harness.bounded():
        try:
            (cert,) = load_certificates(der)  # how the authenticator and the admin load a certificate
        except ValueError:
            return
        try:
            facts = cert_facts(cert)
        except ValueError:
            return
    for jid in facts.xmpp_addrs:
        assert isinstance(jid, str)
    assert facts.common_name is None or isinstance(facts.common_name, str)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """The real certificate with some bytes replaced, inserted or removed, or cut short."""
    der = bytearray(real_certificate_der())
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(der) - 1))
        action = draw(st.sampled_from(["replace", "insert", "delete", "flip", "extension"]))
        value = draw(st.integers(0, 255))
        if action == "extension":  # one id-ce extension OID (2.5.29.x) becomes another: duplicates, unknowns
            found = der.find(b"\x06\x03\x55\x1d", position)
            if found >= 0:
                der[found + 4] = draw(st.sampled_from([14, 15, 17, 18, 19, 35, 37, value]))
        elif action == "replace":
            der[position] = value
        elif action == "insert":
            der.insert(position, value)
        elif action == "delete" and len(der) > 1:
            del der[position]
        else:
            der[position] ^= 1 << (value % 8)
    if draw(st.booleans()):
        der = der[: draw(st.integers(0, len(der)))]
    return bytes(der)


@given(st.binary(max_size=64))
@example(b"\x0c\x80")  # indefinite length
@example(b"\x0c\x81\x05hello")  # long form for a short length: not DER
@example(b"\x0c\x84\xff\xff\xff\xff")  # an absurd length
@example(b"\x0c\x02\xc3\x28")  # not UTF-8
def test_decode_utf8string_returns_a_string_or_raises_der_error(der):
    try:
        value = decode_utf8string(der)
    except DerError:
        return
    assert encode_utf8string(value) == der  # DER: one encoding per value (X.690 §10)


@given(st.text(max_size=300))
def test_encode_then_decode_utf8string_is_the_identity(text):
    try:
        der = encode_utf8string(text)
    except UnicodeEncodeError:  # a lone surrogate has no UTF-8 form
        return
    assert decode_utf8string(der) == text


@given(st.binary(max_size=1500))
def test_arbitrary_der_gives_facts_or_value_error(der):
    facts_or_value_error(der)


@given(mutated())
def test_mutated_real_certificates_give_facts_or_value_error(der):
    facts_or_value_error(der)


def build(other_names: list[bytes], common_name: str | None, duplicate_san: bool = False) -> bytes:
    key = signing_key()
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else [])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz CA")]))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if other_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.OtherName(XMPPADDR_OID, value) for value in other_names]), False
        )
    cert = builder.sign(key, hashes.SHA256())
    return cert.public_bytes(serialization_der())


def serialization_der():
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.DER


def with_two_san_extensions(issuer_key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    """A certificate with two subjectAltName extensions (RFC 5280 §4.2 forbids it): built with a SAN and an
    issuerAltName, whose OID (2.5.29.18) is then rewritten to the SAN's (2.5.29.17). The second "SAN" asserts
    mallory@localhost."""
    key = issuer_key or signing_key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz CA")]))
        .public_key(signing_key().public_key())
        .serial_number(2)
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.OtherName(XMPPADDR_OID, encode_utf8string("alice@localhost"))]),
            False,
        )
        .add_extension(
            x509.IssuerAlternativeName(
                [x509.OtherName(XMPPADDR_OID, encode_utf8string("mallory@localhost"))]
            ),
            False,
        )
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization_der())
    ian = bytes.fromhex("0603551d12")  # OBJECT IDENTIFIER 2.5.29.18
    assert der.count(ian) == 1
    return der.replace(ian, bytes.fromhex("0603551d11"))


def with_a_bit_string_subject_attribute() -> bytes:
    """The real certificate with its subject's CN=alice rewritten as title (2.5.4.12) holding a BIT STRING:
    the input atheris found (``var/fuzz/certfacts-crash-6e1e98d7...``), made again deterministically."""
    der = real_certificate_der()
    common_name = bytes.fromhex("0603550403") + b"\x0c\x05alice"  # OID 2.5.4.3, UTF8String "alice"
    assert der.count(common_name) == 1
    return der.replace(common_name, bytes.fromhex("060355040c") + b"\x03\x05alice")


def with_an_invalid_version() -> bytes:
    """The real certificate claiming version 93 (RFC 5280 §4.1.2.1 knows v1 to v3): found by atheris."""
    der = real_certificate_der()
    version = bytes.fromhex("a003020102")  # [0] EXPLICIT INTEGER 2 (v3)
    assert der.count(version) == 1
    return der.replace(version, bytes.fromhex("a00302015c"))


CRASHERS = {
    # Found by hypothesis: cryptography's DuplicateExtension is not a ValueError.
    "two SAN extensions": (with_two_san_extensions, "certificate extensions cannot be parsed: Duplicate"),
    # Found by atheris: a BIT STRING name attribute raises TypeError when the subject is first read.
    "a BIT STRING name attribute": (
        with_a_bit_string_subject_attribute,
        "certificate subject cannot be parsed: oid must be X500_UNIQUE_IDENTIFIER",
    ),
    # Found by atheris: cryptography's InvalidVersion, raised by the loader, is not a ValueError either.
    "an invalid version": (with_an_invalid_version, "not a certificate: 92 is not a valid X509 version"),
}


@pytest.mark.parametrize("crasher", list(CRASHERS))
def test_crasher_certificates_give_value_error_from_cert_facts(crasher):
    # Each escaped load_certificates or cert_facts as another exception than ValueError, so the TLS path's
    # check_certificate raised instead of refusing the certificate.
    make, message = CRASHERS[crasher]
    with pytest.raises(ValueError, match=message):
        for cert in load_certificates(make()):
            cert_facts(cert)


@pytest.mark.django_db
@pytest.mark.parametrize("crasher", list(CRASHERS))
def test_crasher_client_certificates_are_refused_with_a_reason_and_an_auth_event_not_raised(crasher):
    from certauth import trust
    from certauth.models import AuthEvent
    from tests.certauth.crlhelpers import add_ca_row
    from tests.certauth.test_authenticator import authenticator
    from tests.certs import make_ca

    make, message = CRASHERS[crasher]
    add_ca_row(make_ca("fuzz CA"), name="fuzz CA")
    trust.invalidate()
    try:
        check = authenticator().check_certificate([make()])
    finally:
        trust.invalidate()
    assert (check.facts, check.verified) == (None, False)
    assert check.reason.startswith(f"client certificate cannot be parsed: {message}")
    assert AuthEvent.objects.order_by("-pk").first().reason.startswith(check.reason)


@pytest.mark.django_db
@pytest.mark.parametrize("crasher", list(CRASHERS))
def test_crasher_certificates_are_refused_by_the_import_services_with_a_pki_error(crasher):
    # The admin's import pages and `pki import-ca` / `import-cert` call these: a PkiError is a form error or
    # one command line, where any other exception would be a 500 or a traceback.
    from cryptography.hazmat.primitives.serialization import Encoding

    from certauth import services
    from certauth.models import Certificate, CertificateAuthority

    make, _ = CRASHERS[crasher]
    der = make()
    try:
        pem = load_certificates(der)[0].public_bytes(Encoding.PEM)
    except ValueError:  # the loader itself refuses it: the PEM of the raw DER then
        import base64

        pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der) + b"-----END CERTIFICATE-----\n"
    with pytest.raises(services.PkiError, match="not a certificate"):
        services.import_ca(pem)
    with pytest.raises(services.PkiError, match="not a certificate"):
        services.import_certificate(pem)
    assert not CertificateAuthority.objects.exists() and not Certificate.objects.exists()
