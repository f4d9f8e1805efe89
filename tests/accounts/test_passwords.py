"""Setting passwords: the admin's "Set password" page and `manage.py account create / passwd` (issue 14 §2).

Both go through ``accounts.passwords.set_password`` and Django's password validators; only SCRAM salted keys
are stored, and they check the password they were made from (and no other).
"""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from accounts.models import Account, Domain, PasswordCredential
from accounts.passwords import lookup
from accounts.scram import check_password
from xmppauth.config import PasswordOptions

pytestmark = pytest.mark.django_db

GOOD = "a long enough passphrase"
OPTIONS = PasswordOptions()  # the default config: every hash MongooseIM knows


def keys_of(jid: str):
    local, _, domain = jid.partition("@")
    return lookup(local, domain, OPTIONS)


def run(*args: str, stdin: str) -> str:
    out = io.StringIO()
    import sys

    saved = sys.stdin
    sys.stdin = io.StringIO(stdin)  # not a terminal: one line is the password
    try:
        call_command("account", *args, stdout=out)
    finally:
        sys.stdin = saved
    return out.getvalue()


def test_create_and_passwd_from_stdin():
    assert "created alice@localhost" in run("create", "Alice@localhost", stdin="")
    assert "password set" in run("passwd", "alice@localhost", stdin=GOOD + "\n")
    creds = keys_of("alice@localhost")
    assert creds.exists and set(creds.keys) == {"sha", "sha224", "sha256", "sha384", "sha512"}
    assert all(check_password(keys, GOOD) for keys in creds.keys.values())
    assert not any(check_password(keys, GOOD + "x") for keys in creds.keys.values())


def test_create_with_password():
    run("create", "bob@localhost", "--password", stdin=GOOD + "\n")
    assert keys_of("bob@localhost").exists


def test_passwd_applies_the_validators_and_keeps_the_old_password():
    run("create", "carol@localhost", "--password", stdin=GOOD + "\n")
    with pytest.raises(CommandError, match="too short|too common"):
        run("passwd", "carol@localhost", stdin="short\n")
    assert check_password(keys_of("carol@localhost").keys["sha256"], GOOD)


def test_passwd_for_an_unknown_account_is_an_error():
    with pytest.raises(CommandError, match="no account nobody@localhost"):
        run("passwd", "nobody@localhost", stdin=GOOD + "\n")


def test_admin_sets_a_password_with_validators(staff_client):
    domain = Domain.objects.create(name="localhost")
    account = Account.objects.create(localpart="dave", domain=domain)
    url = reverse("admin:accounts_account_password", args=[account.pk])
    assert staff_client.get(url).status_code == 200
    refused = staff_client.post(url, {"password1": "12345678901", "password2": "12345678901"})
    assert refused.status_code == 200 and not PasswordCredential.objects.filter(account=account).exists()
    differ = staff_client.post(url, {"password1": GOOD, "password2": GOOD + "!"})
    assert differ.status_code == 200 and not PasswordCredential.objects.filter(account=account).exists()
    done = staff_client.post(url, {"password1": GOOD, "password2": GOOD})
    assert done.status_code == 302
    assert check_password(keys_of("dave@localhost").keys["sha256"], GOOD)


def test_made_up_salt_of_an_unknown_name_is_the_same_in_every_process(settings):
    """RFC 5802 §9: an unknown name must not show itself by a salt that changes between connections, also
    when they land on different processes (runc2s --reuse-port): the salt derives from the secret key."""
    import secrets

    from accounts import passwords, scram

    first = lookup("nobody", "localhost", OPTIONS).keys["sha256"].salt
    scram.set_fake_secret(secrets.token_bytes(32))  # what a fresh process starts with
    passwords._use_deployment_secret.cache_clear()
    assert lookup("nobody", "localhost", OPTIONS).keys["sha256"].salt == first
    settings.SECRET_KEY = "another deployment's secret key, long enough to be one"
    passwords._use_deployment_secret.cache_clear()
    assert lookup("nobody", "localhost", OPTIONS).keys["sha256"].salt != first
    passwords._use_deployment_secret.cache_clear()
