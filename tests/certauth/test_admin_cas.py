"""The CA pages of the admin: config CAs read-only; every CA's revocation sources, CRL, nextUpdate, freshness.

Issue 11 points 1 and 4: a CA from ``tls.cacertfile`` is shown as such and cannot be edited or deleted here
(the file is the source of truth); a CA without any revocation source says so.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse

from certauth import services
from certauth.admin import NO_SOURCE, revocation_overview
from certauth.configcas import prepare, sync_config_cas
from certauth.models import CertificateAuthority, CrlSource
from tests.certauth.crlhelpers import add_ca_row, make_crl
from tests.certs import make_ca
from xmppauth.config import C2SListener, Config, TlsOptions, XmppauthOptions

pytestmark = pytest.mark.django_db

NOW = datetime.now(UTC)


def config_ca(tmp_path, name: str = "Config CA", *, with_crl: bool = False) -> CertificateAuthority:
    ca = make_ca(name)
    path = tmp_path / "ca.pem"
    path.write_bytes(ca.pem)
    crl_files: tuple[str, ...] = ()
    if with_crl:
        crl = tmp_path / "ca.crl"
        crl.write_bytes(make_crl(ca, [7], number=4, this_update=NOW - timedelta(hours=1)))
        crl_files = (str(crl),)
    config = Config(
        listen_c2s=(C2SListener(tls=TlsOptions(cacertfile=str(path), crl_files=crl_files)),),
        source="test.toml",
        options=XmppauthOptions(crl_grace_seconds=3600),
    )
    if with_crl:
        prepare(config)  # the CRL file is loaded as at start-up
    else:
        sync_config_cas(config)
    return CertificateAuthority.objects.get(name=name)


def page(staff_client, url: str) -> str:
    response = staff_client.get(url)
    assert response.status_code == 200
    return unescape(response.content.decode())


def test_a_config_ca_is_shown_read_only_and_marked_as_coming_from_the_config(staff_client, tmp_path):
    ca = config_ca(tmp_path)
    url = reverse("admin:certauth_certificateauthority_change", args=[ca.pk])
    html = page(staff_client, url)
    assert "tls.cacertfile (config)" in html
    assert f"comes from the config (tls.cacertfile: {tmp_path / 'ca.pem'})" in html
    assert 'name="_save"' not in html  # a view page, not a form
    assert 'name="name"' not in html

    response = staff_client.post(url, {"name": "renamed", "trusted_for_client_auth": ""})
    assert response.status_code == 403
    ca.refresh_from_db()
    assert (ca.name, ca.trusted_for_client_auth) == ("Config CA", True)


def test_a_config_ca_cannot_be_deleted_in_the_admin(staff_client, tmp_path):
    ca = config_ca(tmp_path)
    response = staff_client.post(
        reverse("admin:certauth_certificateauthority_delete", args=[ca.pk]), {"post": "yes"}
    )
    assert response.status_code == 403
    changelist = reverse("admin:certauth_certificateauthority_changelist")
    staff_client.post(changelist, {"action": "delete_selected", ACTION_CHECKBOX_NAME: [ca.pk], "post": "yes"})
    assert CertificateAuthority.objects.filter(pk=ca.pk).exists()


def test_an_imported_ca_stays_editable(staff_client):
    row = add_ca_row(make_ca("Imported CA"), "Imported CA")
    url = reverse("admin:certauth_certificateauthority_change", args=[row.pk])
    assert 'name="_save"' in page(staff_client, url)
    response = staff_client.post(url, {"name": "Renamed CA", "trusted_for_client_auth": "on"})
    assert response.status_code == 302
    row.refresh_from_db()
    assert row.name == "Renamed CA"


def test_the_list_shows_sources_crl_next_update_freshness_and_missing_sources(staff_client, tmp_path):
    with_crl = config_ca(tmp_path, "Covered CA", with_crl=True)
    add_ca_row(make_ca("Bare CA"), "Bare CA")
    services.create_ca("Our CA")
    html = page(staff_client, reverse("admin:certauth_certificateauthority_changelist"))
    source = CrlSource.objects.get(ca=with_crl)
    assert f"tls.crl_files: {source.location}" in html
    assert f"#4 of {source.this_update:%Y-%m-%d %H:%M}" in html
    assert f"{source.next_update:%Y-%m-%d %H:%M}" in html
    assert html.count(NO_SOURCE) == 2  # the Bare CA row: sources and freshness columns
    assert "ours: certificate status and our CRL" in html
    assert "tls.cacertfile (config)" in html and "imported in the admin" in html


def test_overview_of_a_ca_whose_only_crl_is_past_next_update_and_grace_is_stale(tmp_path):
    row = add_ca_row(make_ca("Stale CA"), "Stale CA")
    next_update = NOW - timedelta(days=2)
    CrlSource.objects.create(
        ca=row,
        kind=CrlSource.Kind.OPERATOR_URL,
        location="http://127.0.0.1:9/stale.crl",
        last_success_at=NOW - timedelta(days=9),
        this_update=NOW - timedelta(days=9),
        next_update=next_update,
        crl_number=2,
    )
    overview = revocation_overview(CertificateAuthority.objects.get(pk=row.pk), NOW)
    assert overview.freshness == (
        f"stale since {next_update:%Y-%m-%d %H:%M} (nextUpdate): http://127.0.0.1:9/stale.crl"
    )
    assert overview.next_update == next_update
    assert overview.crl_held.startswith("#2 of ")


def test_overview_of_a_fresh_crl_and_of_a_source_never_fetched(tmp_path):
    row = config_ca(tmp_path, "Covered CA", with_crl=True)
    assert revocation_overview(row, NOW).freshness == "fresh"
    CrlSource.objects.create(ca=row, kind=CrlSource.Kind.OPERATOR_URL, location="http://127.0.0.1:9/new.crl")
    row = CertificateAuthority.objects.get(pk=row.pk)
    assert revocation_overview(row, NOW).freshness == "no CRL yet: http://127.0.0.1:9/new.crl"


def test_overview_of_a_ca_without_source(tmp_path):
    row = config_ca(tmp_path, "Bare CA")
    overview = revocation_overview(row, NOW)
    assert (overview.sources, overview.crl_held, overview.next_update, overview.freshness) == (
        NO_SOURCE,
        "-",
        None,
        NO_SOURCE,
    )
