"""``CertificateAuthenticator.accepted_from_memory``: the certificate check on the event loop (issue 17).

A returning client's chain is accepted on the listener's loop, without a worker thread, when this process
decides it from memory alone: fresh change feed, trust anchors, verified path and revocation verdict held.
Everything else is ``None`` and left to ``check_certificate`` in a worker thread, which decides and records
as always: a first chain, a stale feed, any refusal (never decided, never recorded on the loop), a revocation
made here or in another process, a path with something to learn.

"On the loop" here is what a listener's loop is: a running asyncio loop in the calling thread, where Django
refuses every query (``SynchronousOnlyOperation``).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from accounts import changefeed
from certauth import learning
from certauth.models import AuthEvent, Certificate
from tests.certauth.crlhelpers import add_ca_row
from tests.certauth.test_authenticator import authenticator, make_account, register
from tests.certauth.test_login_caches import JID, elsewhere, feed_sql, wait_for_the_feed, warm
from tests.certs import make_ca, make_client, make_intermediate, make_root

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice():
    ca = make_ca("Loop CA")
    add_ca_row(ca, name="Loop CA")
    cert = make_client(ca, jids=[JID])
    register(cert, account=make_account(JID))
    return cert


def on_loop(function, *args):
    """``function(*args)`` called from a coroutine: on a thread with a running event loop, as a listener's."""

    async def call():
        return function(*args)

    return asyncio.run(call())


def events() -> int:
    return AuthEvent.objects.count()


def test_a_returning_chain_is_accepted_on_the_loop_without_a_query(alice):
    warm(alice)
    by_worker = authenticator()
    expected = by_worker.check_certificate([alice.der])
    auth = authenticator()
    before = events()
    with CaptureQueriesContext(connection) as captured:
        check = on_loop(auth.accepted_from_memory, [alice.der])
    assert check is not None and check.verified, check
    assert check.facts.fingerprint_sha256 == alice.facts.fingerprint_sha256
    assert (check.reason, auth.issuer_ca_id) == (expected.reason, by_worker.issuer_ca_id)
    assert auth.issuer_ca_id is not None
    assert len(captured) == 0 and events() == before
    # the connection goes on as after a worker's check: SASL EXTERNAL and the bind re-check
    assert auth.authenticate_external(check.facts, None, "localhost").jid == JID
    assert auth.refusal_at_bind(f"{JID}/phone") is None


def test_a_chain_not_seen_before_is_left_to_the_worker(alice):
    changefeed.generation()  # a fresh feed: only the caches are cold
    auth = authenticator()
    before = events()
    assert on_loop(auth.accepted_from_memory, [alice.der]) is None
    assert events() == before and auth.issuer_ca_id is None
    check = auth.check_certificate([alice.der])  # the worker's check, on this (loop-free) thread
    assert check.verified, check.reason


def test_a_check_on_the_loop_makes_no_database_connection_there(alice):
    """A miss raises before Django makes a connection object for the loop's current context: a listener
    would otherwise keep one per connection it handles, for as long as that connection lives."""
    changefeed.generation()

    async def call():
        result = authenticator().accepted_from_memory([alice.der])  # cold caches: a miss
        return result, connections.all(initialized_only=True)

    result, made = asyncio.run(call())
    assert result is None and made == []


def test_a_stale_feed_answers_nothing_from_memory(alice, monkeypatch):
    warm(alice)
    monkeypatch.setattr(changefeed, "_seen_at", changefeed._seen_at - changefeed.POLL_INTERVAL - 0.01)
    assert on_loop(authenticator().accepted_from_memory, [alice.der]) is None


def test_a_refusal_is_never_decided_on_the_loop_and_the_worker_records_it(alice):
    warm(alice)
    stranger = make_client(make_ca("Unknown CA"), jids=[JID])
    auth = authenticator()
    before = events()
    assert on_loop(auth.accepted_from_memory, [stranger.der]) is None
    assert events() == before  # nothing recorded on the loop
    check = auth.check_certificate([stranger.der])
    assert not check.verified and events() == before + 1  # the worker refuses and records


@pytest.mark.parametrize("where", ["here", "elsewhere"])
def test_a_revoked_certificate_is_not_accepted_from_memory(alice, where):
    before_gen = warm(alice)
    now = datetime.now(UTC)
    if where == "here":  # the admin of this process: its caches are forgotten at once
        Certificate.objects.filter(fingerprint_sha256=alice.facts.fingerprint_sha256).update(
            status=Certificate.Status.REVOKED, revoked_at=now
        )
    else:  # another process commits the row and the feed's bump; this one reads the feed again
        elsewhere(
            feed_sql(Certificate, "status = %s, revoked_at = %s", "fingerprint_sha256 = %s"),
            [Certificate.Status.REVOKED, now, alice.facts.fingerprint_sha256],
        )
        wait_for_the_feed(before_gen)
    auth = authenticator()
    assert on_loop(auth.accepted_from_memory, [alice.der]) is None
    check = auth.check_certificate([alice.der])
    assert not check.verified and "revoked" in check.reason, check.reason


def test_a_path_with_something_to_learn_is_left_to_the_worker(monkeypatch):
    monkeypatch.setattr(learning, "INLINE", True)  # learnt by the worker's check itself
    root = make_root("Learning root")
    add_ca_row(root, name="Learning root")
    intermediate = make_intermediate(root, "Learning intermediate", crl_url="http://127.0.0.1:9/root.crl")
    leaf = make_client(intermediate, jids=[JID])
    chain = [leaf.der, intermediate.der]
    assert authenticator().check_certificate(chain).verified  # learns the intermediate and its CDP
    assert authenticator().check_certificate(chain).verified  # the caches, under the feed that moved
    changefeed.generation()
    assert on_loop(authenticator().accepted_from_memory, chain) is not None  # nothing left to learn
    learning._forget_seen()  # as when the process's bound on what it offered was reached
    assert learning._keys(*_path_and_anchors(chain))
    assert on_loop(authenticator().accepted_from_memory, chain) is None
    assert learning._keys(*_path_and_anchors(chain))  # the loop offered nothing: left to the worker
    assert authenticator().check_certificate(chain).verified  # the worker offers it again
    assert not learning._keys(*_path_and_anchors(chain))
    assert authenticator().check_certificate(chain).verified
    changefeed.generation()
    assert on_loop(authenticator().accepted_from_memory, chain) is not None


def _path_and_anchors(chain):
    """``learning._keys``'s arguments (what the path could still teach) for ``chain`` (leaf, intermediate),
    as the authenticator gives them: the verified path up to the anchor, the CA rows, its fingerprints."""
    from cryptography import x509

    from certauth import pki
    from certauth.trust import trust_anchors

    anchors = trust_anchors(None)
    certs = [x509.load_der_x509_certificate(der) for der in chain]
    root = next(cert for cert in anchors.certificates if cert.subject == certs[-1].issuer)
    path = [*certs, root]
    return path, anchors.ca_ids, [pki.fingerprint_sha256(cert) for cert in path]


def test_memory_only_blocks_nest_and_end():
    with changefeed.memory_only():
        with changefeed.memory_only():
            pass
        with pytest.raises(changefeed.NotInMemory):
            changefeed.require_database()  # still inside the outer block
    changefeed.require_database()  # outside: the database may be read


@pytest.fixture
def verifier_calls(monkeypatch):
    """How often the chain verifier (cryptography's ``PolicyBuilder``) is built."""
    from certauth import verify as verify_module

    calls = []
    real = verify_module.PolicyBuilder

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(verify_module, "PolicyBuilder", counted)
    return calls


def test_a_first_or_refused_chain_is_verified_once_in_the_worker_never_on_the_loop(alice, verifier_calls):
    changefeed.generation()
    stranger = make_client(make_ca("Unknown CA"), jids=[JID])
    for chain in ([alice.der], [stranger.der]):
        before = len(verifier_calls)
        assert on_loop(authenticator().accepted_from_memory, chain) is None
        assert len(verifier_calls) == before  # not on the loop
        authenticator().check_certificate(chain)
        assert len(verifier_calls) == before + 1  # once, in the worker
    assert on_loop(authenticator().accepted_from_memory, [stranger.der]) is None  # a refusal is never kept
    assert len(verifier_calls) == 2


def test_a_warm_leaf_past_its_notafter_is_not_accepted_from_memory(alice):
    from certauth.authenticator import CertificateAuthenticator

    warm(alice)
    changefeed.generation()
    later = alice.cert.not_valid_after_utc + timedelta(seconds=1)
    late = authenticator()
    late = CertificateAuthenticator(late.config, late.listener_tls, "tcp", late.peer, clock=lambda: later)
    assert on_loop(late.accepted_from_memory, [alice.der]) is None
    check = late.check_certificate([alice.der])
    assert not check.verified and "expired" in check.reason, check.reason


def test_a_chain_warm_under_one_listener_is_not_accepted_by_a_listener_that_does_not_trust_its_ca(tmp_path):
    from certauth.models import CertificateAuthority

    ca = make_ca("Listener A CA")  # a tls.cacertfile CA of listener A only
    row = add_ca_row(ca, name="Listener A CA")
    CertificateAuthority.objects.filter(pk=row.pk).update(
        origin=CertificateAuthority.Origin.CONFIG, config_files=[str(tmp_path / "a.pem")]
    )
    client = make_client(ca, jids=[JID])
    register(client, account=make_account(JID))
    listener_a = authenticator(cacertfile=tmp_path / "a.pem")
    assert listener_a.check_certificate([client.der]).verified
    assert authenticator(cacertfile=tmp_path / "a.pem").check_certificate([client.der]).verified  # warm
    listener_b = authenticator(cacertfile=tmp_path / "b.pem")
    listener_b.check_certificate([client.der])  # listener B's anchors, held too
    changefeed.generation()
    on_a = authenticator(cacertfile=tmp_path / "a.pem")
    assert on_loop(on_a.accepted_from_memory, [client.der]) is not None
    assert on_loop(listener_b.accepted_from_memory, [client.der]) is None
    check = listener_b.check_certificate([client.der])
    assert not check.verified and "not trusted" in check.reason, check.reason


def test_a_returning_chain_is_not_verified_again_when_the_caches_are_forgotten_with_no_anchor_changed(
    alice, verifier_calls
):
    """A feed bump for any row (a CRL refresh, an account edited) or the feed's MAX_AGE forgets the caches and
    rebuilds the trust anchors; the Store stays the same object while its anchors do, so the verified path is
    still held. A new anchor makes a new Store, and the chain is verified again."""
    warm(alice)
    verified = len(verifier_calls)
    assert verified >= 1
    changefeed.forget()
    assert on_loop(authenticator().accepted_from_memory, [alice.der]) is None  # the revocation cache is cold
    check = authenticator().check_certificate([alice.der])
    assert check.verified, check.reason
    assert len(verifier_calls) == verified
    assert on_loop(authenticator().accepted_from_memory, [alice.der]) is not None  # warm again
    add_ca_row(make_ca("Another CA"), name="Another CA")
    assert authenticator().check_certificate([alice.der]).verified
    assert len(verifier_calls) == verified + 1


def test_a_leaf_never_parsed_here_is_left_to_the_worker_without_being_parsed_on_the_loop(alice, monkeypatch):
    """A listener hands certificate objects; one whose facts this process does not hold was never verified
    here either: the loop leaves it at once (no parse, no verifier), the worker parses and verifies it, and
    the next connection with it is decided on the loop."""
    from cryptography import x509

    from certauth import authenticator as authenticator_module
    from certauth import pki

    monkeypatch.setattr(authenticator_module, "_FACTS", {})
    parses = []
    real = pki.cert_facts
    monkeypatch.setattr(pki, "cert_facts", lambda cert, fp=None: parses.append(cert) or real(cert, fp))

    def presented():
        return [x509.load_der_x509_certificate(alice.der)]  # as a new connection gives it

    warm(alice)
    monkeypatch.setattr(authenticator_module, "_FACTS", {})  # as in a process that never saw the leaf
    parses.clear()
    changefeed.generation()
    assert on_loop(authenticator().accepted_from_memory, presented()) is None
    assert parses == []
    assert authenticator().check_certificate(presented()).verified
    assert len(parses) == 1
    check = on_loop(authenticator().accepted_from_memory, presented())
    assert check is not None and check.verified
    assert len(parses) == 1


def test_a_chain_warm_under_two_anchors_is_refused_once_its_own_ca_is_distrusted_and_the_other_stays(alice):
    """The neighbour of keeping the Store across rebuilds: a rebuild that drops an anchor, here the chain's
    own CA while another stays trusted (so there still is a Store), makes a new Store: the kept path is not
    met and the chain is refused, on the loop (left to the worker) and by the worker (recorded)."""
    from certauth import trust
    from certauth.models import CertificateAuthority

    add_ca_row(make_ca("Still trusted CA"), name="Still trusted CA")
    warm(alice)
    kept = trust.trust_anchors(None).store
    assert on_loop(authenticator().accepted_from_memory, [alice.der]) is not None  # warm: from memory
    CertificateAuthority.objects.filter(name="Loop CA").update(trusted_for_client_auth=False)
    after = trust.trust_anchors(None)
    assert after.store is not None and after.store is not kept
    assert on_loop(authenticator().accepted_from_memory, [alice.der]) is None
    before = events()
    check = authenticator().check_certificate([alice.der])
    assert not check.verified and "not trusted" in check.reason, check.reason
    assert events() == before + 1
