"""Issue 18 point 9: the operator's work in a real browser, with screenshots at 1280 px.

Headless Chromium (Debian's ``chromium``, driven by Playwright for Python, which downloads no browser) logs in
to the admin served by Django's live server, issues a certificate and downloads its ``.p12``, revokes it with
a reason, ends a live session from the account's page and reads the dashboard. The screenshots go to
``tests/artifacts/`` (ignored by git, kept by CI): ``dashboard.png``, ``account.png``, ``certificate.png``,
and the two lists whose last columns used to be cut off at 1280 px, which the tests also measure.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect, sync_playwright  # requirements.txt; never skipped in CI

from certauth import pki, services
from certauth.models import AuthEvent, Certificate
from tests.processes import Managed
from tests.transport.sessionclient import login
from tests.transport.test_session_termination_processes import (  # noqa: F401 (a fixture)
    migrated_database,
    run_manage,
    scratch,
    stop,
)
from tests.transport.tlsclient import client_context
from transport.sessions import terminations as sessions
from transport.sessions.models import SessionTermination

CHROMIUM = "/usr/bin/chromium"  # Debian's package (.ci/run installs it)
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
WIDTH = 1280
PASSWORD = "pw-operator-browser"
P12_PASSWORD = "browser-p12-secret"

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def browser():
    assert shutil.which(CHROMIUM) or Path(CHROMIUM).exists(), (
        f"{CHROMIUM} is missing: apt-get install chromium"
    )
    # Playwright's sync API keeps an event loop on the test's thread; the ORM calls of these tests (and of
    # their database teardown) are plain sync code, so Django's async guard is lifted while it runs.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            yield chromium
            chromium.close()
    finally:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture
def admin_page(browser, live_server, django_user_model, settings) -> Page:
    """A 1280 px wide page logged in to the admin through its login form."""
    settings.ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
    django_user_model.objects.create_superuser(username="operator", email="", password=PASSWORD)
    context = browser.new_context(viewport={"width": WIDTH, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_have_text("xmppauth")
    yield page
    context.close()


def _shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def _fits(page: Page) -> bool:
    """Nothing scrolls sideways: neither the page nor a list's own scroll box (``.results``)."""
    return page.evaluate(
        "document.documentElement.scrollWidth <= window.innerWidth"
        " && [...document.querySelectorAll('.results, .xa-panel')].every(e => e.scrollWidth <= e.clientWidth)"
    )


def test_issue_download_and_revoke_a_certificate(admin_page: Page, live_server, our_ca, alice, tmp_path):
    page = admin_page
    page.goto(f"{live_server.url}/admin/accounts/account/{alice.pk}/change/")
    page.click("text=Issue a certificate")
    page.fill("#id_password", P12_PASSWORD)
    page.fill("#id_password_again", P12_PASSWORD)
    page.click("input[type=submit][value=Issue]")
    expect(page.locator(".messagelist")).to_contain_text("Issued certificate")
    row = Certificate.objects.get(account=alice)
    assert page.url.endswith(f"/admin/certauth/certificate/{row.pk}/change/")
    assert page.locator("input[type=password]").count() == 0  # nothing left filled in
    _shot(page, "certificate-issued.png")

    with page.expect_download() as download_info:
        page.click(".xa-download a")
    saved = tmp_path / "alice.p12"
    download_info.value.save_as(saved)
    _, cert, _ = pki.load_pkcs12(saved.read_bytes(), P12_PASSWORD.encode())
    assert pki.fingerprint_sha256(cert) == row.fingerprint_sha256
    assert pki.xmppaddrs_of(cert) == ["alice@localhost"]
    assert pki.cert_facts(cert).common_name == "alice@localhost"
    page.reload()
    assert page.locator(".xa-download a").count() == 0  # offered once

    page.select_option("#certificate-status select[name=reason]", "key_compromise")
    page.click("#certificate-status input[value=Revoke]")
    expect(page.locator(".messagelist")).to_contain_text("revoked")
    expect(page.locator("#certificate-status h2")).to_contain_text("revoked")
    row.refresh_from_db()
    assert (row.status, row.revocation_reason) == (Certificate.Status.REVOKED, "key_compromise")
    assert page.locator("#certificate-status input[value=Revoke]").count() == 0
    assert page.locator("a.deletelink").count() == 0
    _shot(page, "certificate.png")
    assert _fits(page)


def test_end_a_session_from_the_account_page(admin_page: Page, live_server, our_ca, alice):
    page = admin_page
    held = services.issue_for_account(alice, days=20).row
    services.issue_for_account(alice, days=300)
    services.hold(held)
    facts = sessions.SessionFacts(full_jid="alice@localhost/laptop", transport="tls", peer="127.0.0.1:40000")
    sessions.save_session(facts, process="xmpp-1:4242:1")
    AuthEvent.objects.create(
        transport="tls", peer="127.0.0.1:40000", jid_granted=alice.jid, outcome="success"
    )
    AuthEvent.objects.create(
        transport="tcp",
        peer="127.0.0.1:40001",
        jid_requested=alice.jid,
        cert_fingerprint=held.fingerprint_sha256,
        outcome="failure",
        condition="not-authorized",
        reason="certificate on hold",
    )
    page.goto(f"{live_server.url}/admin/accounts/account/{alice.pk}/change/")
    expect(page.locator("#panel-certificates")).to_contain_text("on hold")
    expect(page.locator("#panel-events")).to_contain_text("certificate on hold")
    _shot(page, "account.png")
    assert _fits(page)

    page.click("#panel-sessions input[value='End session']")
    expect(page.locator(".messagelist")).to_contain_text("asked to end")
    assert page.url.endswith(f"/admin/accounts/account/{alice.pk}/change/")
    command = SessionTermination.objects.get(target=SessionTermination.Target.SESSION)
    # what every listener process applies to the sessions it holds
    # (transport.sessions.registry.TerminationWatcher)
    watched = sessions.terminations_since(0, timezone.now() - timedelta(minutes=1))
    assert [c.id for c in watched if sessions.matches(c, facts)] == [command.id]
    assert (command.condition, command.text) == ("reset", "ended by the operator")


def test_read_the_dashboard(admin_page: Page, live_server, our_ca, alice):
    page = admin_page
    now = timezone.now()
    services.issue_for_account(alice, days=12)
    services.revoke(services.issue_for_account(alice, days=200).row, "superseded")
    for i, transport in enumerate(["websocket", "websocket", "tls", "bosh"]):
        sessions.save_session(
            sessions.SessionFacts(full_jid=f"user{i}@localhost/r", transport=transport),
            process=f"xmpp-{i % 2}:1:1",
        )
    for minute in range(0, 170, 3):
        ok = AuthEvent.objects.create(transport="tls", outcome="success", jid_granted="alice@localhost")
        AuthEvent.objects.filter(pk=ok.pk).update(time=now - timedelta(minutes=minute))
        if minute % 9 == 0:
            bad = AuthEvent.objects.create(
                transport="tcp", outcome="failure", condition="not-authorized", reason="certificate revoked"
            )
            AuthEvent.objects.filter(pk=bad.pk).update(time=now - timedelta(minutes=minute + 1))
    page.goto(f"{live_server.url}/admin/")
    expect(page.locator("#dash-sessions .xa-figure")).to_have_text("4")
    expect(page.locator("#dash-logins")).to_contain_text("certificate revoked")
    expect(page.locator("#dash-cas")).to_contain_text("Test CA")
    expect(page.locator("#dash-expiring h2")).to_contain_text("30 days: 1")
    expect(page.locator("#dash-revocations")).to_contain_text("superseded")
    assert page.locator("#dash-logins svg rect").count() > 50
    _shot(page, "dashboard.png")
    assert _fits(page)


def test_lists_fit_at_1280_px(admin_page: Page, live_server, our_ca, alice):
    page = admin_page
    for _ in range(3):
        services.issue_for_account(alice, days=30)
    AuthEvent.objects.create(
        transport="websocket",
        peer="[2001:db8::1234:5678]:51234",
        jid_requested="someone.with.a.long.name@localhost",
        outcome="failure",
        condition="not-authorized",
        reason="certificate chain does not verify: the issuer CN=Some Other Intermediate CA,O=Example Corp "
        "is not trusted for client authentication on this listener (verify_mode peer)",
        cert_subject="CN=someone.with.a.long.name@localhost,O=Example Corp,OU=Engineering",
        cert_fingerprint="ab" * 32,
    )
    page.goto(f"{live_server.url}/admin/certauth/certificate/")
    expect(page.locator("#result_list th.column-status_display")).to_be_in_viewport()
    _shot(page, "certificate-list.png")
    assert _fits(page)
    page.goto(f"{live_server.url}/admin/certauth/authevent/")
    expect(page.locator("#result_list th.column-reason")).to_be_in_viewport()
    _shot(page, "authevent-list.png")
    assert _fits(page)


def test_end_session_button_ends_a_session_held_by_runxmpp(browser, tmp_path, migrated_database):  # noqa: F811
    """The whole way: a raw client logged in to ``runxmpp`` (its own process), the operator's browser on that
    server's admin, "End session" on the account's page, and the client reads ``reset`` (RFC 6120
    §4.9.3.16) with the operator's text."""
    env, pki_files, port = scratch(tmp_path, migrated_database, http=True)
    http_port = int(
        re.search(r"\[\[listen\.http\]\]\n  port = (\d+)", (tmp_path / "xmppauth.toml").read_text())[1]
    )
    (tmp_path / "alice.pem").write_bytes(pki_files.valid.pem)
    run_manage(env, "pki", "import-cert", str(tmp_path / "alice.pem"))
    run_manage(
        {**env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD},
        "createsuperuser",
        "--noinput",
        "--username",
        "operator",
        "--email",
        "operator@localhost",
    )
    server = Managed(env, "runxmpp")
    context = browser.new_context(viewport={"width": WIDTH, "height": 900})
    try:
        server.wait_for(f"c2s listening on 127.0.0.1:{port}")
        server.wait_for("session termination watcher polls")
        session = login(port, client_context(tmp_path, pki_files.valid))  # the pki method makes the account
        try:
            page = context.new_page()
            base = f"http://localhost:{http_port}"
            page.goto(f"{base}/admin/login/")
            page.fill("#id_username", "operator")
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            expect(page.locator("#dash-sessions .xa-figure")).to_have_text("1")
            page.goto(f"{base}/admin/accounts/account/")
            page.click("text=alice@localhost")
            expect(page.locator("#panel-sessions")).to_contain_text("live")  # the resource the client bound
            page.click("#panel-sessions input[value='End session']")
            expect(page.locator(".messagelist")).to_contain_text("asked to end")
            end = session.wait_for_end()
            assert (end.condition, end.text) == ("reset", "ended by the operator"), end.raw[-500:]
            session.close()  # the client's side of the close (RFC 6120 §4.4)
            deadline = time.monotonic() + 15  # the holder deletes its row once the stream is closed
            while "Not logged in." not in page.locator("#panel-sessions").inner_text():
                assert time.monotonic() < deadline, "the ended session is still listed"
                time.sleep(0.2)
                page.reload()
        finally:
            session.close()
    finally:
        context.close()
        output = stop(server)
    assert "Traceback" not in output
