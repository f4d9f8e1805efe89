"""certauth.verify: a path the verifier accepted is reused only for the same chain, under the same trust
store, within the dates of every certificate on it (issue 17); refusals are never kept."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.x509.verification import Store

from certauth import verify as verify_module
from certauth.verify import REASON_CA_DATES, REASON_OK, REASON_UNTRUSTED, VerifiedPaths, verify_client_chain
from tests.certs import make_ca, make_client, make_intermediate, make_root, utcnow


@pytest.fixture(autouse=True)
def empty_cache():
    verify_module.verified_paths.clear()
    yield
    verify_module.verified_paths.clear()


@pytest.fixture(scope="module")
def root():
    return make_root("Paths root")


def verify(chain, anchors, now=None):
    return verify_client_chain(chain, anchors, mode="peer", now=now or utcnow())


class VerifierCalled(Exception):
    pass


@pytest.fixture
def no_verifier(monkeypatch):
    """From here on, building a verifier fails the test's call: only the cache can answer."""

    def refuse(*args, **kwargs):
        raise VerifierCalled

    def block():
        monkeypatch.setattr(verify_module, "PolicyBuilder", refuse)

    return block


def test_a_chain_verified_once_under_a_store_is_answered_from_the_cache(root, no_verifier):
    store = Store([root.cert])
    alice, bob = make_client(root), make_client(root, jids=("bob@localhost",))
    first = verify([alice.cert], store)
    assert first.ok and len(verify_module.verified_paths) == 1
    no_verifier()
    again = verify([alice.cert], store)
    assert (again.ok, again.reason, again.chain) == (True, REASON_OK, first.chain)
    with pytest.raises(VerifierCalled):  # another leaf of the same CA is verified on its own
        verify([bob.cert], store)


def test_a_new_store_verifies_again_so_a_distrusted_ca_is_refused(root):
    alice = make_client(root)
    assert verify([alice.cert], Store([root.cert])).ok
    # certauth.trust builds a new Store when a CA is distrusted in the admin: the old acceptance is not met
    verdict = verify([alice.cert], Store([make_ca("Some other root").cert]))
    assert (verdict.ok, verdict.reason) == (False, REASON_UNTRUSTED)


def test_the_intermediates_sent_are_part_of_the_key(root):
    intermediate = make_intermediate(root, "Paths intermediate")
    alice = make_client(intermediate)
    store = Store([root.cert])
    assert verify([alice.cert, intermediate.cert], store).ok
    # The same leaf without the intermediate that made its path: no path, whatever was accepted before.
    verdict = verify([alice.cert], store)
    assert (verdict.ok, verdict.reason) == (False, REASON_UNTRUSTED)
    assert verify([alice.cert, intermediate.cert], store).ok


def test_a_kept_path_ends_with_the_earliest_end_date_on_it(root, no_verifier):
    intermediate = make_intermediate(root, "Short-lived intermediate", days=2)
    alice = make_client(intermediate, not_after=utcnow() + dt.timedelta(days=30))  # outlives its issuer
    store = Store([root.cert])
    assert verify([alice.cert, intermediate.cert], store).ok
    later = intermediate.cert.not_valid_after_utc + dt.timedelta(minutes=1)
    verdict = verify([alice.cert, intermediate.cert], store, now=later)
    assert (verdict.ok, verdict.reason) == (False, REASON_CA_DATES)
    no_verifier()
    assert verify([alice.cert, intermediate.cert], store).ok  # still within every date: from the cache
    with pytest.raises(VerifierCalled):
        verify([alice.cert, intermediate.cert], store, now=later)


def test_refusals_and_per_call_anchor_lists_are_not_kept(root):
    stranger = make_client(make_ca("Stranger root"))
    assert not verify([stranger.cert], Store([root.cert])).ok
    assert verify([make_client(root).cert], [root.cert]).ok  # a list: a Store made for this call only
    assert len(verify_module.verified_paths) == 0


def test_the_cache_keeps_at_most_its_size_dropping_the_oldest(root):
    paths = VerifiedPaths(kept=2)
    store = Store([root.cert])
    leaves = [make_client(root, jids=(f"u{index}@localhost",)) for index in range(3)]
    now = utcnow()
    for index, leaf in enumerate(leaves):
        paths.put((id(store), (bytes([index]),)), store, (leaf.cert, root.cert))
    assert len(paths) == 2
    assert paths.get((id(store), (bytes([0]),)), store, now) is None
    assert paths.get((id(store), (bytes([2]),)), store, now) == (leaves[2].cert, root.cert)
    assert paths.get((id(store), (bytes([2]),)), Store([root.cert]), now) is None  # another store object


def test_a_kept_path_does_not_outlive_its_leaf_nor_excuse_its_facts(root):
    """The leaf's own dates, cA flag and EKU are read before the cache: a kept path never answers for them."""
    from dataclasses import replace

    from certauth.verify import REASON_CA_AS_CLIENT, REASON_EKU
    from tests.certs import SERVER_AUTH

    alice = make_client(root, not_after=utcnow() + dt.timedelta(days=2))
    store = Store([root.cert])
    assert verify([alice.cert], store).ok and len(verify_module.verified_paths) == 1
    later = alice.cert.not_valid_after_utc + dt.timedelta(minutes=1)
    expired = verify([alice.cert], store, now=later)
    assert not expired.ok and expired.reason.startswith("expired")
    now = utcnow()
    as_ca = replace(alice.facts, is_ca=True)
    assert verify_client_chain([alice.cert], store, mode="peer", now=now, leaf_facts=as_ca).reason == (
        REASON_CA_AS_CLIENT
    )
    server_only = replace(alice.facts, extended_key_usages=(SERVER_AUTH.dotted_string,))
    assert verify_client_chain([alice.cert], store, mode="peer", now=now, leaf_facts=server_only).reason == (
        REASON_EKU
    )


# == intermediates put back for resumed TLS sessions (certauth.verify.KnownIntermediates) ====================


def test_a_verified_path_teaches_the_intermediates_between_leaf_and_anchor_and_only_those():
    from certauth.verify import KnownIntermediates

    root = make_root("KI Root", path_length=2)
    upper = make_intermediate(root, "KI Upper")
    lower = make_intermediate(upper, "KI Lower")
    leaf = make_client(lower, jids=["alice@localhost"])
    known = KnownIntermediates()
    assert known.above(leaf.cert) == []
    known.remember([leaf.cert, lower.cert, upper.cert, root.cert])
    assert known.above(leaf.cert) == [lower.cert, upper.cert]  # the anchor and the leaf are not kept
    assert known.above(lower.cert) == [upper.cert]
    assert known.above(make_client(make_ca("KI other")).cert) == []


def test_a_path_built_from_known_intermediates_still_needs_the_verifier():
    """Candidates, never trust: an intermediate of the same name but another key does not make a path."""
    from certauth.verify import KnownIntermediates

    root = make_root("KI Root 2")
    real = make_intermediate(root, "KI Same Name")
    forged = make_intermediate(make_root("KI Elsewhere"), "KI Same Name")
    leaf = make_client(forged, jids=["mallory@localhost"])
    known = KnownIntermediates()
    known.remember([make_client(real).cert, real.cert, root.cert])
    candidates = known.above(leaf.cert)
    assert candidates == [real.cert]
    verdict = verify_client_chain([leaf.cert, *candidates], [root.cert], mode="peer", now=utcnow())
    assert not verdict.ok


def test_known_intermediates_are_bounded_by_subject_and_by_candidates_per_subject():
    from certauth import verify

    known = verify.KnownIntermediates(kept=2)
    roots = [make_root(f"KI Bound {n}") for n in range(3)]
    inters = [make_intermediate(r, f"KI Bound Inter {n}") for n, r in enumerate(roots)]
    for root, inter in zip(roots, inters, strict=True):
        known.remember([make_client(inter).cert, inter.cert, root.cert])
    assert len(known) == 2 and known.above(make_client(inters[0]).cert) == []  # the oldest went first
    rollover = make_root("KI Rollover")
    same = [
        make_intermediate(rollover, "KI Rollover Inter") for _ in range(verify.CANDIDATES_PER_SUBJECT + 1)
    ]
    for inter in same:
        known.remember([make_client(inter).cert, inter.cert, rollover.cert])
    assert known.above(make_client(same[-1]).cert) == [inter.cert for inter in same[1:]]
