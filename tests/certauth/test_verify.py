"""certauth.verify: the chain decision for each tls.verify_mode (RFC 5280 §6, XEP-0178, MongooseIM modes)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtensionOID, NameOID
from cryptography.x509.verification import Store

from certauth.pki import generate_private_key
from certauth.verify import verify_client_chain
from tests.certs import (
    SERVER_AUTH,
    Issued,
    days_from_now,
    make_ca,
    make_client,
    make_expired,
    make_not_yet_valid,
    make_self_signed,
    utcnow,
)


@pytest.fixture(scope="module")
def ca():
    return make_ca("Trusted CA")


@pytest.fixture(scope="module")
def other_ca():
    return make_ca("Unknown CA")


def verify(chain, anchors, mode="peer"):
    return verify_client_chain(chain, anchors, mode=mode, now=utcnow())


def rebuild(cert, *, signing_key, not_before=None, not_after=None, drop=(), issuer_name=None):
    """A copy of ``cert`` with other dates or extensions, signed by ``signing_key``."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(issuer_name or cert.issuer)
        .public_key(cert.public_key())
        .serial_number(cert.serial_number)
        .not_valid_before(not_before or cert.not_valid_before_utc)
        .not_valid_after(not_after or cert.not_valid_after_utc)
    )
    for ext in cert.extensions:
        if ext.oid not in drop:
            builder = builder.add_extension(ext.value, ext.critical)
    return builder.sign(signing_key, hashes.SHA256())


def raw_ca(common_name, key_usage):
    """A root CA built by hand, with the given keyUsage extension (or none), as other tools make them."""
    key = generate_private_key("ec-p256")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(days_from_now(-1))
        .not_valid_after(days_from_now(30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    return Issued(builder.sign(key, hashes.SHA256()), key)


def key_usage(*, key_cert_sign):
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=key_cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


@pytest.mark.parametrize("mode", ["peer", "selfsigned_peer"])
def test_chain_to_trusted_ca_is_accepted(ca, mode):
    alice = make_client(ca)
    verdict = verify([alice.cert], [ca.cert], mode)
    assert verdict.ok, verdict.reason
    assert verdict.issuer_ca == ca.cert
    assert verdict.chain == (alice.cert, ca.cert)


def test_chain_sent_with_its_root_is_accepted(ca):
    alice = make_client(ca)
    assert verify(alice.chain, [ca.cert]).ok


def test_prebuilt_store_is_accepted_as_trust_anchors(ca):
    assert verify([make_client(ca).cert], Store([ca.cert])).ok


@pytest.mark.parametrize("mode", ["peer", "selfsigned_peer"])
def test_certificate_from_untrusted_ca_is_refused(ca, other_ca, mode):
    verdict = verify([make_client(other_ca).cert], [ca.cert], mode)
    assert not verdict.ok
    assert verdict.reason == "issuer not trusted"
    assert verdict.issuer_ca is None


def test_untrusted_ca_sent_in_the_chain_does_not_make_it_trusted(ca, other_ca):
    verdict = verify(make_client(other_ca).chain, [ca.cert])
    assert not verdict.ok
    # cryptography's last error while trying the untrusted root (pathLen 0) as an intermediate of itself;
    # what it means for the operator is "issuer not trusted" (reported to the lead: reason to improve).
    assert verdict.reason == "chain invalid: candidates exhausted: path length constraint violated"
    assert verdict.issuer_ca is None and verdict.chain == ()


def test_no_trust_anchors_refuses_everything(ca):
    verdict = verify([make_client(ca).cert], [])
    assert not verdict.ok
    assert verdict.reason == "issuer not trusted (no trust anchors configured)"


def test_self_signed_is_refused_in_peer_mode(ca):
    verdict = verify([make_self_signed().cert], [ca.cert], "peer")
    assert not verdict.ok
    assert verdict.reason == "self-signed certificate not trusted (verify_mode peer)"


def test_self_signed_is_accepted_in_selfsigned_peer_mode(ca):
    own = make_self_signed()
    verdict = verify([own.cert], [ca.cert], "selfsigned_peer")
    assert verdict.ok, verdict.reason
    assert verdict.issuer_ca is None


def test_self_signed_with_bad_signature_is_refused_in_selfsigned_peer_mode(ca):
    own = make_self_signed(common_name="mallory", jids=())
    stranger = make_self_signed(common_name="mallory", jids=())
    # Same names, but signed by another key than the one the certificate carries.
    cert = rebuild(own.cert, signing_key=stranger.key)
    verdict = verify([cert], [ca.cert], "selfsigned_peer")
    assert not verdict.ok
    assert verdict.reason == "signature invalid"


def test_expired_self_signed_is_refused_in_selfsigned_peer_mode(ca):
    own = make_self_signed()
    end = days_from_now(-2)
    cert = rebuild(own.cert, signing_key=own.key, not_before=end - dt.timedelta(days=30), not_after=end)
    verdict = verify([cert], [ca.cert], "selfsigned_peer")
    assert not verdict.ok
    assert verdict.reason == f"expired {end:%Y-%m-%d}"


@pytest.mark.parametrize("mode", ["peer", "selfsigned_peer"])
def test_expired_certificate_is_refused_with_its_end_date(ca, mode):
    old = make_expired(ca, days_ago=3)
    verdict = verify([old.cert], [ca.cert], mode)
    assert not verdict.ok
    assert verdict.reason == f"expired {old.cert.not_valid_after_utc:%Y-%m-%d}"


def test_not_yet_valid_certificate_is_refused(ca):
    early = make_not_yet_valid(ca, days_ahead=2)
    verdict = verify([early.cert], [ca.cert])
    assert not verdict.ok
    assert verdict.reason == f"not yet valid (valid from {early.cert.not_valid_before_utc:%Y-%m-%d})"


def test_extended_key_usage_server_auth_only_is_refused(ca):
    verdict = verify([make_client(ca, ekus=[SERVER_AUTH]).cert], [ca.cert])
    assert not verdict.ok
    assert verdict.reason == "extended key usage lacks clientAuth"


def test_no_extended_key_usage_extension_is_accepted(ca):
    cert = make_client(ca, ekus=[]).cert
    assert all(ext.oid != ExtensionOID.EXTENDED_KEY_USAGE for ext in cert.extensions)
    assert verify([cert], [ca.cert]).ok


def test_common_name_only_certificate_without_san_is_accepted(ca):
    bob = make_client(ca, jids=(), common_name="bob")
    assert all(ext.oid != ExtensionOID.SUBJECT_ALTERNATIVE_NAME for ext in bob.cert.extensions)
    assert verify([bob.cert], [ca.cert]).ok


def test_certificate_with_forged_issuer_signature_is_refused(ca, other_ca):
    forged = make_client(ca, signing_key=other_ca.key)
    verdict = verify([forged.cert], [ca.cert])
    assert not verdict.ok
    assert verdict.reason == "signature invalid"


@pytest.mark.parametrize("mode", ["peer", "selfsigned_peer"])
def test_ca_certificate_as_client_certificate_is_refused(ca, mode):
    # Even the trusted root itself, and even where self-signed certificates are accepted.
    verdict = verify([ca.cert], [ca.cert], mode)
    assert not verdict.ok
    assert verdict.reason == "a CA certificate (basicConstraints cA) is not a client certificate"


@pytest.mark.parametrize("kind", ["valid", "expired_untrusted", "self_signed"])
def test_verify_mode_none_accepts_no_certificate_at_all(ca, other_ca, kind):
    # Issue 12: verify_mode none requests no certificate (as MongooseIM); one that arrives anyway is refused,
    # never counted as verified, so a self-made certificate naming alice cannot log in as alice.
    cert = {
        "valid": lambda: make_client(ca).cert,
        "expired_untrusted": lambda: make_expired(other_ca).cert,
        "self_signed": lambda: make_self_signed(jids=["alice@localhost"]).cert,
    }[kind]()
    verdict = verify([cert], [ca.cert], "none")
    assert not verdict.ok
    assert verdict.reason == "client certificates are not requested on this listener (verify_mode none)"


@pytest.mark.parametrize("mode", ["peer", "selfsigned_peer", "none"])
def test_empty_chain_is_refused(ca, mode):
    verdict = verify([], [ca.cert], mode)
    assert not verdict.ok
    assert verdict.reason == "no client certificate presented"


def test_unknown_mode_is_a_programming_error(ca):
    with pytest.raises(ValueError, match="verify_mode"):
        verify([make_client(ca).cert], [ca.cert], "optional")


def test_client_certificate_without_authority_key_identifier_is_accepted(ca):
    alice = make_client(ca)
    cert = rebuild(alice.cert, signing_key=ca.key, drop=(ExtensionOID.AUTHORITY_KEY_IDENTIFIER,))
    assert verify([cert], [ca.cert]).ok


def test_ca_without_key_usage_is_accepted_like_openssl_req_x509_cas():
    root = raw_ca("Old-style CA", key_usage=None)
    assert verify([make_client(root).cert], [root.cert]).ok


def test_ca_whose_key_usage_lacks_key_cert_sign_is_refused():
    root = raw_ca("Signing-only CA", key_usage=key_usage(key_cert_sign=False))
    verdict = verify([make_client(root).cert], [root.cert])
    assert not verdict.ok
    assert verdict.reason.startswith("chain invalid: ")  # RFC 5280 §4.2.1.3, in cryptography's words:
    assert verdict.reason.endswith("keyUsage of a CA certificate lacks keyCertSign")


def test_ca_with_key_cert_sign_key_usage_is_accepted():
    root = raw_ca("Proper CA", key_usage=key_usage(key_cert_sign=True))
    assert verify([make_client(root).cert], [root.cert]).ok


def test_expired_trust_anchor_is_refused():
    root = raw_ca("Expiring CA", key_usage=None)
    alice = make_client(root)
    old_root = rebuild(
        root.cert, signing_key=root.key, not_before=days_from_now(-60), not_after=days_from_now(-1)
    )
    verdict = verify([alice.cert], [old_root])
    assert not verdict.ok
    assert verdict.reason == "a CA certificate of the chain is expired or not yet valid"


# -- the leaf's facts stand for its parsed extensions (issue 17 §6) -----------------------------------------


@pytest.mark.parametrize(
    "leaf",
    [
        lambda ca: make_client(ca),  # accepted
        lambda ca: make_client(ca, ekus=[SERVER_AUTH]),  # EKU without clientAuth
        lambda ca: make_client(ca, ekus=[]),  # no EKU at all: accepted
        lambda ca: ca,  # a CA certificate as a client's
        lambda ca: make_expired(ca),
    ],
)
def test_a_verdict_with_the_leafs_facts_is_the_verdict_without(ca, leaf):
    issued = leaf(ca)
    chain, anchors = [issued.cert], [ca.cert]
    plain = verify_client_chain(chain, anchors, mode="peer", now=utcnow())
    with_facts = verify_client_chain(chain, anchors, mode="peer", now=utcnow(), leaf_facts=issued.facts)
    assert (with_facts.ok, with_facts.reason) == (plain.ok, plain.reason)


def test_the_leafs_facts_are_what_the_cA_and_eku_rules_read(ca):
    from dataclasses import replace

    from certauth.verify import REASON_CA_AS_CLIENT, REASON_EKU

    alice = make_client(ca)
    now = utcnow()
    as_ca = replace(alice.facts, is_ca=True)
    assert verify_client_chain([alice.cert], [ca.cert], mode="peer", now=now, leaf_facts=as_ca).reason == (
        REASON_CA_AS_CLIENT
    )
    server_only = replace(alice.facts, extended_key_usages=(SERVER_AUTH.dotted_string,))
    verdict = verify_client_chain([alice.cert], [ca.cert], mode="peer", now=now, leaf_facts=server_only)
    assert verdict.reason == REASON_EKU
    assert verify_client_chain([alice.cert], [ca.cert], mode="peer", now=now, leaf_facts=alice.facts).ok
