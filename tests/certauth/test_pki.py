"""Unit tests of the pure PKI layer (certauth.pki): no database, certificates made here with cryptography."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certauth import pki
from certauth.pki.xmppaddr import DerError, decode_utf8string, encode_utf8string

NOW = dt.datetime.now(dt.UTC)
TOMORROW = NOW + dt.timedelta(days=1)


@pytest.fixture(scope="module")
def ca_key() -> ec.EllipticCurvePrivateKey:
    return pki.generate_private_key("ec-p256")


@pytest.fixture(scope="module")
def ca_cert(ca_key) -> x509.Certificate:
    return pki.build_ca("xmppauth test CA", ca_key, organization="xmppauth")


@pytest.fixture(scope="module")
def user_key() -> ec.EllipticCurvePrivateKey:
    return pki.generate_private_key("ec-p256")


def _ext(cert: x509.Certificate, cls):
    return cert.extensions.get_extension_for_class(cls)


# --- xmppAddr (RFC 6120 §13.7.1.4) -------------------------------------------------------------------


@pytest.mark.parametrize("jid", ["juliet@example.com", "jürgen@münchen.example", "ромео@пример.рф"])
def test_xmppaddr_roundtrips_through_a_certificate(ca_cert, ca_key, user_key, jid):
    cert = pki.issue_certificate(ca_cert, ca_key, user_key.public_key(), xmpp_addrs=[jid])
    reloaded = pki.load_certificate(pki.certificate_to_pem(cert).encode())
    assert pki.xmppaddrs_of(reloaded) == [jid]


def test_xmppaddr_is_a_der_utf8string():
    other = pki.xmppaddr_other_name("é@x")
    assert other.type_id == pki.XMPPADDR_OID
    assert other.value == b"\x0c\x04" + "é@x".encode()


def test_utf8string_long_length_form_roundtrips():
    value = "a" * 200 + "@example.com"
    der = encode_utf8string(value)
    assert der[:3] == b"\x0c\x81\xd4"
    assert decode_utf8string(der) == value
    big = "b" * 300
    assert encode_utf8string(big)[:4] == b"\x0c\x82\x01\x2c"
    assert decode_utf8string(encode_utf8string(big)) == big


@pytest.mark.parametrize(
    "der, reason",
    [
        (b"\x16\x05a@b.c", "not UTF8String"),  # IA5String
        (b"\x0c\x05a@b", "does not match"),  # truncated content
        (b"\x0c\x02a@b", "does not match"),  # trailing bytes
        (b"\x0c\x81\x03a@b", "minimal"),  # long form for a short length
        (b"\x0c\x80a@b\x00\x00", "indefinite"),
        (b"\x0c\x02\xff\xfe", "UTF-8"),
        (b"\x0c", "truncated"),
    ],
)
def test_malformed_utf8string_is_refused_with_a_reason(der, reason):
    with pytest.raises(DerError, match=reason):
        decode_utf8string(der)


def test_xmppaddr_of_wrong_asn1_type_is_ignored_and_logged(ca_cert, ca_key, user_key, caplog):
    san = x509.SubjectAlternativeName(
        [
            x509.OtherName(pki.XMPPADDR_OID, b"\x16\x0bbad@example"),  # IA5String, not UTF8String
            pki.xmppaddr_other_name("good@example.com"),
            x509.OtherName(x509.ObjectIdentifier("1.3.6.1.5.5.7.8.7"), b"\x16\x05_xmpp"),  # SRVName: not ours
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca_cert.subject)
        .public_key(user_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(TOMORROW)
        .add_extension(san, critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    with caplog.at_level(logging.WARNING, logger="certauth.pki.xmppaddr"):
        assert pki.xmppaddrs_of(cert) == ["good@example.com"]
    assert "not UTF8String" in caplog.text


def test_malformed_xmppaddr_still_counts_as_an_xmppaddr_entry(ca_cert, ca_key, user_key):
    # DESIGN §4: such a certificate claims an xmppAddr, so its CN must never stand in for it.
    san = x509.SubjectAlternativeName([x509.OtherName(pki.XMPPADDR_OID, b"\x16\x0bbad@example")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "victim")]))
        .issuer_name(ca_cert.subject)
        .public_key(user_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(TOMORROW)
        .add_extension(san, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    facts = pki.cert_facts(cert)
    assert facts.xmpp_addrs == () and facts.xmpp_addr_entries == 1 and facts.common_name == "victim"


def test_xmppaddr_entries_count_every_xmppaddr_and_nothing_else(ca_cert, ca_key, user_key):
    two = pki.issue_certificate(
        ca_cert, ca_key, user_key.public_key(), xmpp_addrs=("a@example.com", "b@example.com"), common_name="c"
    )
    cn_only = pki.issue_certificate(ca_cert, ca_key, user_key.public_key(), common_name="juliet")
    assert pki.cert_facts(two).xmpp_addr_entries == 2
    assert pki.cert_facts(cn_only).xmpp_addr_entries == 0


def test_certificate_without_san_has_no_xmppaddr(ca_cert, ca_key, user_key):
    cert = pki.issue_certificate(ca_cert, ca_key, user_key.public_key(), common_name="juliet")
    assert pki.xmppaddrs_of(cert) == []


# --- keys at rest ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["ec-p256", "rsa-2048"])
def test_encrypted_key_roundtrips_and_is_not_pem(key_type):
    key = pki.generate_private_key(key_type)
    blob = pki.encrypt_private_key(key, "s3cret")
    assert blob.startswith(b"XAK1")
    assert b"-----BEGIN" not in blob
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert der not in blob
    restored = pki.decrypt_private_key(memoryview(blob), "s3cret")
    assert restored.private_numbers() == key.private_numbers()


def test_two_encryptions_of_one_key_differ():
    key = pki.generate_private_key("ec-p256")
    assert pki.encrypt_private_key(key, "s") != pki.encrypt_private_key(key, "s")


def test_encrypted_key_with_wrong_secret_is_refused():
    blob = pki.encrypt_private_key(pki.generate_private_key("ec-p256"), "right")
    with pytest.raises(pki.KeyDecryptionError, match="wrong key encryption secret"):
        pki.decrypt_private_key(blob, "wrong")


def test_tampered_or_foreign_blob_is_refused():
    key = pki.generate_private_key("ec-p256")
    blob = bytearray(pki.encrypt_private_key(key, "s"))
    blob[-1] ^= 1
    with pytest.raises(pki.KeyDecryptionError):
        pki.decrypt_private_key(bytes(blob), "s")
    with pytest.raises(pki.KeyDecryptionError, match="not an encrypted key blob"):
        pki.decrypt_private_key(pki.private_key_to_pem(key), "s")


def test_unknown_key_type_names_the_accepted_values():
    with pytest.raises(ValueError, match="ec-p256, rsa-2048, rsa-3072"):
        pki.generate_private_key("dsa-1024")


def test_private_key_pem_roundtrips_with_and_without_password():
    key = pki.generate_private_key("ec-p256")
    assert pki.load_private_key(pki.private_key_to_pem(key)).private_numbers() == key.private_numbers()
    encrypted = pki.private_key_to_pem(key, b"pw")
    assert b"ENCRYPTED" in encrypted
    assert pki.load_private_key(encrypted, b"pw").private_numbers() == key.private_numbers()
    with pytest.raises((ValueError, TypeError)):
        pki.load_private_key(encrypted, b"nope")


# --- CA and issued certificates (RFC 5280 §4.2) -------------------------------------------------------


def test_ca_is_self_signed_with_ca_extensions(ca_cert, ca_key):
    assert ca_cert.subject == ca_cert.issuer
    ca_cert.verify_directly_issued_by(ca_cert)
    basic = _ext(ca_cert, x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    usage = _ext(ca_cert, x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    ski = _ext(ca_cert, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    facts = pki.cert_facts(ca_cert)
    assert facts.is_ca and facts.is_self_signed
    assert facts.common_name == "xmppauth test CA"
    assert facts.subject == "CN=xmppauth test CA,O=xmppauth"


def test_issued_client_certificate_has_client_extensions(ca_cert, ca_key, user_key):
    cert = pki.issue_certificate(
        ca_cert,
        ca_key,
        user_key.public_key(),
        xmpp_addrs=["juliet@example.com", "juliet@example.net"],
        crl_url="https://ca.example.com/crl.der",
    )
    cert.verify_directly_issued_by(ca_cert)
    assert _ext(cert, x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    usage = _ext(cert, x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_encipherment and not usage.key_cert_sign
    assert not _ext(cert, x509.BasicConstraints).value.ca
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == _ext(ca_cert, x509.SubjectKeyIdentifier).value.digest
    assert _ext(cert, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(
        user_key.public_key()
    )
    assert pki.crl_distribution_urls(cert) == ["https://ca.example.com/crl.der"]
    # No CN given: empty subject, so the SAN must be critical (RFC 5280 §4.2.1.6).
    assert len(cert.subject) == 0
    assert _ext(cert, x509.SubjectAlternativeName).critical
    assert 0 < cert.serial_number < 2**159
    facts = pki.cert_facts(cert)
    assert facts.xmpp_addrs == ("juliet@example.com", "juliet@example.net")
    assert facts.common_name is None
    assert facts.extended_key_usages == (ExtendedKeyUsageOID.CLIENT_AUTH.dotted_string,)
    assert not facts.is_ca and not facts.is_self_signed
    assert facts.serial == format(cert.serial_number, "x")
    assert facts.fingerprint_sha256 == cert.fingerprint(hashes.SHA256()).hex()
    now = dt.datetime.now(dt.UTC)  # not the module's NOW: the suite may reach this test minutes after import
    assert facts.not_before.tzinfo is not None and facts.not_before < now < facts.not_after


def test_rsa_client_certificate_also_allows_key_encipherment(ca_cert, ca_key):
    rsa_key = pki.generate_private_key("rsa-2048")
    cert = pki.issue_certificate(ca_cert, ca_key, rsa_key.public_key(), xmpp_addrs=["r@example.com"])
    assert _ext(cert, x509.KeyUsage).value.key_encipherment


def test_issued_client_certificate_passes_the_client_verifier(ca_cert, ca_key, user_key):
    from cryptography.x509.verification import PolicyBuilder, Store

    cert = pki.issue_certificate(ca_cert, ca_key, user_key.public_key(), xmpp_addrs=["j@example.com"])
    verifier = PolicyBuilder().store(Store([ca_cert])).build_client_verifier()
    verified = verifier.verify(cert, [])
    assert verified.chain[-1] == ca_cert


def test_cn_only_certificate_has_no_san(ca_cert, ca_key, user_key):
    cert = pki.issue_certificate(ca_cert, ca_key, user_key.public_key(), common_name="juliet")
    with pytest.raises(x509.ExtensionNotFound):
        _ext(cert, x509.SubjectAlternativeName)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "juliet"
    facts = pki.cert_facts(cert)
    assert facts.common_name == "juliet" and facts.xmpp_addrs == () and facts.dns_names == ()


def test_certificate_with_no_name_at_all_is_refused(ca_cert, ca_key, user_key):
    with pytest.raises(ValueError, match="common name or at least one"):
        pki.issue_certificate(ca_cert, ca_key, user_key.public_key())


def test_server_certificate_has_server_auth_and_dns_names(ca_cert, ca_key, user_key):
    cert = pki.issue_certificate(
        ca_cert, ca_key, user_key.public_key(), common_name="xmpp.example.com",
        dns_names=["xmpp.example.com"], server=True,
    )  # fmt: skip
    facts = pki.cert_facts(cert)
    assert facts.extended_key_usages == (ExtendedKeyUsageOID.SERVER_AUTH.dotted_string,)
    assert facts.dns_names == ("xmpp.example.com",)
    assert not _ext(cert, x509.SubjectAlternativeName).critical


def test_eku_and_validity_can_be_overridden(ca_cert, ca_key, user_key):
    start, end = NOW - dt.timedelta(days=30), NOW - dt.timedelta(days=1)
    cert = pki.issue_certificate(
        ca_cert, ca_key, user_key.public_key(), xmpp_addrs=["old@example.com"],
        not_before=start, not_after=end, extended_key_usages=(), serial=0x1234,
    )  # fmt: skip
    facts = pki.cert_facts(cert)
    assert facts.extended_key_usages is None
    assert facts.not_after == end.replace(microsecond=0)
    assert facts.not_after < NOW
    assert facts.serial == "1234"
    with pytest.raises(ValueError, match="not after"):
        pki.issue_certificate(
            ca_cert, ca_key, user_key.public_key(), xmpp_addrs=["x@ex.com"], not_before=end, not_after=start
        )


def test_self_signed_client_certificate(user_key):
    cert = pki.build_self_signed_client(user_key, xmpp_addrs=["romeo@example.net"], common_name="romeo")
    cert.verify_directly_issued_by(cert)
    facts = pki.cert_facts(cert)
    assert facts.is_self_signed and not facts.is_ca
    assert facts.xmpp_addrs == ("romeo@example.net",)
    assert facts.extended_key_usages == (ExtendedKeyUsageOID.CLIENT_AUTH.dotted_string,)


# --- CSR (RFC 2986) ------------------------------------------------------------------------------------


def _csr(key, san_jid: str) -> x509.CertificateSigningRequest:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")]))
        .add_extension(x509.SubjectAlternativeName([pki.xmppaddr_other_name(san_jid)]), critical=False)
        .sign(key, hashes.SHA256())
    )


def test_csr_is_signed_with_the_names_given_not_those_requested(ca_cert, ca_key, user_key):
    csr = _csr(user_key, "admin@example.com")
    cert = pki.sign_csr(ca_cert, ca_key, csr, xmpp_addrs=["juliet@example.com"])
    assert pki.xmppaddrs_of(cert) == ["juliet@example.com"]
    assert pki.cert_facts(cert).common_name is None
    assert cert.public_key() == user_key.public_key()
    cert.verify_directly_issued_by(ca_cert)


def test_csr_with_a_bad_signature_is_refused(ca_cert, ca_key, user_key):
    der = bytearray(_csr(user_key, "juliet@example.com").public_bytes(serialization.Encoding.DER))
    index = der.index(b"juliet")
    der[index] ^= 0x20  # "juliet" -> "Juliet" inside the signed part
    forged = x509.load_der_x509_csr(bytes(der))
    with pytest.raises(ValueError, match="signature"):
        pki.sign_csr(ca_cert, ca_key, forged, xmpp_addrs=["juliet@example.com"])


# --- PEM ---------------------------------------------------------------------------------------------


def test_pem_bundle_and_der_load(ca_cert, ca_key, user_key):
    leaf = pki.issue_certificate(ca_cert, ca_key, user_key.public_key(), common_name="a")
    bundle = (pki.certificate_to_pem(leaf) + pki.certificate_to_pem(ca_cert)).encode()
    assert pki.load_certificates(bundle) == [leaf, ca_cert]
    assert pki.load_certificate(leaf.public_bytes(serialization.Encoding.DER)) == leaf
    with pytest.raises(ValueError, match="exactly one"):
        pki.load_certificate(bundle)
    with pytest.raises(ValueError):
        pki.load_certificates(b"-----BEGIN NOTHING-----\n")


# --- CRL (RFC 5280 §5) -------------------------------------------------------------------------------


def test_crl_roundtrip_and_signature(ca_cert, ca_key):
    revoked = [
        pki.RevokedEntry(0xABC, NOW.replace(microsecond=0) - dt.timedelta(hours=1), "key_compromise"),
        pki.RevokedEntry(0xDEF, NOW.replace(microsecond=0) - dt.timedelta(hours=2), "certificate_hold"),
        pki.RevokedEntry(0x123, NOW.replace(microsecond=0) - dt.timedelta(hours=3), None),
        pki.RevokedEntry(0x456, NOW.replace(microsecond=0) - dt.timedelta(hours=4), "unspecified"),
    ]
    crl = pki.build_crl(ca_cert, ca_key, revoked, crl_number=7, this_update=NOW, next_update=TOMORROW)
    for data in (crl.public_bytes(serialization.Encoding.DER), crl.public_bytes(serialization.Encoding.PEM)):
        loaded = pki.load_crl(data)
        assert pki.crl_signed_by(loaded, ca_cert)
        assert pki.crl_number_of(loaded) == 7
        entries = {e.serial: e for e in pki.revoked_entries(loaded)}
        assert entries[0xABC].reason == "key_compromise"
        assert entries[0xDEF].reason == "certificate_hold"
        assert entries[0x123].reason is None
        assert entries[0x456].reason is None  # unspecified is not encoded (RFC 5280 §5.3.1)
        assert entries[0xABC].revoked_at == revoked[0].revoked_at
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == _ext(ca_cert, x509.SubjectKeyIdentifier).value.digest


def test_crl_signed_by_another_key_is_not_signed_by_the_ca(ca_cert):
    impostor_key = pki.generate_private_key("ec-p256")
    impostor_ca = pki.build_ca("xmppauth test CA", impostor_key, organization="xmppauth")  # same name
    assert impostor_ca.subject == ca_cert.subject
    crl = pki.build_crl(impostor_ca, impostor_key, [], crl_number=1, this_update=NOW, next_update=TOMORROW)
    assert not pki.crl_signed_by(crl, ca_cert)
    assert pki.crl_signed_by(crl, impostor_ca)


def test_crl_of_another_issuer_name_is_not_signed_by_the_ca(ca_cert, ca_key):
    other = pki.build_ca("other CA", ca_key)  # same key, other name
    crl = pki.build_crl(other, ca_key, [], crl_number=1, this_update=NOW, next_update=TOMORROW)
    assert not pki.crl_signed_by(crl, ca_cert)


def test_unknown_revocation_reason_names_accepted_values(ca_cert, ca_key):
    with pytest.raises(ValueError, match="key_compromise"):
        pki.build_crl(
            ca_cert, ca_key, [pki.RevokedEntry(1, NOW, "lost")], crl_number=1,
            this_update=NOW, next_update=TOMORROW,
        )  # fmt: skip


def test_crl_distribution_urls_keep_only_http(ca_cert, ca_key, user_key):
    points = x509.CRLDistributionPoints(
        [
            x509.DistributionPoint(
                [
                    x509.UniformResourceIdentifier("ldap://ldap.example.com/cn=CA"),
                    x509.UniformResourceIdentifier("http://ca.example.com/a.crl"),
                ],
                None,
                None,
                None,
            )
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .issuer_name(ca_cert.subject)
        .public_key(user_key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(TOMORROW)
        .add_extension(points, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    assert pki.crl_distribution_urls(cert) == ["http://ca.example.com/a.crl"]
    assert pki.crl_distribution_urls(ca_cert) == []


# --- PKCS#12 (RFC 7292) ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_user(ca_cert, ca_key):
    key = pki.generate_private_key("rsa-2048")
    cert = pki.issue_certificate(ca_cert, ca_key, key.public_key(), xmpp_addrs=["juliet@example.com"])
    return key, cert


def test_pkcs12_opens_with_cryptography(ca_cert, rsa_user):
    key, cert = rsa_user
    data = pki.export_pkcs12(cert, key, ca_chain=[ca_cert], password=b"pa55", friendly_name=b"juliet")
    loaded_key, loaded_cert, extra = pki.load_pkcs12(data, b"pa55")
    assert isinstance(loaded_key, rsa.RSAPrivateKey)
    assert loaded_key.private_numbers() == key.private_numbers()
    assert loaded_cert == cert
    assert extra == [ca_cert]
    with pytest.raises(ValueError):
        pki.load_pkcs12(data, b"wrong")


def _openssl_pkcs12(path, password: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    command = ["openssl", "pkcs12", "-in", str(path), "-passin", f"pass:{password}", *args]
    return subprocess.run(command, capture_output=True, check=False)


def test_pkcs12_opens_with_openssl(tmp_path, ca_cert, rsa_user):
    key, cert = rsa_user
    path = tmp_path / "juliet.p12"
    path.write_bytes(pki.export_pkcs12(cert, key, ca_chain=[ca_cert], password=b"pa55"))
    result = _openssl_pkcs12(path, "pa55", "-nokeys")
    assert result.returncode == 0, result.stderr.decode()
    assert pki.load_certificates(result.stdout) == [cert, ca_cert]
    info = _openssl_pkcs12(path, "pa55", "-info", "-noout")
    assert b"AES-256-CBC" in info.stderr and b"sha256" in info.stderr
    assert _openssl_pkcs12(path, "nope", "-nokeys").returncode != 0


def test_pkcs12_with_empty_password_is_refused(rsa_user):
    key, cert = rsa_user
    with pytest.raises(ValueError, match="non-empty password"):
        pki.export_pkcs12(cert, key, password=b"")


@pytest.mark.parametrize("is_ca", [False, True])
def test_facts_read_each_extension_once_among_repeated_unrecognized_ones(ca_cert, ca_key, user_key, is_ca):
    """cert_facts reads the extensions in one pass, by type: two extensions cryptography does not know (both
    UnrecognizedExtension) beside the SAN, EKU and basicConstraints change none of the facts read from them,
    and a cA flag among them is still read (the verifier refuses such a leaf as a login)."""
    unknown = [
        x509.UnrecognizedExtension(x509.ObjectIdentifier(f"1.3.6.1.4.1.99999.{arc}"), b"\x05\x00")
        for arc in (1, 2)
    ]
    jid_entry = x509.OtherName(pki.XMPPADDR_OID, encode_utf8string("romeo@example.com"))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "romeo")]))
        .issuer_name(ca_cert.subject)
        .public_key(user_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=1))
        .not_valid_after(TOMORROW)
        .add_extension(unknown[0], critical=False)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(unknown[1], critical=False)
        .add_extension(x509.SubjectAlternativeName([jid_entry, x509.DNSName("example.com")]), critical=False)
    )
    facts = pki.cert_facts(builder.sign(ca_key, hashes.SHA256()))
    assert facts.xmpp_addrs == ("romeo@example.com",) and facts.xmpp_addr_entries == 1
    assert facts.dns_names == ("example.com",)
    assert facts.extended_key_usages == (ExtendedKeyUsageOID.CLIENT_AUTH.dotted_string,)
    assert facts.is_ca is is_ca
