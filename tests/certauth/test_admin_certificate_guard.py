"""`[xmppauth] admin_requires_certificate`: the admin needs a staff user's client certificate (issue 12 §11).

A real ``runxmpp`` with an HTTPS listener in ``selfsigned_peer`` mode (the most lenient one that asks for a
certificate) and the option on. Passes: the certificate of a staff user. Refused with HTTP 403: no
certificate, a non-staff user's, a revoked one, one with two xmppAddrs, a self-signed one naming the staff
user, and a staff certificate presented inside another staff user's session.
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests.certs import make_client, make_self_signed
from tests.processes import Managed, free_port
from tests.transport.runc2s_process import manage
from tests.transport.tlsclient import client_context, make_pki

STAFF_PASSWORD = "staff-password-1"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    directory = tmp_path_factory.mktemp("admin-guard")
    pki = make_pki(directory)
    (directory / "client-ca.pem").write_bytes(pki.ca.pem)
    port = free_port()
    config = directory / "xmppauth.toml"
    config.write_text(f"""
[[listen.http]]
  port = {port}
  ip_address = "127.0.0.1"
  tls.certfile = "{pki.server_certfile}"
  tls.keyfile = "{pki.server_keyfile}"
  tls.cacertfile = "{directory / "client-ca.pem"}"
  tls.verify_mode = "selfsigned_peer"
  tls.disconnect_on_failure = false
[xmppauth]
  admin_requires_certificate = true
""")
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(
        XMPPAUTH_CONFIG=str(config),
        XMPPAUTH_VAR_DIR=str(directory / "var"),
        DATABASE_URL=f"sqlite:///{directory / 'db.sqlite3'}",
        PYTHONUNBUFFERED="1",
    )
    certs = {
        "admin": make_client(pki.ca, jids=["admin@localhost"]),
        "root": make_client(pki.ca, jids=["root@localhost"]),
        "bob": make_client(pki.ca, jids=["bob@localhost"]),
        "revoked": make_client(pki.ca, jids=["admin@localhost"]),
        "two": make_client(pki.ca, jids=["admin@localhost", "root@localhost"]),
        "selfsigned": make_self_signed(jids=["admin@localhost"]),
    }
    (directory / "revoked.pem").write_bytes(certs["revoked"].pem)
    users = (
        "from django.contrib.auth.models import User\n"
        f"User.objects.create_user('admin@localhost', password='{STAFF_PASSWORD}', is_staff=True)\n"
        f"User.objects.create_user('root@localhost', password='{STAFF_PASSWORD}', is_staff=True)\n"
        f"User.objects.create_user('bob@localhost', password='{STAFF_PASSWORD}')\n"
    )
    for args in (
        ["migrate", "--noinput"],
        ["shell", "-c", users],
        ["pki", "import-cert", str(directory / "revoked.pem")],
        ["pki", "revoke", certs["revoked"].facts.fingerprint_sha256],
    ):
        done = manage(env, *args)
        assert done.returncode == 0, done.stdout + done.stderr
    server = Managed(env, "runxmpp")
    try:
        server.wait_for_port(port)
        yield port, certs, directory
    finally:
        server.stop()


def get(port: int, path: str, context, opener=None) -> tuple[int, bytes]:
    open_url = (opener or urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))).open
    try:
        with open_url(f"https://127.0.0.1:{port}{path}", timeout=20) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_a_staff_users_certificate_reaches_the_admin_login(site, tmp_path):
    port, certs, _ = site
    status, body = get(port, "/admin/login/", client_context(tmp_path, certs["admin"]))
    assert status == 200 and b"csrfmiddlewaretoken" in body


@pytest.mark.parametrize("which", [None, "bob", "revoked", "two", "selfsigned"])
def test_without_a_staff_users_valid_certificate_the_admin_is_forbidden(site, tmp_path, which):
    port, certs, _ = site
    client = certs[which] if which else None
    status, body = get(port, "/admin/login/", client_context(tmp_path, client))
    assert status == 403, body
    assert b"client certificate of a staff user" in body


def test_a_staff_certificate_inside_another_staff_users_session_is_forbidden(site, tmp_path):
    port, certs, _ = site
    jar = http.cookiejar.CookieJar()

    def opener(cert):
        return urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=client_context(tmp_path, cert)),
            urllib.request.HTTPCookieProcessor(jar),
        )

    status, body = get(port, "/admin/login/", None, opener(certs["root"]))
    assert status == 200
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1).decode()
    form = urllib.parse.urlencode(
        {
            "csrfmiddlewaretoken": token,
            "username": "root@localhost",
            "password": STAFF_PASSWORD,
            "next": "/admin/",
        }
    ).encode()
    request = urllib.request.Request(
        f"https://127.0.0.1:{port}/admin/login/", data=form, headers={"Referer": f"https://127.0.0.1:{port}/"}
    )
    with opener(certs["root"]).open(request, timeout=20) as response:
        assert response.status == 200 and response.url.endswith("/admin/")  # logged in as root, with root's
    assert get(port, "/admin/", None, opener(certs["root"]))[0] == 200
    status, body = get(port, "/admin/", None, opener(certs["admin"]))
    assert status == 403 and b"another staff user" in body
    status, _ = get(port, "/admin/", None, opener(certs["root"]))
    assert status == 200 and "/admin/login/" in get_final_url(port, opener(certs["root"]))  # logged out


def get_final_url(port: int, opener) -> str:
    with opener.open(f"https://127.0.0.1:{port}/admin/", timeout=20) as response:
        return response.url
