"""Fixtures of the admin page tests: our CA, an account, a staff user without rights, a logged-in session."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from accounts.models import Account, Domain
from certauth import services
from certauth.models import CertificateAuthority
from transport.sessions import terminations as sessions


@pytest.fixture
def our_ca() -> CertificateAuthority:
    return services.create_ca("Test CA")


@pytest.fixture
def alice() -> Account:
    domain = Domain.objects.create(name="localhost")
    return Account.objects.create(localpart="alice", domain=domain)


@pytest.fixture
def issued(our_ca, alice) -> services.IssuedCertificate:
    return services.issue_for_account(alice, days=20)


@pytest.fixture
def viewer_client(django_user_model) -> Client:
    """A staff user who may look at certificates and sessions but change nothing."""
    user = django_user_model.objects.create_user(username="viewer", password="pw-viewer", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            codename__in=["view_certificate", "view_account", "view_livesession", "view_authevent"]
        )
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def user_client(django_user_model) -> Client:
    """Logged in, but not staff: the admin sends it to its login page."""
    user = django_user_model.objects.create_user(username="someone", password="pw-someone")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def live_session(issued) -> sessions.SessionFacts:
    """A session row as a listener process writes it (transport.sessions.terminations.save_session)."""
    facts = sessions.SessionFacts(
        full_jid="alice@localhost/phone",
        transport="websocket",
        peer="127.0.0.1:50000",
        cert_fingerprint=issued.row.fingerprint_sha256,
        cert_serial=issued.row.serial,
        issuer_ca_id=issued.row.issuer_id,
        cert_not_after=issued.row.not_after,
    )
    sessions.save_session(facts, process="testhost:4242:1")
    return facts
