"""Revocation is permanent (issue 11 point 8): a revoked or held certificate row cannot be deleted.

Our CRL is built from the Certificate rows (``services.publish_crl``): deleting a revoked row would drop its
serial from the next CRL, an un-revocation. Every ordinary path is tried both ways: an active certificate
is deletable, a revoked or held one is not, and the CRL published afterwards still lists its serial.
"""

from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import transaction
from django.db.models import ProtectedError
from django.db.models.deletion import Collector
from django.urls import reverse

from accounts.models import Account, Domain
from certauth import pki, services
from certauth.models import Certificate, CertificateAuthority

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:certauth_certificate_changelist"


@pytest.fixture
def our_ca() -> CertificateAuthority:
    return services.create_ca("Permanent CA")


@pytest.fixture
def alice() -> Account:
    domain = Domain.objects.create(name="localhost")
    return Account.objects.create(localpart="alice", domain=domain)


def _revoked(alice: Account, our_ca: CertificateAuthority) -> Certificate:
    return services.revoke(services.issue_for_account(alice, ca=our_ca, days=30).row, "key_compromise")


def _held(alice: Account, our_ca: CertificateAuthority) -> Certificate:
    return services.hold(services.issue_for_account(alice, ca=our_ca, days=30).row)


REFUSED = {"revoked": _revoked, "held": _held}


def _listed_in_fresh_crl(our_ca: CertificateAuthority, serial: str) -> bool:
    """Whether the next CRL we publish lists ``serial`` (the CRL is rebuilt from the rows here)."""
    crl = pki.load_crl(services.publish_crl(our_ca))
    return serial in {f"{entry.serial:x}" for entry in pki.revoked_entries(crl)}


def _active(alice: Account, our_ca: CertificateAuthority) -> Certificate:
    return services.issue_for_account(alice, ca=our_ca, days=30).row


# --- the ORM's paths -------------------------------------------------------------------------------------


def test_an_active_certificate_is_deleted_by_instance_delete(our_ca, alice):
    row = _active(alice, our_ca)
    row.delete()
    assert not Certificate.objects.filter(serial=row.serial).exists()


def test_active_certificates_are_deleted_by_queryset_delete(our_ca, alice):
    rows = [_active(alice, our_ca), _active(alice, our_ca)]
    deleted, _ = Certificate.objects.filter(pk__in=[r.pk for r in rows]).delete()
    assert deleted == 2


@pytest.mark.parametrize("state", REFUSED)
def test_instance_delete_of_a_revoked_or_held_certificate_is_refused(our_ca, alice, state):
    row = REFUSED[state](alice, our_ca)
    with pytest.raises(ProtectedError, match=f"{row.serial}.*cannot be deleted"):
        row.delete()
    assert Certificate.objects.filter(pk=row.pk).exists()
    assert _listed_in_fresh_crl(our_ca, row.serial)


@pytest.mark.parametrize("state", REFUSED)
def test_a_stale_copy_of_a_since_revoked_or_held_row_is_not_deleted(our_ca, alice, state):
    stale = _active(alice, our_ca)
    fresh = Certificate.objects.get(pk=stale.pk)
    {"revoked": services.revoke, "held": services.hold}[state](fresh)  # e.g. by another operator
    assert stale.status == Certificate.Status.ACTIVE  # in memory: what a caller holding it believes
    with pytest.raises(ProtectedError, match=stale.serial):
        stale.delete()
    collector = Collector(using="default")
    collector.collect([stale])
    with pytest.raises(ProtectedError, match=stale.serial), transaction.atomic():
        collector.delete()
    assert _listed_in_fresh_crl(our_ca, stale.serial)


@pytest.mark.parametrize("state", REFUSED)
def test_queryset_delete_with_a_revoked_or_held_row_deletes_nothing(our_ca, alice, state):
    active, refused = _active(alice, our_ca), REFUSED[state](alice, our_ca)
    with pytest.raises(ProtectedError, match=refused.serial):
        Certificate.objects.filter(pk__in=[active.pk, refused.pk]).delete()
    # One delete, one transaction: the active row is not deleted either.
    assert set(Certificate.objects.values_list("pk", flat=True)) >= {active.pk, refused.pk}
    assert _listed_in_fresh_crl(our_ca, refused.serial)


def test_deleting_every_certificate_through_the_manager_is_refused(our_ca, alice):
    refused = _revoked(alice, our_ca)
    with pytest.raises(ProtectedError):
        Certificate.objects.all().delete()
    assert _listed_in_fresh_crl(our_ca, refused.serial)


def test_a_delete_that_bypasses_the_queryset_is_still_refused_by_the_receiver(our_ca, alice):
    refused = _revoked(alice, our_ca)
    collector = Collector(using="default")  # what cascades from another model's delete go through
    collector.collect([refused])
    with pytest.raises(ProtectedError, match=refused.serial), transaction.atomic():
        collector.delete()
    assert _listed_in_fresh_crl(our_ca, refused.serial)


def test_deleting_the_issuing_ca_is_refused_while_it_has_certificates(our_ca, alice):
    refused = _revoked(alice, our_ca)
    with pytest.raises(ProtectedError):
        our_ca.delete()
    assert _listed_in_fresh_crl(our_ca, refused.serial)


@pytest.mark.parametrize("state", REFUSED)
def test_deleting_the_account_keeps_its_revoked_or_held_certificate_in_the_crl(our_ca, alice, state):
    refused = REFUSED[state](alice, our_ca)
    alice.delete()
    refused.refresh_from_db()
    assert refused.account is None and refused.status != Certificate.Status.ACTIVE
    assert _listed_in_fresh_crl(our_ca, refused.serial)


def test_a_revoked_certificate_cannot_be_saved_back_to_active(our_ca, alice):
    row = _revoked(alice, our_ca)
    row.status = Certificate.Status.ACTIVE
    with pytest.raises(ProtectedError, match="revocation cannot be undone"):
        row.save()
    row.refresh_from_db()
    assert row.status == Certificate.Status.REVOKED
    assert _listed_in_fresh_crl(our_ca, row.serial)


def test_a_revoked_certificate_cannot_be_updated_back_to_active_through_the_queryset(our_ca, alice):
    active, revoked = _active(alice, our_ca), _revoked(alice, our_ca)
    for rows in (Certificate.objects.filter(pk=revoked.pk), Certificate.objects.all()):
        with pytest.raises(ProtectedError, match="revocation cannot be undone"):
            rows.update(status=Certificate.Status.ACTIVE)
    revoked.status = Certificate.Status.ACTIVE
    # bulk_update runs its updates in a transaction of its own: the refusal rolls that back.
    with pytest.raises(ProtectedError, match="revocation cannot be undone"), transaction.atomic():
        Certificate.objects.bulk_update([revoked], ["status"])
    assert Certificate.objects.get(pk=revoked.pk).status == Certificate.Status.REVOKED
    assert _listed_in_fresh_crl(our_ca, revoked.serial)
    # Active and held rows are updated as before.
    assert Certificate.objects.filter(pk=active.pk).update(status=Certificate.Status.ON_HOLD) == 1


def test_a_held_certificate_is_released_by_a_save_and_leaves_the_crl(our_ca, alice):
    row = services.release(_held(alice, our_ca))
    assert row.status == Certificate.Status.ACTIVE
    assert not _listed_in_fresh_crl(our_ca, row.serial)
    row.delete()  # released: an ordinary active row again


# --- the admin -------------------------------------------------------------------------------------------


def test_admin_change_view_of_an_active_certificate_offers_delete(staff_client, our_ca, alice):
    row = _active(alice, our_ca)
    delete_url = reverse("admin:certauth_certificate_delete", args=[row.pk])
    page = staff_client.get(reverse("admin:certauth_certificate_change", args=[row.pk]))
    assert page.status_code == 200 and delete_url.encode() in page.content
    assert staff_client.post(delete_url, {"post": "yes"}).status_code == 302
    assert not Certificate.objects.filter(pk=row.pk).exists()


@pytest.mark.parametrize("state", REFUSED)
def test_admin_change_view_of_a_revoked_or_held_certificate_has_no_delete(staff_client, our_ca, alice, state):
    row = REFUSED[state](alice, our_ca)
    delete_url = reverse("admin:certauth_certificate_delete", args=[row.pk])
    page = staff_client.get(reverse("admin:certauth_certificate_change", args=[row.pk]))
    assert page.status_code == 200 and delete_url.encode() not in page.content
    assert staff_client.get(delete_url).status_code == 403
    assert staff_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert Certificate.objects.filter(pk=row.pk).exists()
    assert _listed_in_fresh_crl(our_ca, row.serial)


def test_admin_bulk_delete_of_active_certificates_deletes_them(staff_client, our_ca, alice):
    rows = [_active(alice, our_ca), _active(alice, our_ca)]
    done = staff_client.post(
        reverse(CHANGELIST),
        {"action": "delete_selected", ACTION_CHECKBOX_NAME: [r.pk for r in rows], "post": "yes"},
    )
    assert done.status_code == 302
    assert not Certificate.objects.filter(pk__in=[r.pk for r in rows]).exists()


@pytest.mark.parametrize("state", REFUSED)
def test_admin_bulk_delete_with_a_revoked_or_held_certificate_deletes_nothing(
    staff_client, our_ca, alice, state
):
    active, refused = _active(alice, our_ca), REFUSED[state](alice, our_ca)
    selected = {"action": "delete_selected", ACTION_CHECKBOX_NAME: [active.pk, refused.pk]}
    confirm = staff_client.post(reverse(CHANGELIST), selected)
    assert confirm.status_code == 200
    assert b"Cannot delete" in confirm.content and b"cannot be deleted" in confirm.content
    done = staff_client.post(reverse(CHANGELIST), {**selected, "post": "yes"})
    assert done.status_code == 200 and b"Cannot delete" in done.content
    assert Certificate.objects.filter(pk__in=[active.pk, refused.pk]).count() == 2
    assert _listed_in_fresh_crl(our_ca, refused.serial)
