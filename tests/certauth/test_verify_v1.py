"""certauth.verify: X.509 v1 client certificates, made by the real ``openssl`` command line (issue 14 §4).

The seed's Gajim recipe makes a v1 leaf under a v3 root (tests/opensslcli.py). A v1 leaf is accepted when a
trust anchor issued it directly, with the verifier's algorithms and the anchor's CA rules; it is refused under
an intermediate, and a v1 certificate is never a CA anywhere on the path (RFC 5280 §6.1.4 (k)). A self-signed
v1 leaf is accepted under ``selfsigned_peer`` only.
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.verification import Store

from certauth.verify import (
    REASON_BAD_SIGNATURE,
    REASON_CA_DATES,
    REASON_ISSUER_NOT_CA,
    REASON_OK,
    REASON_SELF_SIGNED_OK,
    REASON_SELF_SIGNED_UNTRUSTED,
    REASON_UNTRUSTED,
    REASON_V1_CA,
    REASON_V1_EXTENSIONS,
    REASON_V1_NO_ANCHOR_LIST,
    REASON_V1_NOT_DIRECT,
    REASON_WEAK_SIGNATURE,
    verify_client_chain,
)
from tests.certs import utcnow
from tests.opensslcli import (
    CA_EXTENSIONS,
    CLIENT_EXTENSIONS,
    ROOT_PASSPHRASE,
    self_signed,
    shared_recipe,
    signed_by,
)

MODES = ["peer", "selfsigned_peer"]
ROOT = "rootCA"


@pytest.fixture(scope="module")
def made():
    """The recipe's files, then its variants beside them, every one made with the openssl CLI."""
    paths = shared_recipe()
    recipe = paths.recipe
    directory = recipe.directory
    root = recipe.root
    weak_root = self_signed(
        directory, "weakroot", common_name="weak root", extensions=CA_EXTENSIONS, bits=1024
    )
    ku_root = self_signed(
        directory,
        "kuroot",
        common_name="no keyCertSign root",
        extensions="basicConstraints = critical, CA:TRUE\nkeyUsage = critical, digitalSignature\n",
    )
    not_ca = self_signed(
        directory, "notca", common_name="not a CA", extensions="basicConstraints = critical, CA:FALSE\n"
    )
    short_root = self_signed(
        directory, "shortroot", common_name="short root", extensions=CA_EXTENSIONS, days=2
    )
    v1_root = self_signed(directory, "v1root", common_name="v1 root")
    # Same name as the recipe's root, another key: what it signs does not verify under the real root.
    impostor = self_signed(
        directory, "impostor", common_name="Gajim recipe root CA", extensions=CA_EXTENSIONS
    )
    return SimpleNamespace(
        recipe=recipe,
        root=root,
        leaf=recipe.client,
        inter=paths.inter,
        under_inter=paths.under_inter,
        v1_inter=paths.v1_inter,
        v3_under_v1_inter=paths.v3_under_v1_inter,
        v1_under_v1_inter=signed_by(directory, "v1underv1", paths.v1_inter, "v1inter", common_name="dave"),
        self_v1=paths.self_v1,
        weak_root=weak_root,
        under_weak=signed_by(directory, "underweak", weak_root, "weakroot", common_name="frank"),
        sha1_leaf=signed_by(
            directory, "sha1", root, ROOT, common_name="grace", passphrase=ROOT_PASSPHRASE, digest="sha1"
        ),
        ku_root=ku_root,
        under_ku=signed_by(directory, "underku", ku_root, "kuroot", common_name="heidi"),
        not_ca=not_ca,
        under_not_ca=signed_by(directory, "undernotca", not_ca, "notca", common_name="ivan"),
        short_root=short_root,
        under_short=signed_by(directory, "undershort", short_root, "shortroot", common_name="judy"),
        v1_root=v1_root,
        under_v1_root=signed_by(directory, "underv1root", v1_root, "v1root", common_name="ken"),
        v3_under_v1_root=signed_by(
            directory, "v3underv1root", v1_root, "v1root", common_name="liz", extensions=CLIENT_EXTENSIONS
        ),
        forged=signed_by(directory, "forged", impostor, "impostor", common_name="alice"),
    )


def verify(chain, anchors, mode="peer", *, now=None, **kwargs):
    return verify_client_chain(chain, anchors, mode=mode, now=now or utcnow(), **kwargs)


def test_the_recipe_makes_a_v1_leaf_under_a_v3_root(made):
    assert made.leaf.cert.version is x509.Version.v1 and len(made.leaf.cert.extensions) == 0
    assert made.root.cert.version is x509.Version.v3
    assert made.root.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert made.leaf.facts.common_name == "alice" and made.leaf.facts.xmpp_addrs == ()


@pytest.mark.parametrize("mode", MODES)
def test_recipe_leaf_under_its_trusted_root_is_accepted(made, mode):
    verdict = verify([made.leaf.cert], [made.root.cert], mode)
    assert verdict.ok and verdict.reason == REASON_OK, verdict
    assert verdict.issuer_ca == made.root.cert and verdict.chain == (made.leaf.cert, made.root.cert)
    assert not verdict.self_signed


def test_recipe_leaf_sent_with_its_root_is_accepted(made):
    verdict = verify([made.leaf.cert, made.root.cert], [made.root.cert])
    assert verdict.ok and verdict.chain == (made.leaf.cert, made.root.cert), verdict


def test_recipe_leaf_against_a_prebuilt_store_reads_the_anchor_certificates(made):
    store = Store([made.root.cert])
    verdict = verify([made.leaf.cert], store, anchor_certificates=[made.root.cert])
    assert verdict.ok and verdict.issuer_ca == made.root.cert, verdict


def test_recipe_leaf_against_a_store_without_its_certificates_is_refused(made):
    verdict = verify([made.leaf.cert], Store([made.root.cert]))
    assert not verdict.ok and verdict.reason == REASON_V1_NO_ANCHOR_LIST, verdict  # fail closed


# Refused in both modes: (the leaf and what the client sends after it, the anchors, the reason), by ``made``
# field.
REFUSALS = {
    "v1_leaf_under_an_intermediate": (["under_inter", "inter"], ["root"], REASON_V1_NOT_DIRECT),
    "v3_leaf_under_a_v1_intermediate": (["v3_under_v1_inter", "v1_inter"], ["root"], REASON_V1_CA),
    "v1_leaf_under_a_v1_intermediate": (["v1_under_v1_inter", "v1_inter"], ["root"], REASON_V1_NOT_DIRECT),
    "v1_leaf_under_a_trusted_v1_intermediate": (["v1_under_v1_inter"], ["v1_inter"], REASON_V1_CA),
    "v1_leaf_under_a_v1_root_anchor": (["under_v1_root"], ["v1_root"], REASON_V1_CA),
    "v3_leaf_under_a_v1_root_anchor": (["v3_under_v1_root"], ["v1_root"], REASON_V1_CA),
    "v1_leaf_signed_by_another_key_under_the_roots_name": (["forged"], ["root"], REASON_BAD_SIGNATURE),
    "v1_leaf_under_a_weak_rsa_root": (["under_weak"], ["weak_root"], REASON_WEAK_SIGNATURE),
    "v1_leaf_with_a_sha1_signature": (["sha1_leaf"], ["root"], REASON_WEAK_SIGNATURE),
    "v1_leaf_under_a_root_without_keycertsign": (["under_ku"], ["ku_root"], REASON_ISSUER_NOT_CA),
    "v1_leaf_under_an_anchor_that_is_not_a_ca": (["under_not_ca"], ["not_ca"], REASON_ISSUER_NOT_CA),
    "recipe_leaf_under_an_untrusted_root": (["leaf", "root"], ["inter"], REASON_UNTRUSTED),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refused(made, case, mode):
    sent, anchors, reason = REFUSALS[case]
    verdict = verify(
        [getattr(made, name).cert for name in sent], [getattr(made, a).cert for a in anchors], mode
    )
    assert not verdict.ok and verdict.reason == reason, verdict


def test_the_test_certificates_are_the_versions_their_names_say(made):
    assert made.v3_under_v1_inter.cert.version is x509.Version.v3
    assert made.v1_inter.cert.version is x509.Version.v1 and made.self_v1.cert.version is x509.Version.v1
    assert made.forged.cert.issuer == made.root.cert.subject


def test_v1_leaf_whose_issuer_is_itself_an_anchor_is_accepted(made):
    # The rule is "a trust anchor issued it", whatever that anchor's own issuer: a trusted intermediate.
    verdict = verify([made.under_inter.cert, made.inter.cert], [made.inter.cert])
    assert verdict.ok and verdict.issuer_ca == made.inter.cert, verdict


def test_the_v3_intermediate_itself_is_good_for_a_v3_leaf(made):
    # The control for v3_leaf_under_a_v1_intermediate: only the intermediate's version differs.
    v3_leaf = signed_by(
        made.recipe.directory,
        "v3underinter",
        made.inter,
        "inter",
        common_name="oscar",
        extensions=CLIENT_EXTENSIONS,
    )
    verdict = verify([v3_leaf.cert, made.inter.cert], [made.root.cert])
    assert verdict.ok and verdict.issuer_ca == made.inter.cert, verdict


def test_self_signed_v1_leaf_is_refused_under_peer(made):
    verdict = verify([made.self_v1.cert], [made.root.cert], "peer")
    assert not verdict.ok and verdict.reason == REASON_SELF_SIGNED_UNTRUSTED, verdict
    as_anchor = verify([made.self_v1.cert], [made.self_v1.cert], "peer")
    assert not as_anchor.ok and as_anchor.reason == REASON_V1_CA, as_anchor  # named as an anchor: still no CA


def test_self_signed_v1_leaf_is_accepted_under_selfsigned_peer(made):
    verdict = verify([made.self_v1.cert], [made.root.cert], "selfsigned_peer")
    assert verdict.ok and verdict.reason == REASON_SELF_SIGNED_OK and verdict.self_signed, verdict


def test_v1_leaf_checks_every_anchor_of_its_issuers_name(made):
    # Two anchors with one name (a re-keyed CA): the one whose key signed the leaf decides.
    impostor = made.forged.issuer.cert
    verdict = verify([made.leaf.cert], [impostor, made.root.cert])
    assert verdict.ok and verdict.issuer_ca == made.root.cert, verdict


def test_v1_leaf_is_refused_once_it_expires(made):
    after = made.leaf.cert.not_valid_after_utc + dt.timedelta(seconds=1)
    verdict = verify([made.leaf.cert], [made.root.cert], now=after)
    assert not verdict.ok and verdict.reason.startswith("expired "), verdict


def test_v1_leaf_is_refused_once_its_root_expires(made):
    assert made.under_short.cert.not_valid_after_utc > made.short_root.cert.not_valid_after_utc
    valid = verify([made.under_short.cert], [made.short_root.cert])
    assert valid.ok, valid
    after = made.short_root.cert.not_valid_after_utc + dt.timedelta(seconds=1)
    verdict = verify([made.under_short.cert], [made.short_root.cert], now=after)
    assert not verdict.ok and verdict.reason == REASON_CA_DATES, verdict


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def _der_item(data: bytes, offset: int) -> tuple[int, int]:
    """(start of the content, end of the item) of the DER item at ``offset``."""
    first = data[offset + 1]
    if first < 0x80:
        return offset + 2, offset + 2 + first
    count = first & 0x7F
    length = int.from_bytes(data[offset + 2 : offset + 2 + count], "big")
    return offset + 2 + count, offset + 2 + count + length


def _as_v1_with_extensions(cert: x509.Certificate, issuer_key) -> x509.Certificate:
    """``cert`` (v3) with its version field dropped (so v1, RFC 5280 §4.1.2.1) but its extensions kept,
    re-signed by ``issuer_key``: the malformed certificate no tool makes on purpose."""
    der = cert.public_bytes(Encoding.DER)
    body, _ = _der_item(der, 0)
    tbs_body, tbs_end = _der_item(der, body)
    version = der[tbs_body : tbs_body + 5]
    assert version == bytes.fromhex("a003020102"), version.hex()
    tbs = b"\x30" + _der_length(tbs_end - tbs_body - 5) + der[tbs_body + 5 : tbs_end]
    _, algorithm_end = _der_item(der, tbs_end)
    signature = issuer_key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    bit_string = b"\x03" + _der_length(len(signature) + 1) + b"\x00" + signature
    content = tbs + der[tbs_end:algorithm_end] + bit_string
    return x509.load_der_x509_certificate(b"\x30" + _der_length(len(content)) + content)


def test_v1_leaf_with_extensions_is_refused(made):
    v3_leaf = signed_by(
        made.recipe.directory,
        "v3leaf",
        made.root,
        ROOT,
        common_name="mallory",
        extensions="basicConstraints = critical, CA:FALSE\n",
        passphrase=ROOT_PASSPHRASE,
    )
    malformed = _as_v1_with_extensions(v3_leaf.cert, made.root.key)
    assert malformed.version is x509.Version.v1 and len(malformed.extensions) > 0
    verdict = verify([malformed], [made.root.cert])
    assert not verdict.ok and verdict.reason == REASON_V1_EXTENSIONS, verdict
