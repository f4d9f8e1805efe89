"""The admin's side of ``selfsigned_peer`` pinning: pin by upload, pasted PEM or fingerprint (validated), see
how each pin came (first login: when and from where), clear them; and the login that follows each."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.admin.utils import display_for_field
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from accounts.models import Account, Domain
from certauth.authenticator import CertificateAuthenticator
from certauth.models import SelfSignedPin
from tests.certs import make_ca, make_client, make_self_signed
from xmppauth.config import AuthConfig, Config, TlsOptions, XmppauthOptions

pytestmark = pytest.mark.django_db

CAROL = "carol@localhost"


@pytest.fixture
def carol() -> Account:
    return Account.objects.create(localpart="carol", domain=Domain.objects.create(name="localhost"))


def login(issued, peer: str = "127.0.0.1:40000"):
    config = Config(
        hosts=("localhost",),
        auth=AuthConfig(methods=("pki",), sasl_mechanisms=("external",)),
        options=XmppauthOptions(crl_grace_seconds=3600),
    )
    auth = CertificateAuthenticator(config, TlsOptions(verify_mode="selfsigned_peer"), "tls", peer)
    check = auth.check_certificate([issued.der])
    assert check.verified, check.reason
    return auth.authenticate_external(check.facts, None, "localhost")


def pin_url(account: Account) -> str:
    return reverse("admin:accounts_account_pin", args=[account.pk])


def pinned(account: Account) -> set[str]:
    return set(account.selfsigned_pins.values_list("fingerprint_sha256", flat=True))


def test_pin_by_uploaded_certificate_then_it_logs_in_and_another_does_not(staff_client, carol):
    phone, stranger = make_self_signed(jids=[CAROL]), make_self_signed(jids=[CAROL])
    upload = SimpleUploadedFile("phone.crt", phone.pem, content_type="application/x-pem-file")
    response = staff_client.post(pin_url(carol), {"certificate_file": upload, "pem": "", "fingerprint": ""})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert response["Location"] == reverse("admin:accounts_account_change", args=[carol.pk])
    pin = SelfSignedPin.objects.get(account=carol)
    assert pin.fingerprint_sha256 == phone.facts.fingerprint_sha256
    assert pin.origin == SelfSignedPin.Origin.ADMIN and pin.subject == phone.facts.subject
    assert login(phone).jid == CAROL
    refused = login(stranger)
    assert refused.condition == "not-authorized" and f"is not pinned to {CAROL}" in refused.reason


def test_pin_by_uploaded_der_certificate(staff_client, carol):
    device = make_self_signed(jids=[CAROL])
    upload = SimpleUploadedFile("device.der", device.der)
    response = staff_client.post(pin_url(carol), {"certificate_file": upload})
    assert response.status_code == 302
    assert pinned(carol) == {device.facts.fingerprint_sha256}


def test_pin_by_pasted_pem(staff_client, carol):
    device = make_self_signed(jids=[CAROL])
    response = staff_client.post(pin_url(carol), {"pem": device.pem.decode()})
    assert response.status_code == 302
    assert pinned(carol) == {device.facts.fingerprint_sha256}


def test_pin_by_fingerprint_with_colons(staff_client, carol):
    laptop = make_self_signed(jids=[CAROL])
    hexed = laptop.facts.fingerprint_sha256.upper()
    colons = ":".join(hexed[i : i + 2] for i in range(0, 64, 2))
    response = staff_client.post(pin_url(carol), {"fingerprint": colons})
    assert response.status_code == 302
    assert pinned(carol) == {laptop.facts.fingerprint_sha256}
    assert SelfSignedPin.objects.get().subject == ""
    assert login(laptop).jid == CAROL


@pytest.mark.parametrize("fingerprint", ["abc", "z" * 64, "a" * 63, "sha256=" + "a" * 64])
def test_bad_fingerprint_is_a_form_error(staff_client, carol, fingerprint):
    response = staff_client.post(pin_url(carol), {"fingerprint": fingerprint})
    assert response.status_code == 200
    assert response.context["form"].errors == {
        "fingerprint": ["a SHA-256 fingerprint is 64 hexadecimal digits (colons and spaces are ignored)"]
    }
    assert not SelfSignedPin.objects.exists()


def test_nothing_given_or_two_things_given_is_a_form_error(staff_client, carol):
    device = make_self_signed(jids=[CAROL])
    empty = {"pem": "", "fingerprint": ""}  # what the browser sends for an untouched form
    for form in (empty, {"pem": device.pem.decode(), "fingerprint": device.facts.fingerprint_sha256}):
        response = staff_client.post(pin_url(carol), form)
        assert response.status_code == 200
        assert response.context["form"].non_field_errors() == [
            "Give one of: a certificate file, a pasted one, a fingerprint."
        ]
    assert not SelfSignedPin.objects.exists()


def test_not_a_certificate_is_a_form_error(staff_client, carol):
    response = staff_client.post(pin_url(carol), {"pem": "-----BEGIN CERTIFICATE-----\nnope\n"})
    assert response.status_code == 200
    assert response.context["form"].non_field_errors()[0].startswith("Not a single certificate:")
    assert not SelfSignedPin.objects.exists()


def test_ca_issued_certificate_cannot_be_pinned(staff_client, carol):
    issued = make_client(make_ca("Some CA"), jids=[CAROL])
    response = staff_client.post(pin_url(carol), {"pem": issued.pem.decode()})
    assert response.status_code == 200
    assert "not a self-signed certificate" in response.context["form"].non_field_errors()[0]
    assert not SelfSignedPin.objects.exists()


def test_certificate_naming_another_account_is_a_form_error(staff_client, carol):
    dave_s = make_self_signed(jids=["dave@localhost"])
    response = staff_client.post(pin_url(carol), {"pem": dave_s.pem.decode()})
    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == [
        "the certificate's xmppAddr names dave@localhost, not carol@localhost"
    ]
    assert not SelfSignedPin.objects.exists()


def test_certificate_pinned_to_another_account_is_a_form_error(staff_client, carol):
    device = make_self_signed(jids=[CAROL])
    assert login(device).jid == CAROL  # pinned to carol at first login
    dave = Account.objects.create(localpart="dave", domain=carol.domain)
    response = staff_client.post(pin_url(dave), {"fingerprint": device.facts.fingerprint_sha256})
    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == [
        "this certificate is already pinned to another account (carol@localhost)"
    ]
    assert not dave.selfsigned_pins.exists()


def test_account_page_shows_a_first_login_pin_with_when_and_from_where(staff_client, carol):
    device = make_self_signed(jids=[CAROL])
    assert login(device, peer="198.51.100.7:50123").jid == CAROL
    when = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)  # unlike the account's own created_at on the same page
    SelfSignedPin.objects.update(created_at=when)
    page = staff_client.get(reverse("admin:accounts_account_change", args=[carol.pk])).content.decode()
    assert device.facts.fingerprint_sha256 in page
    assert "pinned at first login (trust on first use)" in page
    assert "198.51.100.7:50123" in page
    assert str(display_for_field(when, SelfSignedPin._meta.get_field("created_at"), "-")) in page
    assert pin_url(carol) in page and reverse("admin:accounts_account_clear_pins", args=[carol.pk]) in page


def test_account_page_without_pins_shows_none(staff_client, carol):
    page = staff_client.get(reverse("admin:accounts_account_change", args=[carol.pk])).content.decode()
    assert "trust on first use" not in page


def test_clear_pins_asks_then_clears_and_the_next_login_pins_again(staff_client, carol):
    first, second = make_self_signed(jids=[CAROL]), make_self_signed(jids=[CAROL])
    assert login(first).jid == CAROL
    assert login(second).condition == "not-authorized"
    url = reverse("admin:accounts_account_clear_pins", args=[carol.pk])
    confirm = staff_client.get(url)
    assert confirm.status_code == 200 and "1 pin(s)" in confirm.content.decode()
    assert pinned(carol) == {first.facts.fingerprint_sha256}  # a GET changes nothing
    response = staff_client.post(url)
    assert response.status_code == 302
    assert not carol.selfsigned_pins.exists()
    assert login(second).jid == CAROL
    assert pinned(carol) == {second.facts.fingerprint_sha256}


def test_one_pin_cleared_through_the_inline_delete_box(staff_client, carol):
    phone, laptop = make_self_signed(jids=[CAROL]), make_self_signed(jids=[CAROL])
    keep = SelfSignedPin.objects.create(
        account=carol, fingerprint_sha256=phone.facts.fingerprint_sha256, origin="admin"
    )
    drop = SelfSignedPin.objects.create(
        account=carol, fingerprint_sha256=laptop.facts.fingerprint_sha256, origin="admin"
    )
    prefix = "selfsigned_pins"
    form = {
        "localpart": "carol",
        "domain": str(carol.domain.pk),
        "active": "on",
        "created_by": "admin",
        f"{prefix}-TOTAL_FORMS": "2",
        f"{prefix}-INITIAL_FORMS": "2",
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
        f"{prefix}-0-id": str(keep.pk),
        f"{prefix}-0-account": str(carol.pk),
        f"{prefix}-1-id": str(drop.pk),
        f"{prefix}-1-account": str(carol.pk),
        f"{prefix}-1-DELETE": "on",
    }
    response = staff_client.post(reverse("admin:accounts_account_change", args=[carol.pk]), form)
    assert response.status_code == 302, response.content.decode()[:3000]
    assert pinned(carol) == {phone.facts.fingerprint_sha256}
    assert login(laptop).condition == "not-authorized"  # one pin left: no trust on first use
    assert login(phone).jid == CAROL


def test_pin_pages_need_change_permission(client, django_user_model, carol):
    user = django_user_model.objects.create_user(username="viewer", password="pw-viewer-123", is_staff=True)
    client.force_login(user)
    device = make_self_signed(jids=[CAROL])
    response = client.post(pin_url(carol), {"fingerprint": device.facts.fingerprint_sha256})
    assert response.status_code == 403
    response = client.post(reverse("admin:accounts_account_clear_pins", args=[carol.pk]))
    assert response.status_code == 403
    assert not SelfSignedPin.objects.exists()
