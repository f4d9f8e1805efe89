"""A login hashes its verified path once (issue 17 §6): the fingerprints the authenticator hands on are the
ones each consumer would compute itself, and a consumer given none still computes them."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certauth import learning, pki
from certauth.authenticator import _chain_fingerprints, _path_links
from certauth.revocation import PathLink
from certauth.trust import TrustAnchors
from tests.certs import make_client, make_intermediate, make_root


@pytest.fixture(scope="module")
def path():
    root = make_root("hashing root")
    inter = make_intermediate(root, "hashing intermediate", crl_url="http://crl.example/root.crl")
    leaf = make_client(inter, jids=["alice@localhost"])
    return [leaf.cert, inter.cert, root.cert]


def anchors_of(*certs) -> TrustAnchors:
    return TrustAnchors(certs, None, anchor_fingerprints={c: pki.fingerprint_sha256(c) for c in certs})


@pytest.mark.parametrize("anchored", [True, False])
def test_chain_fingerprints_are_each_certificates_own(path, anchored):
    anchors = anchors_of(path[2]) if anchored else anchors_of()
    leaf_fingerprint = pki.cert_facts(path[0]).fingerprint_sha256
    expected = tuple(pki.fingerprint_sha256(c) for c in path)
    assert _chain_fingerprints(leaf_fingerprint, path, anchors) == expected


def test_an_anchors_fingerprint_is_looked_up_and_any_other_hashed(path, monkeypatch):
    anchors = anchors_of(path[2])
    copy = x509.load_der_x509_certificate(path[2].public_bytes(Encoding.DER))  # as the verifier returns it
    hashed = []
    real = pki.fingerprint_sha256
    monkeypatch.setattr(pki, "fingerprint_sha256", lambda cert: hashed.append(cert) or real(cert))
    assert anchors.fingerprint_of(copy) == real(path[2]) and hashed == []
    assert anchors.fingerprint_of(path[1]) == real(path[1]) and hashed == [path[1]]


def test_a_path_link_given_fingerprints_equals_one_that_computes_them(path):
    leaf, issuer = path[0], path[1]
    given = PathLink.of(
        leaf,
        issuer,
        7,
        is_leaf=True,
        fingerprint=pki.fingerprint_sha256(leaf),
        issuer_fingerprint=pki.fingerprint_sha256(issuer),
    )
    assert given == PathLink.of(leaf, issuer, 7, is_leaf=True)
    assert given.issuer_fingerprint == pki.fingerprint_sha256(issuer)
    alone = PathLink.of(leaf, None, None, is_leaf=True, fingerprint=pki.fingerprint_sha256(leaf))
    assert alone == PathLink.of(leaf, None, None, is_leaf=True) and alone.issuer_fingerprint is None


@pytest.mark.parametrize("known", ["none", "root", "both"])
def test_learning_keys_from_given_fingerprints_equal_computed_ones(path, known):
    fingerprints = [pki.fingerprint_sha256(c) for c in path]
    known_ca = {"none": {}, "root": {fingerprints[2]: 1}, "both": {fingerprints[1]: 2, fingerprints[2]: 1}}[
        known
    ]
    assert learning._keys(path, known_ca, fingerprints) == learning._keys(path, known_ca)


def test_learning_refuses_fingerprints_that_do_not_match_the_path(path):
    with pytest.raises(ValueError):
        learning.offer(path, {}, [pki.fingerprint_sha256(path[0])])


# -- a returning chain teaches nothing new: answered without reading it again --------------------------


@pytest.fixture
def learnt(monkeypatch):
    """Paths learnt inline (recorded, no database); distribution points read (counted)."""
    learning.forget()
    monkeypatch.setattr(learning, "INLINE", True)
    paths: list[tuple] = []
    monkeypatch.setattr(learning, "_learn_inline", lambda path, keys: paths.append(tuple(path)))
    reads: list[object] = []
    real = pki.crl_distribution_urls
    monkeypatch.setattr(pki, "crl_distribution_urls", lambda cert: reads.append(cert) or real(cert))
    yield paths, reads
    learning.forget()


def test_a_taught_path_is_not_read_again(path, learnt):
    paths, reads = learnt
    fingerprints = [pki.fingerprint_sha256(c) for c in path]
    known = {fingerprints[2]: 1}  # the root is a row: the intermediate and its distribution point are news
    assert learning.offer(path, known, fingerprints) is True and len(paths) == 1
    read_first = len(reads)
    assert read_first > 0
    assert learning.offer(path, known, fingerprints) is False
    assert learning.offer(path, known) is False  # the same answer when the caller brings no fingerprints
    assert len(reads) == read_first and len(paths) == 1


def test_a_path_is_offered_again_once_its_keys_are_forgotten(path, learnt):
    paths, _ = learnt
    fingerprints = [pki.fingerprint_sha256(c) for c in path]
    known = {fingerprints[2]: 1}
    keys = learning._keys(path, known, fingerprints)
    assert learning.offer(path, known, fingerprints) is True
    assert learning.offer(path, known, fingerprints) is False
    with learning._lock:
        learning._forget_seen(keys)  # what a failed learning does: "it will be offered again"
    assert learning.offer(path, known, fingerprints) is True and len(paths) == 2


def test_a_path_whose_intermediate_became_a_row_is_read_again(path, learnt):
    _, reads = learnt
    fingerprints = [pki.fingerprint_sha256(c) for c in path]
    assert learning.offer(path, {fingerprints[2]: 1}, fingerprints) is True
    assert learning.offer(path, {fingerprints[2]: 1}, fingerprints) is False
    before = len(reads)
    learning.offer(path, {fingerprints[2]: 1, fingerprints[1]: 2}, fingerprints)  # the intermediate is a row
    assert len(reads) > before  # what it may teach now is looked for again


def test_a_paths_links_name_the_same_subjects_when_the_caller_holds_them():
    """``authenticator._path_links`` takes the leaf's subject from its facts and the CAs' from what it holds:
    the links are the ones formatted from the certificates themselves."""
    root = make_root("Subjects root")
    inter = make_intermediate(root, "Subjects intermediate")
    client = make_client(inter, jids=("alice@localhost",))
    chain = [client.cert, inter.cert, root.cert]
    fingerprints = [pki.fingerprint_sha256(cert) for cert in chain]
    anchors = TrustAnchors((root.cert,), None, {fingerprints[2]: 7})
    for _ in range(2):  # the second time from what the first held
        links = _path_links(client.cert, chain, anchors, fingerprints, client.facts.subject)
        assert links == [
            PathLink.of(client.cert, inter.cert, None, is_leaf=True),
            PathLink.of(inter.cert, root.cert, 7, is_leaf=False),
        ]
