"""One normalised name wherever an account or domain is created or looked up (issue 12 §4, RFC 7622 §3.2-3.3).

Localparts go through PRECIS UsernameCaseMapped (RFC 8265 §3.3, precis-i18n), domains through IDNA2008 with
UTS #46 (idna), in the admin forms, the model's save, the ``pki`` command and ``Account.objects.by_jid``.
"""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from accounts.models import Account, Domain
from certauth import services
from transport.xmpp.jid import InvalidJid, normalise_domain, normalise_localpart

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("typed", "stored"),
    [("Fiona", "fiona"), ("DAVE", "dave"), ("\uff24\uff41\uff56\uff45", "dave"), ("Σίσυφος", "σίσυφος")],
)
def test_localparts_are_stored_in_their_precis_form(typed, stored):
    assert normalise_localpart(typed) == stored
    assert normalise_localpart(typed) == stored  # asked again: the held answer (issue 17 §6) is the same


@pytest.mark.parametrize("typed", ["\ufb01ona", "a b", "jo@e", "\u01c4", "", "x\u200by"])
def test_look_alikes_and_forbidden_localparts_are_refused(typed):
    for _ in range(2):  # a refusal is never held as an answer: refused again when asked again
        with pytest.raises(InvalidJid):
            normalise_localpart(typed)


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("LocalHost", "localhost"),
        ("Example.COM.", "example.com"),
        ("xn--bcher-kva.example", "bücher.example"),
        ("BÜCHER.example", "bücher.example"),
        ("[::1]", "[::1]"),
    ],
)
def test_domains_are_stored_as_lower_case_u_labels(typed, stored):
    assert normalise_domain(typed) == stored


@pytest.mark.parametrize("typed", ["exa mple.com", "a..b", "-bad-.example", "x_y.example"])
def test_invalid_domains_are_refused(typed):
    with pytest.raises(InvalidJid):
        normalise_domain(typed)


def test_model_save_and_by_jid_use_the_normal_form():
    domain = Domain.objects.create(name="LocalHost")
    account = Account.objects.create(localpart="Dave", domain=domain)
    assert (domain.name, account.localpart) == ("localhost", "dave")
    assert Account.objects.by_jid("DAVE@LOCALHOST") == account
    with pytest.raises(Account.DoesNotExist):
        Account.objects.by_jid("not a jid")


def _add_account(staff_client, localpart: str, domain: Domain):
    pins = "selfsigned_pins"  # the empty inline of the account's self-signed pins (certauth.admin)
    return staff_client.post(
        reverse("admin:accounts_account_add"),
        {
            "localpart": localpart,
            "domain": domain.pk,
            "active": "on",
            "created_by": "admin",
            f"{pins}-TOTAL_FORMS": "0",
            f"{pins}-INITIAL_FORMS": "0",
        },
    )


def test_admin_stores_the_normal_form_and_refuses_a_collision(staff_client):
    domain = Domain.objects.create(name="localhost")
    assert _add_account(staff_client, "Fiona", domain).status_code == 302
    assert Account.objects.get().localpart == "fiona"
    response = _add_account(staff_client, "FIONA", domain)
    assert response.status_code == 200 and b"already exists" in response.content
    response = _add_account(staff_client, "\ufb01ona", domain)
    assert response.status_code == 200 and b"not a PRECIS username" in response.content
    assert Account.objects.count() == 1


def test_admin_domain_form_normalises_and_refuses_a_collision(staff_client):
    add = reverse("admin:accounts_domain_add")
    assert staff_client.post(add, {"name": "Chat.Example", "enabled": "on"}).status_code == 302
    assert Domain.objects.get().name == "chat.example"
    response = staff_client.post(add, {"name": "CHAT.example.", "enabled": "on"})
    assert response.status_code == 200 and b"already exists" in response.content


def test_pki_issue_finds_the_account_whatever_case_is_typed(tmp_path, monkeypatch):
    services.create_ca("Names CA")
    domain = Domain.objects.create(name="localhost")
    existing = Account.objects.create(localpart="dave", domain=domain)
    monkeypatch.setenv("XMPPAUTH_P12_PASSWORD", "names-password")
    call_command("pki", "issue", "Dave@LocalHost", "--out", str(tmp_path), stdout=StringIO())
    assert Account.objects.count() == 1
    assert existing.certificates.get().xmpp_addrs == ["dave@localhost"]  # the normalised JID is issued


@pytest.mark.django_db(transaction=True)
def test_migration_normalises_existing_names_and_disables_look_alike_duplicates():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before, after = [("accounts", "0002_roster_offline")], [("accounts", "0003_normalise_names")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    old_domain, old_account = old.get_model("accounts", "Domain"), old.get_model("accounts", "Account")
    host = old_domain.objects.create(name="LocalHost")
    old_account.objects.create(localpart="Dave", domain=host)
    old_account.objects.create(localpart="erin", domain=host)
    old_account.objects.create(localpart="Erin", domain=host)  # a look-alike of erin
    old_account.objects.create(localpart="\ufb01ona", domain=host)  # no PRECIS username
    executor = MigrationExecutor(connection)
    executor.migrate(after)
    try:
        rows = set(Account.objects.values_list("localpart", "active"))
        assert rows == {("dave", True), ("erin", True), ("Erin", False), ("\ufb01ona", False)}
        assert list(Domain.objects.values_list("name", flat=True)) == ["localhost"]
    finally:
        # Going back to accounts 0002 also unapplied what depends on it (certauth's pins): restore it all.
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
