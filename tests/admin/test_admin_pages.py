"""Issue 18 point 2: admin pages that follow the operator's work.

The account page lists the account's certificates (with revoke / hold / release), live sessions (with "end
session") and last auth events; a certificate's page has revoke (with reason), hold and release as buttons;
issuing redirects to the new certificate's page, which offers the file once. Every button is a POST with CSRF,
for staff with the right permission only; anyone else gets the login redirect or 403 and nothing changes.
"""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from certauth import pki, services
from certauth.models import AuthEvent, Certificate
from transport.sessions.models import LiveSession, SessionTermination

pytestmark = pytest.mark.django_db

ISSUE_FORM = {
    "key_type": "ec-p256",
    "days": "30",
    "common_name": "",
    "output": "p12",
    "password": "s3cret-p12-pass",
    "password_again": "s3cret-p12-pass",
    "ca": "",
}


def _status_url(operation: str, row: Certificate) -> str:
    return reverse(f"admin:certauth_certificate_{operation}", args=[row.pk])


def _page(row: Certificate) -> str:
    return reverse("admin:certauth_certificate_change", args=[row.pk])


def _download_link(content: bytes) -> str | None:
    match = re.search(rb'href="([^"]+/download/[^"]+/)"', content)
    return match.group(1).decode() if match else None


# --- issuing -------------------------------------------------------------------------------------------


def test_issued_certificate_has_subject_cn_the_jid_and_the_xmppaddr(our_ca, alice):
    issued = services.issue_for_account(alice)
    facts = pki.cert_facts(issued.certificate)
    assert facts.common_name == "alice@localhost"
    assert facts.xmpp_addrs == ("alice@localhost",) or list(facts.xmpp_addrs) == ["alice@localhost"]
    assert issued.row.subject == "CN=alice@localhost"


def test_issued_certificate_keeps_a_chosen_common_name(our_ca, alice):
    issued = services.issue_for_account(alice, common_name="Alice Liddell")
    assert pki.cert_facts(issued.certificate).common_name == "Alice Liddell"


def test_issue_redirects_to_the_certificate_with_a_message_and_no_password(staff_client, our_ca, alice):
    response = staff_client.post(reverse("admin:accounts_account_issue", args=[alice.pk]), ISSUE_FORM)
    row = Certificate.objects.get(account=alice)
    assert response.status_code == 302 and response["Location"] == _page(row)
    page = staff_client.get(response["Location"])
    assert page.status_code == 200
    text = page.content.decode()
    assert f"Issued certificate {row.serial} for alice@localhost" in text
    assert "s3cret-p12-pass" not in text
    assert _download_link(page.content) is not None


def test_issue_download_is_offered_once(staff_client, our_ca, alice):
    response = staff_client.post(reverse("admin:accounts_account_issue", args=[alice.pk]), ISSUE_FORM)
    link = _download_link(staff_client.get(response["Location"]).content)
    first = staff_client.get(link)
    assert first.status_code == 200 and first["Content-Type"] == "application/x-pkcs12"
    assert "no-store" in first["Cache-Control"]
    _, cert, _ = pki.load_pkcs12(first.content, b"s3cret-p12-pass")
    assert pki.xmppaddrs_of(cert) == ["alice@localhost"]
    again = staff_client.get(link)
    assert again.status_code == 302 and again["Location"] == response["Location"]
    assert _download_link(staff_client.get(response["Location"]).content) is None


def test_issue_download_is_not_offered_to_another_session(staff_client, django_user_model, our_ca, alice):
    response = staff_client.post(reverse("admin:accounts_account_issue", args=[alice.pk]), ISSUE_FORM)
    link = _download_link(staff_client.get(response["Location"]).content)
    other = Client()
    other.force_login(django_user_model.objects.create_superuser(username="other", password="pw-other"))
    stolen = other.get(link)
    assert stolen.status_code == 302 and not stolen.has_header("Content-Disposition")
    assert staff_client.get(link).status_code == 200  # still there for its own session


def test_issue_download_needs_a_staff_login(user_client, staff_client, our_ca, alice):
    response = staff_client.post(reverse("admin:accounts_account_issue", args=[alice.pk]), ISSUE_FORM)
    link = _download_link(staff_client.get(response["Location"]).content)
    for outsider in (Client(), user_client):
        refused = outsider.get(link)
        assert refused.status_code == 302 and "/admin/login/" in refused["Location"]


# --- the certificate's page ----------------------------------------------------------------------------


def test_certificate_page_shows_the_buttons_of_an_active_certificate(staff_client, issued):
    text = staff_client.get(_page(issued.row)).content.decode()
    assert f'action="{_status_url("revoke", issued.row)}"' in text
    assert f'action="{_status_url("hold", issued.row)}"' in text
    assert f'action="{_status_url("release", issued.row)}"' not in text
    assert "csrfmiddlewaretoken" in text
    assert "XMPP addresses (xmppAddr)" in text and "Xmpp addrs" not in text


def test_revoke_button_revokes_with_the_reason_and_ends_the_sessions(
    staff_client, issued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(_status_url("revoke", issued.row), {"reason": "key_compromise"})
    assert response.status_code == 302 and response["Location"] == _page(issued.row)
    issued.row.refresh_from_db()
    assert issued.row.status == Certificate.Status.REVOKED
    assert issued.row.revocation_reason == "key_compromise"
    command = SessionTermination.objects.get(fingerprint=issued.row.fingerprint_sha256)
    assert command.text == "certificate revoked (keyCompromise)"
    text = staff_client.get(_page(issued.row)).content.decode()
    assert "revoked" in text
    assert f'action="{_status_url("revoke", issued.row)}"' not in text
    assert "/delete/" not in text  # revoked rows keep our CRL's record: no delete link


def test_revoke_button_needs_a_reason(staff_client, issued):
    response = staff_client.post(_status_url("revoke", issued.row), {"reason": "certificate_hold"})
    assert response.status_code == 302
    issued.row.refresh_from_db()
    assert issued.row.status == Certificate.Status.ACTIVE


def test_hold_then_release_buttons(staff_client, issued):
    assert staff_client.post(_status_url("hold", issued.row)).status_code == 302
    issued.row.refresh_from_db()
    assert issued.row.status == Certificate.Status.ON_HOLD
    text = staff_client.get(_page(issued.row)).content.decode()
    assert f'action="{_status_url("release", issued.row)}"' in text
    assert staff_client.post(_status_url("release", issued.row)).status_code == 302
    issued.row.refresh_from_db()
    assert issued.row.status == Certificate.Status.ACTIVE


def test_release_of_an_active_certificate_is_refused_with_why(staff_client, issued):
    response = staff_client.post(_status_url("release", issued.row), follow=True)
    assert "is active, not on hold" in response.content.decode()
    issued.row.refresh_from_db()
    assert issued.row.status == Certificate.Status.ACTIVE


@pytest.mark.parametrize("operation", ["revoke", "hold", "release"])
def test_status_buttons_refuse_get(staff_client, issued, operation):
    assert staff_client.get(_status_url(operation, issued.row)).status_code == 405
    issued.row.refresh_from_db()
    assert issued.row.status == Certificate.Status.ACTIVE


@pytest.mark.parametrize("operation", ["revoke", "hold"])
def test_status_buttons_need_the_csrf_token(django_user_model, issued, operation):
    client = Client(enforce_csrf_checks=True)
    client.force_login(django_user_model.objects.create_superuser(username="op", password="pw-op"))
    response = client.post(_status_url(operation, issued.row), {"reason": "superseded"})
    assert response.status_code == 403
    issued.row.refresh_from_db()
    assert issued.row.status == Certificate.Status.ACTIVE


@pytest.mark.parametrize("operation", ["revoke", "hold"])
def test_status_buttons_send_non_staff_to_the_login(client, user_client, issued, operation):
    for outsider in (client, user_client):
        response = outsider.post(_status_url(operation, issued.row), {"reason": "superseded"})
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
    issued.row.refresh_from_db()
    assert issued.row.status == Certificate.Status.ACTIVE


@pytest.mark.parametrize("operation", ["revoke", "hold"])
def test_status_buttons_refuse_staff_without_change_permission(viewer_client, issued, operation):
    assert viewer_client.post(_status_url(operation, issued.row), {"reason": "superseded"}).status_code == 403
    issued.row.refresh_from_db()
    assert issued.row.status == Certificate.Status.ACTIVE
    text = viewer_client.get(_page(issued.row)).content.decode()
    assert f'action="{_status_url(operation, issued.row)}"' not in text


def test_next_outside_the_admin_is_ignored(staff_client, issued):
    response = staff_client.post(_status_url("hold", issued.row), {"next": "https://evil.example/admin/"})
    assert response["Location"] == _page(issued.row)


def test_bulk_delete_is_the_last_action(staff_client, issued):
    text = staff_client.get(reverse("admin:certauth_certificate_changelist")).content.decode()
    actions = re.findall(r'<option value="(\w+)"', text.split('name="action"', 1)[1].split("</select>", 1)[0])
    assert actions[-1] == "delete_selected"
    assert actions.index("revoke_action") < actions.index("delete_selected")


def test_certificate_list_names_issued_certificates_by_their_jid(staff_client, issued):
    text = staff_client.get(reverse("admin:certauth_certificate_changelist")).content.decode()
    assert f'<a href="{_page(issued.row)}">alice@localhost</a>' in text


# --- the account's page --------------------------------------------------------------------------------


def _account_page(client, account) -> str:
    response = client.get(reverse("admin:accounts_account_change", args=[account.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_account_page_lists_certificates_sessions_and_events(staff_client, alice, issued, live_session):
    AuthEvent.objects.create(
        transport="tls", peer="127.0.0.1:1", jid_granted="alice@localhost", outcome="success"
    )
    AuthEvent.objects.create(
        transport="tcp",
        peer="127.0.0.1:2",
        cert_fingerprint=issued.row.fingerprint_sha256,
        outcome="failure",
        condition="not-authorized",
        reason="certificate on hold",
    )
    AuthEvent.objects.create(transport="tcp", jid_granted="bob@localhost", outcome="success", reason="bob's")
    text = _account_page(staff_client, alice)
    assert 'id="panel-certificates"' in text and 'id="panel-sessions"' in text and 'id="panel-events"' in text
    assert issued.row.fingerprint_sha256[:20] in text
    assert f'action="{_status_url("revoke", issued.row)}"' in text
    assert (
        "phone" in text and reverse("admin:transport_livesession_end", args=[live_session.session_id]) in text
    )
    assert "certificate on hold" in text and "127.0.0.1:1" in text
    assert "bob&#x27;s" not in text


def test_account_page_shows_the_apps_sections_in_order(staff_client, alice, issued):
    """certauth and transport.sessions add their parts through accounts.admin.AccountSection: the panels
    keep their order, the list its columns and the issue action, the form its certificate buttons."""
    text = _account_page(staff_client, alice)
    places = [text.index(f'id="panel-{key}"') for key in ("certificates", "sessions", "events")]
    assert places == sorted(places)
    assert reverse("admin:accounts_account_issue", args=[alice.pk]) in text
    assert reverse("admin:accounts_account_pin", args=[alice.pk]) in text
    assert reverse("admin:accounts_account_password", args=[alice.pk]) in text
    listing = staff_client.get(reverse("admin:accounts_account_changelist")).content.decode().lower()
    assert "self-signed pins" in listing and 'value="issue_certificate_action"' in listing
    assert listing.index("self-signed pins") < listing.index("created at")


def test_an_account_section_key_registered_twice_is_refused():
    from django.core.exceptions import ImproperlyConfigured

    from accounts.admin import AccountSection, register_account_section

    class Again(AccountSection):
        key = "certificates"

    with pytest.raises(ImproperlyConfigured, match="'certificates'"):
        register_account_section(Again())


def test_account_page_without_certificates_or_sessions(staff_client, alice):
    text = _account_page(staff_client, alice)
    assert "No certificate yet." in text and "Not logged in." in text


def test_account_page_hides_buttons_from_a_viewer(viewer_client, alice, issued, live_session):
    text = _account_page(viewer_client, alice)
    assert issued.row.fingerprint_sha256[:20] in text
    assert f'action="{_status_url("revoke", issued.row)}"' not in text
    assert reverse("admin:transport_livesession_end", args=[live_session.session_id]) not in text


def test_account_page_buttons_come_back_to_the_account(staff_client, alice, issued):
    here = reverse("admin:accounts_account_change", args=[alice.pk])
    response = staff_client.post(_status_url("hold", issued.row), {"next": here})
    assert response["Location"] == here


def test_end_session_button_asks_the_holder_to_end_that_session(staff_client, alice, live_session):
    url = reverse("admin:transport_livesession_end", args=[live_session.session_id])
    here = reverse("admin:accounts_account_change", args=[alice.pk])
    response = staff_client.post(url, {"next": here})
    assert response.status_code == 302 and response["Location"] == here
    command = SessionTermination.objects.get()
    assert command.target == SessionTermination.Target.SESSION
    assert command.session_id == live_session.session_id
    assert command.condition == "reset" and command.text == "ended by the operator"


def test_end_session_refuses_get_non_staff_and_viewers(client, user_client, viewer_client, live_session):
    url = reverse("admin:transport_livesession_end", args=[live_session.session_id])
    assert viewer_client.get(url).status_code == 405
    for outsider in (client, user_client):
        response = outsider.post(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert viewer_client.post(url).status_code == 403
    assert not SessionTermination.objects.exists()
    assert LiveSession.objects.filter(pk=live_session.session_id).exists()


def test_end_session_needs_the_csrf_token(django_user_model, live_session):
    client = Client(enforce_csrf_checks=True)
    client.force_login(django_user_model.objects.create_superuser(username="op", password="pw-op"))
    url = reverse("admin:transport_livesession_end", args=[live_session.session_id])
    assert client.post(url).status_code == 403
    assert not SessionTermination.objects.exists()


def test_account_page_sends_non_staff_to_the_login(client, user_client, alice):
    for outsider in (client, user_client):
        response = outsider.get(reverse("admin:accounts_account_change", args=[alice.pk]))
        assert response.status_code == 302 and "/admin/login/" in response["Location"]


# --- the site's chrome ---------------------------------------------------------------------------------


def test_header_names_the_product_and_view_site_is_gone(staff_client):
    text = staff_client.get(reverse("admin:index")).content.decode()
    assert '<a href="/admin/">xmppauth</a>' in text
    assert "Django administration" not in text and "View site" not in text
    assert "CRL sources" in text and "Crl sources" not in text


def test_ca_page_speaks_in_human_labels(staff_client, our_ca):
    text = staff_client.get(reverse("admin:certauth_certificateauthority_change", args=[our_ca.pk])).content
    text = text.decode()
    assert "SHA-256 fingerprint" in text and "Certificate (PEM)" in text and "Valid until" in text
    assert "Certificate pem" not in text and "Fingerprint sha256" not in text
