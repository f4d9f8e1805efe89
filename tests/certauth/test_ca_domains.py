"""Per-CA domains (issue 11 point 10): a CA limited to some hosted domains vouches for those only.

The rule (``certauth.trust.domain_refusal``, applied by ``CertificateAuthenticator.authenticate_external``):
once the identity rules have chosen a JID, its domain must be allowed by every CA on the verified path that
carries a limit: ``CertificateAuthority.allowed_domains`` of the anchor or of any CA between it and the leaf,
and the listener's ``tls.cacert_domains`` for the anchors of its ``tls.cacertfile``. Otherwise the login is
``not-authorized`` (RFC 6120 §6.5.10) with the CA and the domain in the AuthEvent and the log.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import Account, Domain
from certauth.authenticator import CertificateAuthenticator
from certauth.configcas import sync_config_cas
from certauth.models import AuthEvent, CertificateAuthority
from tests.certauth.crlhelpers import add_ca_row
from tests.certs import Issued, make_ca, make_client, make_intermediate, make_root, make_self_signed
from xmppauth.config import AuthConfig, C2SListener, Config, TlsOptions, XmppauthOptions

pytestmark = pytest.mark.django_db

HOSTS = ("a.example", "b.example")


def authenticator(
    *,
    cacertfile=None,
    cacert_domains: tuple[str, ...] = (),
    verify_mode: str = "peer",
    hosts: tuple[str, ...] = HOSTS,
) -> CertificateAuthenticator:
    config = Config(
        hosts=hosts,
        auth=AuthConfig(methods=("pki",)),
        options=XmppauthOptions(crl_grace_seconds=3600),
    )
    tls = TlsOptions(
        verify_mode=verify_mode,
        cacertfile=str(cacertfile) if cacertfile else None,
        cacert_domains=cacert_domains,
    )
    if cacertfile:  # as every process does at start-up: the file's CAs become rows (certauth.configcas)
        sync_config_cas(replace(config, listen_c2s=(C2SListener(tls=tls),), source="test.toml"))
    return CertificateAuthenticator(config, tls, "tcp", "127.0.0.1:40000")


def login(chain: list[Issued], domain: str, *, auth: CertificateAuthenticator | None = None):
    auth = auth or authenticator()
    check = auth.check_certificate([issued.der for issued in chain])
    assert check.verified, check.reason
    return auth.authenticate_external(check.facts, None, domain)


def last_event() -> AuthEvent:
    return AuthEvent.objects.order_by("-pk").first()


def limit(row: CertificateAuthority, *domains: str) -> CertificateAuthority:
    row.allowed_domains = list(domains)
    row.save()  # post_save invalidates the cached anchors
    return row


def assert_domain_refused(result, ca_name: str, domain: str, jid: str) -> None:
    assert result.jid is None
    assert result.condition == "not-authorized"
    event = last_event()
    assert event.outcome == AuthEvent.Outcome.FAILURE
    assert event.condition == "not-authorized"
    assert event.jid_requested == jid
    assert event.jid_granted == ""
    assert f"CA {ca_name!r} may vouch only for" in event.reason, event.reason
    assert f"not for {domain}" in event.reason, event.reason
    assert result.reason == event.reason


def make_root_and_intermediate(name: str) -> tuple[Issued, Issued]:
    """A root that may have one CA below it (pathLen 1), and that intermediate (pathLen 0)."""
    root = make_root(f"{name} root")
    return root, make_intermediate(root, f"{name} intermediate")


# --- a CA row limited to some domains --------------------------------------------------------------------


def test_ca_limited_to_a_domain_vouches_for_a_jid_in_it():
    ca = make_ca("Partner CA")
    limit(add_ca_row(ca, "Partner CA"), "a.example")
    result = login([make_client(ca, jids=["alice@a.example"])], "a.example")
    assert result.jid == "alice@a.example"
    assert last_event().outcome == AuthEvent.Outcome.SUCCESS


def test_ca_limited_to_a_domain_asserting_a_jid_in_another_hosted_domain_is_not_authorized(caplog):
    ca = make_ca("Partner CA")
    limit(add_ca_row(ca, "Partner CA"), "a.example")
    with caplog.at_level(logging.INFO, logger="certauth.authenticator"):
        result = login([make_client(ca, jids=["mallory@b.example"])], "b.example")
    assert_domain_refused(result, "Partner CA", "b.example", "mallory@b.example")
    assert last_event().reason == "CA 'Partner CA' may vouch only for a.example, not for b.example"
    assert "CA 'Partner CA' may vouch only for a.example, not for b.example" in caplog.text
    # Refused before the auth methods: `pki` created no account in the other domain.
    assert not Account.objects.filter(localpart="mallory").exists()


def test_ca_limited_to_two_domains_vouches_for_both_and_names_them_when_refusing():
    ca = make_ca("Partner CA")
    limit(add_ca_row(ca, "Partner CA"), "b.example", "a.example")
    assert login([make_client(ca, jids=["alice@a.example"])], "a.example").jid == "alice@a.example"
    assert login([make_client(ca, jids=["bob@b.example"])], "b.example").jid == "bob@b.example"
    # hosted (a config host: a Domain row alone hosts nothing, accounts.domains), but not allowed for this CA
    hosting_c = authenticator(hosts=(*HOSTS, "c.example"))
    result = login([make_client(ca, jids=["carol@c.example"])], "c.example", auth=hosting_c)
    assert result.condition == "not-authorized"
    assert last_event().reason == "CA 'Partner CA' may vouch only for a.example, b.example, not for c.example"


@pytest.mark.parametrize("domain", HOSTS)
def test_unlimited_ca_vouches_for_every_hosted_domain(domain):
    ca = make_ca("Our partner CA")
    add_ca_row(ca, "Our partner CA")  # allowed_domains = []: every hosted domain
    result = login([make_client(ca, jids=[f"alice@{domain}"])], domain)
    assert result.jid == f"alice@{domain}"


def test_limit_of_one_ca_does_not_touch_another_ca():
    limited, other = make_ca("Limited CA"), make_ca("Other CA")
    limit(add_ca_row(limited, "Limited CA"), "a.example")
    add_ca_row(other, "Other CA")
    assert login([make_client(other, jids=["bob@b.example"])], "b.example").jid == "bob@b.example"


def test_allowed_domains_are_compared_normalised():
    ca = make_ca("Partner CA")
    limit(add_ca_row(ca, "Partner CA"), "A.Example.")  # written through the ORM, not the admin form
    assert login([make_client(ca, jids=["alice@a.example"])], "a.example").jid == "alice@a.example"


def test_allowed_domains_entry_that_is_not_a_domain_matches_nothing():
    # Fail closed: a limit that cannot be read is not "no limit".
    ca = make_ca("Partner CA")
    limit(add_ca_row(ca, "Partner CA"), "not a domain")
    result = login([make_client(ca, jids=["alice@a.example"])], "a.example")
    assert result.condition == "not-authorized"
    assert last_event().reason == "CA 'Partner CA' may vouch only for no domain, not for a.example"


def test_limit_set_after_the_handshake_applies_at_sasl_time():
    ca = make_ca("Partner CA")
    row = add_ca_row(ca, "Partner CA")
    auth = authenticator()
    check = auth.check_certificate([make_client(ca, jids=["alice@b.example"]).der])
    assert check.verified, check.reason
    limit(row, "a.example")
    result = auth.authenticate_external(check.facts, None, "b.example")
    assert_domain_refused(result, "Partner CA", "b.example", "alice@b.example")


def test_limit_costs_no_query_per_login():
    limited, unlimited = make_ca("Limited CA"), make_ca("Unlimited CA")
    limit(add_ca_row(limited, "Limited CA"), "a.example")
    add_ca_row(unlimited, "Unlimited CA")

    def queries(ca: Issued) -> int:
        cert = make_client(ca, jids=["alice@a.example"])
        login([cert], "a.example")  # the first login creates the account (the change feed moves)
        login([cert], "a.example")  # the second fills the caches (accounts.changefeed)
        with CaptureQueriesContext(connection) as captured:
            assert login([cert], "a.example").jid == "alice@a.example"
        return len([q for q in captured if "accounts_changefeed" not in q["sql"]])

    assert queries(limited) == queries(unlimited)


def test_self_signed_certificate_is_not_vouched_for_by_any_ca_so_no_limit_applies():
    limit(add_ca_row(make_ca("Partner CA"), "Partner CA"), "a.example")
    own = make_self_signed(jids=["carol@b.example"])
    result = login([own], "b.example", auth=authenticator(verify_mode="selfsigned_peer"))
    assert result.jid == "carol@b.example"


# --- every CA on the path ----------------------------------------------------------------------------------


def test_limited_intermediate_row_under_an_unlimited_root_limits_its_certificates():
    root, intermediate = make_root_and_intermediate("Corp")
    add_ca_row(root, "Corp root")
    limit(add_ca_row(intermediate, "Corp A issuing", trusted=False), "a.example")
    ok = make_client(intermediate, jids=["alice@a.example"])
    assert login([ok, intermediate], "a.example").jid == "alice@a.example"
    other = make_client(intermediate, jids=["bob@b.example"])
    refused = login([other, intermediate], "b.example")
    assert_domain_refused(refused, "Corp A issuing", "b.example", "bob@b.example")


def test_limited_root_limits_certificates_issued_through_an_unlimited_intermediate():
    root, intermediate = make_root_and_intermediate("Corp")
    limit(add_ca_row(root, "Corp root"), "a.example")  # the intermediate is not a row: the client sends it
    ok = make_client(intermediate, jids=["alice@a.example"])
    assert login([ok, intermediate], "a.example").jid == "alice@a.example"
    other = make_client(intermediate, jids=["bob@b.example"])
    refused = login([other, intermediate], "b.example")
    assert_domain_refused(refused, "Corp root", "b.example", "bob@b.example")


def test_intermediate_and_root_limits_both_apply():
    root, intermediate = make_root_and_intermediate("Corp")
    limit(add_ca_row(root, "Corp root"), "a.example", "b.example")
    limit(add_ca_row(intermediate, "Corp B issuing", trusted=False), "b.example")
    assert login([make_client(intermediate, jids=["bob@b.example"]), intermediate], "b.example").accepted
    refused = login([make_client(intermediate, jids=["alice@a.example"]), intermediate], "a.example")
    assert_domain_refused(refused, "Corp B issuing", "a.example", "alice@a.example")


# --- tls.cacertfile CAs and tls.cacert_domains ----------------------------------------------------------


@pytest.fixture
def file_ca(tmp_path) -> tuple[Issued, str]:
    ca = make_ca("File CA")
    path = tmp_path / "ca.pem"
    path.write_bytes(ca.pem)
    return ca, str(path)


def test_cacertfile_ca_with_cacert_domains_vouches_for_those(file_ca):
    ca, path = file_ca
    auth = authenticator(cacertfile=path, cacert_domains=("a.example",))
    assert login([make_client(ca, jids=["alice@a.example"])], "a.example", auth=auth).jid == "alice@a.example"


def test_cacertfile_ca_with_cacert_domains_asserting_another_domain_is_not_authorized(file_ca):
    ca, path = file_ca
    auth = authenticator(cacertfile=path, cacert_domains=("a.example",))
    result = login([make_client(ca, jids=["bob@b.example"])], "b.example", auth=auth)
    assert_domain_refused(result, "File CA", "b.example", "bob@b.example")  # the config CA's row


def test_cacertfile_ca_without_cacert_domains_vouches_for_every_hosted_domain(file_ca):
    ca, path = file_ca
    auth = authenticator(cacertfile=path)
    assert login([make_client(ca, jids=["bob@b.example"])], "b.example", auth=auth).jid == "bob@b.example"


def test_cacert_domains_do_not_limit_the_ca_rows_of_the_database(file_ca):
    _, path = file_ca
    row_ca = make_ca("Row CA")
    add_ca_row(row_ca, "Row CA")
    auth = authenticator(cacertfile=path, cacert_domains=("a.example",))
    assert login([make_client(row_ca, jids=["bob@b.example"])], "b.example", auth=auth).jid == "bob@b.example"


# --- the admin: allowed domains on the CA page and at import ----------------------------------------------


@pytest.fixture
def hosted(settings):
    settings.XMPP = Config(hosts=("a.example",))
    Domain.objects.create(name="b.example")  # hosted through the admin


def _change(staff_client, row: CertificateAuthority, allowed: str):
    url = reverse("admin:certauth_certificateauthority_change", args=[row.pk])
    form = {"name": row.name, "trusted_for_client_auth": "on", "allowed_domains": allowed}
    return staff_client.post(url, form)


def test_admin_limits_a_ca_to_hosted_domains_lowercased(staff_client, hosted):
    row = add_ca_row(make_ca("Partner CA"), "Partner CA")
    response = _change(staff_client, row, "A.Example., b.example  a.example")
    assert response.status_code == 302, response.content.decode()[:2000]
    row.refresh_from_db()
    assert row.allowed_domains == ["a.example", "b.example"]
    page = staff_client.get(reverse("admin:certauth_certificateauthority_change", args=[row.pk]))
    assert b'value="a.example, b.example"' in page.content


def test_admin_refuses_a_domain_we_do_not_host(staff_client, hosted):
    row = add_ca_row(make_ca("Partner CA"), "Partner CA")
    response = _change(staff_client, row, "a.example, c.example")
    assert response.status_code == 200
    expected = "&#x27;c.example&#x27; is not a hosted domain (hosted: a.example, b.example)"
    assert expected in response.content.decode()
    row.refresh_from_db()
    assert row.allowed_domains == []


def test_admin_refuses_a_name_that_is_not_a_domain(staff_client, hosted):
    row = add_ca_row(make_ca("Partner CA"), "Partner CA")
    response = _change(staff_client, row, "a.example, " + "x" * 64 + ".example")
    assert response.status_code == 200
    assert "is not a domain name" in response.content.decode()
    row.refresh_from_db()
    assert row.allowed_domains == []


def test_admin_empty_allowed_domains_means_every_hosted_domain(staff_client, hosted):
    row = limit(add_ca_row(make_ca("Partner CA"), "Partner CA"), "a.example")
    assert _change(staff_client, row, "").status_code == 302
    row.refresh_from_db()
    assert row.allowed_domains == []


def test_admin_import_takes_allowed_domains(staff_client, hosted):
    ca = make_ca("Imported CA")
    url = reverse("admin:certauth_certificateauthority_import")
    form = {"pem": ca.pem.decode(), "name": "", "trusted_for_client_auth": "on"}
    form["allowed_domains"] = "b.example"
    assert staff_client.post(url, form).status_code == 302
    assert CertificateAuthority.objects.get(name="Imported CA").allowed_domains == ["b.example"]
    refused = {**form, "allowed_domains": "nope.example"}
    response = staff_client.post(url, {**refused, "pem": make_ca("Another CA").pem.decode()})
    assert "is not a hosted domain" in response.content.decode()
    assert not CertificateAuthority.objects.filter(name="Another CA").exists()


def test_pki_import_ca_takes_domains(tmp_path, hosted):
    (tmp_path / "partner.pem").write_bytes(make_ca("Partner CA").pem)
    out = StringIO()
    path = str(tmp_path / "partner.pem")
    call_command("pki", "import-ca", path, "--domains", "B.example,a.example", stdout=out)
    assert "for b.example, a.example only" in out.getvalue()
    assert CertificateAuthority.objects.get(name="Partner CA").allowed_domains == ["b.example", "a.example"]


def test_pki_import_ca_refuses_a_domain_we_do_not_host(tmp_path, hosted):
    (tmp_path / "partner.pem").write_bytes(make_ca("Partner CA").pem)
    with pytest.raises(CommandError, match="--domains: 'c.example' is not a hosted domain"):
        call_command("pki", "import-ca", str(tmp_path / "partner.pem"), "--domains", "c.example")
    assert not CertificateAuthority.objects.filter(name="Partner CA").exists()
