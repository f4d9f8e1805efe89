"""Issue 18 point 7: the "connect a client" page of an account, and the CA it offers for download."""

from __future__ import annotations

import tomllib

import pytest
from django.test import Client
from django.urls import reverse

from certauth import bootstrap, pki
from tests.certs import make_ca, make_client
from xmppauth.config import parse_config

pytestmark = pytest.mark.django_db

CONFIG = """
[general]
  hosts = ["localhost"]
[[listen.c2s]]
  port = 15222
  tls.verify_mode = "peer"
[[listen.c2s]]
  port = 15223
  tls.mode = "tls"
  tls.verify_mode = "selfsigned_peer"
[[listen.http]]
  port = 15443
  tls.verify_mode = "none"
  [[listen.http.handlers.mod_websockets]]
    path = "/ws-xmpp"
  [[listen.http.handlers.mod_bosh]]
    path = "/http-bind"
"""


@pytest.fixture
def config(settings, tmp_path):
    settings.XMPP = parse_config(tomllib.loads(CONFIG), str(tmp_path / "x.toml"))
    return settings.XMPP


def _page(client, account) -> str:
    response = client.get(reverse("admin:accounts_account_connect", args=[account.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_connect_page_lists_the_jid_listeners_and_client_settings(staff_client, config, our_ca, alice):
    text = _page(staff_client, alice)
    assert "alice@localhost" in text
    assert "localhost:15222" in text and "STARTTLS (RFC 6120 §5)" in text
    assert "localhost:15223" in text and "direct TLS (XEP-0368)" in text
    assert "self-signed ones pinned to their account" in text
    assert "wss://localhost:15443/ws-xmpp" in text and "https://localhost:15443/http-bind" in text
    assert "no client certificate asked for" in text
    assert "openssl pkcs12 -in 'alice@localhost.p12' -clcerts -nokeys" in text
    for client_name in ("slixmpp", "Gajim", "poezio", "Conversations", "Strophe.js"):
        assert client_name in text
    assert 'xmpp.connect("localhost", 15222)' in text
    assert reverse("admin:accounts_account_issue", args=[alice.pk]) in text  # no certificate yet


def test_connect_ca_download_is_the_bootstrap_ca_pem(settings, staff_client, config, our_ca, alice):
    directory = bootstrap.pki_dir()
    directory.mkdir(parents=True)
    (directory / "ca.pem").write_text(our_ca.certificate_pem)
    response = staff_client.get(reverse("admin:accounts_account_connect_ca", args=[alice.pk]))
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="xmppauth-ca.pem"'
    assert pki.load_certificates(response.content)[0].subject.rfc4514_string() == our_ca.subject


def test_connect_ca_download_without_a_written_file_gives_our_cas(staff_client, config, our_ca, alice):
    response = staff_client.get(reverse("admin:accounts_account_connect_ca", args=[alice.pk]))
    assert response.content.decode() == our_ca.certificate_pem


def test_connect_ca_download_without_any_ca_is_404(staff_client, config, alice):
    assert staff_client.get(reverse("admin:accounts_account_connect_ca", args=[alice.pk])).status_code == 404


def test_connect_page_names_a_foreign_server_certificate_issuer(
    settings, staff_client, tmp_path, our_ca, alice
):
    other = make_ca("Public CA")
    server = make_client(other, jids=(), common_name="localhost")
    certfile = tmp_path / "server.pem"
    certfile.write_bytes(server.pem)
    text = CONFIG.replace(
        "  port = 15222\n",
        f'  port = 15222\n  tls.certfile = "{certfile}"\n  tls.keyfile = "{certfile}"\n',
        1,
    )
    settings.XMPP = parse_config(tomllib.loads(text), str(tmp_path / "x.toml"))
    assert "CN=Public CA" in _page(staff_client, alice)


def test_connect_page_sends_non_staff_to_the_login(django_user_model, config, alice):
    user = Client()
    user.force_login(django_user_model.objects.create_user(username="u", password="pw-u"))
    for outsider in (Client(), user):
        for name in ("admin:accounts_account_connect", "admin:accounts_account_connect_ca"):
            response = outsider.get(reverse(name, args=[alice.pk]))
            assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_connect_page_needs_view_permission_on_accounts(django_user_model, config, alice):
    staff = Client()
    staff.force_login(django_user_model.objects.create_user(username="s", password="pw-s", is_staff=True))
    assert staff.get(reverse("admin:accounts_account_connect", args=[alice.pk])).status_code == 403
    assert staff.get(reverse("admin:accounts_account_connect_ca", args=[alice.pk])).status_code == 403


def test_account_page_links_to_the_connect_page(staff_client, config, alice):
    page = staff_client.get(reverse("admin:accounts_account_change", args=[alice.pk])).content.decode()
    assert reverse("admin:accounts_account_connect", args=[alice.pk]) in page
