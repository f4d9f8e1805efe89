"""The certificate facts a login parses are held by fingerprint (issue 17 §6, ``authenticator._facts_of``):
a returning user's leaf is parsed once, another certificate never gets them, a certificate that cannot be
parsed is refused every time, and what is held is bounded."""

from __future__ import annotations

import pytest
from cryptography import x509

from certauth import authenticator, pki
from tests.certs import make_ca, make_client


@pytest.fixture
def parses(monkeypatch) -> list[x509.Certificate]:
    """Every call of ``pki.cert_facts``; the held facts start empty."""
    monkeypatch.setattr(authenticator, "_FACTS", {})
    calls: list[x509.Certificate] = []
    real = pki.cert_facts

    def counting(cert, fingerprint=None):
        calls.append(cert)
        return real(cert, fingerprint)

    monkeypatch.setattr(pki, "cert_facts", counting)
    return calls


@pytest.fixture(scope="module")
def ca():
    return make_ca("facts cache CA")


def fresh(issued) -> x509.Certificate:
    """The certificate as a new connection presents it: parsed again from its DER."""
    return x509.load_der_x509_certificate(issued.der)


def test_a_returning_certificate_is_parsed_once(ca, parses):
    alice = make_client(ca, jids=["alice@localhost"])
    first, second = authenticator._facts_of(fresh(alice)), authenticator._facts_of(fresh(alice))
    assert len(parses) == 1
    assert first == second == alice.facts
    assert second.xmpp_addrs == ("alice@localhost",)


def test_another_certificate_gets_its_own_facts(ca, parses):
    alice = make_client(ca, jids=["alice@localhost"])
    bob = make_client(ca, jids=["bob@localhost"])
    assert authenticator._facts_of(fresh(alice)).xmpp_addrs == ("alice@localhost",)
    assert authenticator._facts_of(fresh(bob)).xmpp_addrs == ("bob@localhost",)
    assert len(parses) == 2


def test_a_certificate_that_cannot_be_parsed_is_refused_every_time(ca, parses, monkeypatch):
    carol = make_client(ca, jids=["carol@localhost"])

    def broken(cert, fingerprint=None):
        parses.append(cert)
        raise ValueError("certificate extensions cannot be parsed: duplicate")

    monkeypatch.setattr(pki, "cert_facts", broken)
    for _ in range(2):
        with pytest.raises(ValueError):
            authenticator._facts_of(fresh(carol))
    assert len(parses) == 2 and authenticator._FACTS == {}


def test_the_facts_held_are_bounded(ca, parses, monkeypatch):
    monkeypatch.setattr(authenticator, "FACTS_HELD", 2)
    clients = [make_client(ca, jids=[f"u{i}@localhost"]) for i in range(3)]
    for client in clients:
        assert authenticator._facts_of(fresh(client)).xmpp_addrs == (f"{client.facts.xmpp_addrs[0]}",)
    assert len(authenticator._FACTS) <= 2
    authenticator._facts_of(fresh(clients[2]))  # the newest is held
    assert len(parses) == 3
