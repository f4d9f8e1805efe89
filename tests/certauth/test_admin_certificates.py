"""The operator's certificate work in the admin: issue (.p12 / PEM), sign a CSR, import, revoke, hold, CRL."""

from __future__ import annotations

import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse

from accounts.models import Account, Domain
from certauth import pki, services
from certauth.models import Certificate, CertificateAuthority

pytestmark = pytest.mark.django_db


@pytest.fixture
def our_ca() -> CertificateAuthority:
    return services.create_ca("Test CA")


@pytest.fixture
def alice() -> Account:
    domain = Domain.objects.create(name="localhost")
    return Account.objects.create(localpart="alice", domain=domain)


def _issue(staff_client, account: Account, **overrides):
    form = {
        "key_type": "ec-p256",
        "days": "30",
        "common_name": "",
        "output": "p12",
        "password": "s3cret-p12",
        "password_again": "s3cret-p12",
        "ca": "",
    }
    form.update(overrides)
    return staff_client.post(reverse("admin:accounts_account_issue", args=[account.pk]), form)


def _issue_and_download(staff_client, account: Account, **overrides):
    """Issue in the admin, follow the redirect to the new certificate's page, take its one-time download."""
    response = _issue(staff_client, account, **overrides)
    assert response.status_code == 302, response.content[:500]
    row = Certificate.objects.filter(account=account).latest("created_at")
    assert response["Location"] == reverse("admin:certauth_certificate_change", args=[row.pk])
    page = staff_client.get(response["Location"])
    match = re.search(rb'href="([^"]+/download/[^"]+/)"', page.content)
    assert match, "the certificate page offers no download"
    return staff_client.get(match.group(1).decode())


def test_issue_through_admin_returns_p12_with_the_accounts_xmppaddr(staff_client, our_ca, alice):
    response = _issue_and_download(staff_client, alice)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-pkcs12"
    key, cert, extra = pki.load_pkcs12(response.content, b"s3cret-p12")
    assert pki.xmppaddrs_of(cert) == ["alice@localhost"]
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert [c.subject for c in extra] == [services.ca_certificate(our_ca).subject]
    row = Certificate.objects.get(fingerprint_sha256=pki.fingerprint_sha256(cert))
    assert row.account == alice and row.status == Certificate.Status.ACTIVE
    assert row.source == Certificate.Source.ISSUED


def test_issued_p12_refuses_another_password(staff_client, our_ca, alice):
    response = _issue_and_download(staff_client, alice)
    with pytest.raises(ValueError):
        pki.load_pkcs12(response.content, b"not-the-password")


def test_issue_as_pem_gives_certificate_and_encrypted_key(staff_client, our_ca, alice):
    response = _issue_and_download(
        staff_client, alice, output="pem", key_type="rsa-2048", common_name="Alice"
    )
    assert response.status_code == 200
    certs = pki.load_certificates(response.content)
    assert pki.xmppaddrs_of(certs[0]) == ["alice@localhost"]
    assert pki.cert_facts(certs[0]).common_name == "Alice"
    assert b"BEGIN ENCRYPTED PRIVATE KEY" in response.content
    key = serialization.load_pem_private_key(
        response.content[response.content.index(b"-----BEGIN ENCRYPTED") :], password=b"s3cret-p12"
    )
    assert key.public_key().public_numbers() == certs[0].public_key().public_numbers()


def test_issue_form_refuses_mismatched_passwords(staff_client, our_ca, alice):
    response = _issue(staff_client, alice, password_again="other")
    assert response.status_code == 200
    assert b"The two passwords differ" in response.content
    assert not Certificate.objects.filter(account=alice).exists()


def test_issue_page_needs_a_staff_login(client, our_ca, alice):
    response = _issue(client, alice)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert not Certificate.objects.exists()


def test_sign_csr_uses_the_accounts_jid_not_the_csrs(staff_client, our_ca, alice):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "mallory")]))
        .add_extension(x509.SubjectAlternativeName([pki.xmppaddr_other_name("admin@localhost")]), False)
        .sign(key, hashes.SHA256())
    )
    pem = csr.public_bytes(serialization.Encoding.PEM).decode()
    response = staff_client.post(
        reverse("admin:accounts_account_sign_csr", args=[alice.pk]), {"csr": pem, "days": "30", "ca": ""}
    )
    assert response.status_code == 200
    cert = pki.load_certificate(response.content)
    assert pki.xmppaddrs_of(cert) == ["alice@localhost"]
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()


def test_sign_csr_refuses_garbage(staff_client, our_ca, alice):
    response = staff_client.post(
        reverse("admin:accounts_account_sign_csr", args=[alice.pk]),
        {"csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", "days": "30", "ca": ""},
    )
    assert response.status_code == 200
    assert b"not a PEM certificate signing request" in response.content


def _crl_from_server(client, ca: CertificateAuthority) -> x509.CertificateRevocationList:
    response = client.get(reverse("certauth:crl", args=[ca.pk]))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pkix-crl"
    return pki.load_crl(response.content)


def test_revoke_in_admin_lists_serial_in_served_crl_signed_by_the_ca(staff_client, client, our_ca, alice):
    issued = services.issue_for_account(alice, days=30)
    assert issued.row.serial not in {
        f"{e.serial:x}" for e in pki.revoked_entries(_crl_from_server(client, our_ca))
    }

    changelist = reverse("admin:certauth_certificate_changelist")
    confirm = staff_client.post(
        changelist, {"action": "revoke_action", ACTION_CHECKBOX_NAME: [issued.row.pk]}
    )
    assert confirm.status_code == 200 and b"Revoke certificates" in confirm.content
    done = staff_client.post(
        changelist,
        {
            "action": "revoke_action",
            ACTION_CHECKBOX_NAME: [issued.row.pk],
            "apply": "1",
            "reason": "key_compromise",
        },
    )
    assert done.status_code == 302

    issued.row.refresh_from_db()
    assert issued.row.status == Certificate.Status.REVOKED
    assert issued.row.revocation_reason == "key_compromise"
    crl = _crl_from_server(client, our_ca)
    assert pki.crl_signed_by(crl, services.ca_certificate(our_ca))
    entries = {f"{e.serial:x}": e for e in pki.revoked_entries(crl)}
    assert entries[issued.row.serial].reason == "key_compromise"


def test_issued_certificate_names_the_served_crl_url(settings, client, our_ca, alice):
    settings.XMPPAUTH_PUBLIC_URL = "https://xmpp.example.net:5443"
    issued = services.issue_for_account(alice, days=30)
    url = f"https://xmpp.example.net:5443/crl/{our_ca.pk}.crl"
    assert pki.crl_distribution_urls(issued.certificate) == [url]
    assert client.get(url.removeprefix("https://xmpp.example.net:5443")).status_code == 200


def test_hold_then_release_moves_the_serial_in_and_out_of_the_crl(staff_client, client, our_ca, alice):
    issued = services.issue_for_account(alice, days=30)
    changelist = reverse("admin:certauth_certificate_changelist")
    staff_client.post(changelist, {"action": "hold_action", ACTION_CHECKBOX_NAME: [issued.row.pk]})
    entries = {f"{e.serial:x}": e for e in pki.revoked_entries(_crl_from_server(client, our_ca))}
    assert entries[issued.row.serial].reason == "certificate_hold"
    staff_client.post(changelist, {"action": "release_action", ACTION_CHECKBOX_NAME: [issued.row.pk]})
    issued.row.refresh_from_db()
    assert issued.row.status == Certificate.Status.ACTIVE
    assert issued.row.serial not in {
        f"{e.serial:x}" for e in pki.revoked_entries(_crl_from_server(client, our_ca))
    }


def test_crl_of_unknown_ca_is_404(client):
    assert client.get(reverse("certauth:crl", args=[999])).status_code == 404


def test_ca_private_key_in_database_is_not_plain_pem(our_ca):
    stored = bytes(CertificateAuthority.objects.get(pk=our_ca.pk).encrypted_private_key)
    assert b"-----BEGIN" not in stored
    assert b"PRIVATE KEY" not in stored
    with pytest.raises(ValueError):
        serialization.load_der_private_key(stored, password=None)
    key = services.ca_private_key(our_ca)
    assert key.public_key().public_numbers() == services.ca_certificate(our_ca).public_key().public_numbers()


def test_ca_key_does_not_decrypt_under_another_key_encryption_key(settings, our_ca):
    settings.KEY_ENCRYPTION_KEY = "some-other-secret"
    with pytest.raises(pki.KeyDecryptionError):
        services.ca_private_key(our_ca)


def test_import_ca_from_pem_in_admin(staff_client):
    from tests.certs import make_ca

    external = make_ca("External CA")
    response = staff_client.post(
        reverse("admin:certauth_certificateauthority_import"),
        {"pem": external.pem.decode(), "name": "", "trusted_for_client_auth": "on"},
    )
    assert response.status_code == 302
    ca = CertificateAuthority.objects.get(name="External CA")
    assert ca.trusted_for_client_auth and not ca.is_ours


def test_import_ca_refuses_a_leaf_certificate(staff_client):
    from tests.certs import make_ca, make_client

    leaf = make_client(make_ca("External CA"), jids=["x@localhost"])
    response = staff_client.post(
        reverse("admin:certauth_certificateauthority_import"), {"pem": leaf.pem.decode(), "name": ""}
    )
    assert b"not a CA" in response.content
    assert not CertificateAuthority.objects.exists()


def test_import_certificate_in_admin_links_account_and_issuer(staff_client, alice):
    from tests.certs import make_ca, make_client

    external = make_ca("External CA")
    services.import_ca(external.pem)
    leaf = make_client(external, jids=["alice@localhost"])
    response = staff_client.post(
        reverse("admin:certauth_certificate_import"),
        {"pem": leaf.pem.decode(), "account_jid": "alice@localhost"},
    )
    assert response.status_code == 302
    row = Certificate.objects.get()
    assert row.account == alice and row.issuer.name == "External CA"
    assert row.source == Certificate.Source.IMPORTED and row.xmpp_addrs == ["alice@localhost"]


@pytest.mark.parametrize(
    "url_name",
    [
        "admin:accounts_account_changelist",
        "admin:accounts_domain_changelist",
        "admin:certauth_certificate_changelist",
        "admin:certauth_certificateauthority_changelist",
        "admin:certauth_crlsource_changelist",
        "admin:certauth_authevent_changelist",
    ],
)
def test_admin_lists_render_with_search_and_filters(staff_client, our_ca, alice, url_name):
    services.issue_for_account(alice, days=30)
    assert staff_client.get(reverse(url_name), {"q": "alice"}).status_code == 200


def test_sign_an_uploaded_csr_file(staff_client, our_ca, alice):
    from django.core.files.uploadedfile import SimpleUploadedFile

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "alice")]))
        .sign(key, hashes.SHA256())
    )
    upload = SimpleUploadedFile("alice.csr", csr.public_bytes(serialization.Encoding.PEM))
    response = staff_client.post(
        reverse("admin:accounts_account_sign_csr", args=[alice.pk]),
        {"csr_file": upload, "csr": "", "days": "30", "ca": ""},
    )
    assert response.status_code == 200
    assert pki.xmppaddrs_of(pki.load_certificate(response.content)) == ["alice@localhost"]


def test_issue_form_refuses_a_password_shorter_than_ten_characters(staff_client, our_ca, alice):
    response = _issue(staff_client, alice, password="123456789", password_again="123456789")
    assert response.status_code == 200
    assert b"at least 10 characters" in response.content
    assert not Certificate.objects.filter(account=alice).exists()
