"""The LDAP directory client against a real OpenLDAP slapd: users, passwords, filters, TLS, outages.

Rules from MongooseIM's LDAP method (doc/authentication-methods/ldap.md) and RFC 4513 (binds), RFC 4515
(filter escaping); each is tested both ways.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from certauth.ldapdir import Directory, DirectoryUnavailable, LdapPool
from tests.certs import make_ca
from tests.ldapserver import USERS_BASE, LdapUser, Slapd, pool_options
from xmppauth.config import LdapAuthOptions, LdapDnFilter, LdapLocalFilter, LdapPoolOptions

USERS = [
    LdapUser("alice", "alice-secret", mail="alice@mail.example", employee_type="xmpp"),
    LdapUser("bob", "bob-secret", employee_type="disabled"),
    LdapUser("carol"),  # no password: can never bind
]


@pytest.fixture(scope="module")
def slapd() -> Iterator[Slapd]:
    server = Slapd(list(USERS))
    server.start()
    yield server
    server.remove()


def directory(server: Slapd, pool: LdapPoolOptions | None = None, **auth_changes: object) -> Directory:
    pool = pool or pool_options(server)
    auth = replace(LdapAuthOptions(base=USERS_BASE, pools=(("default", pool),)), **auth_changes)  # type: ignore[arg-type]
    return Directory(
        auth, LdapPool(pool, name="default"), LdapPool(replace(pool, rootdn="", password=""), name="bind")
    )


def test_present_user_is_found_and_absent_is_not(slapd: Slapd) -> None:
    found = directory(slapd).find_user("alice", "example.com")
    assert found is not None and found.dn == f"uid=alice,{USERS_BASE}"
    assert directory(slapd).find_user("mallory", "example.com") is None


def test_right_password_binds_wrong_and_empty_do_not(slapd: Slapd) -> None:
    d = directory(slapd)
    assert d.check_password("alice", "example.com", "alice-secret")[1] is True
    assert d.check_password("alice", "example.com", "wrong")[1] is False
    # An empty password would be an unauthenticated bind, which slapd accepts (RFC 4513 §5.1.2).
    assert d.check_password("alice", "example.com", "")[1] is False
    entry, ok = d.check_password("mallory", "example.com", "anything")
    assert entry is None and ok is False
    assert d.check_password("carol", "example.com", "carol")[1] is False  # no userPassword


def test_without_a_bind_pool_the_search_connection_keeps_rootdn(slapd: Slapd) -> None:
    pool = pool_options(slapd)
    auth = LdapAuthOptions(base=USERS_BASE, pools=(("default", pool),))
    d = Directory(auth, LdapPool(pool, name="default"), None)
    assert d.check_password("alice", "example.com", "alice-secret")[1] is True
    assert d.find_user("bob", "example.com") is not None  # the search pool is still usable


def test_filter_characters_in_a_name_are_escaped(slapd: Slapd) -> None:
    d = directory(slapd)
    assert d.find_user("*", "example.com") is None
    assert d.find_user("alice)(uid=*", "example.com") is None
    assert d.user_filter("a*b") == r"(uid=a\2ab)"


def test_uids_alternatives_with_format(slapd: Slapd) -> None:
    d = directory(slapd, uids=(("uid", "%u"), ("mail", "%u@mail.example")))
    assert d.user_filter("x") == "(|(uid=x)(mail=x@mail.example))"
    only_mail = directory(slapd, uids=(("mail", "%u@mail.example"),))
    assert only_mail.find_user("alice", "example.com") is not None
    assert only_mail.find_user("bob", "example.com") is None  # bob has no mail


def test_filter_narrows_the_search(slapd: Slapd) -> None:
    d = directory(slapd, filter="(employeeType=xmpp)")
    assert d.find_user("alice", "example.com") is not None
    assert d.find_user("bob", "example.com") is None


def test_local_filter_equal_and_notequal(slapd: Slapd) -> None:
    equal = directory(slapd, local_filter=LdapLocalFilter("equal", "employeeType", ("xmpp",)))
    assert equal.find_user("alice", "example.com") is not None
    assert equal.find_user("bob", "example.com") is None
    notequal = directory(slapd, local_filter=LdapLocalFilter("notequal", "employeeType", ("disabled",)))
    assert notequal.find_user("alice", "example.com") is not None
    assert notequal.find_user("bob", "example.com") is None


def test_dn_filter_needs_a_second_match(slapd: Slapd) -> None:
    passes = directory(slapd, dn_filter=LdapDnFilter("(&(uid=%u)(employeeType=%s))", ("employeeType",)))
    assert passes.find_user("alice", "example.com") is not None
    fails = directory(slapd, dn_filter=LdapDnFilter("(&(uid=%u)(mail=%u@%d))", ()))
    assert fails.find_user("alice", "example.com") is None  # alice's mail is at mail.example


def test_ldaps_with_the_right_ca_works_and_a_wrong_ca_fails_closed(slapd: Slapd) -> None:
    good = pool_options(slapd, port=slapd.tls_port, encrypt="tls", tls_cacertfile=slapd.ca_file)
    assert directory(slapd, good).check_password("alice", "example.com", "alice-secret")[1] is True
    other_ca = slapd.directory / "other-ca.pem"
    other_ca.write_bytes(make_ca("not the directory's CA").pem)
    bad = replace(good, tls_cacertfile=str(other_ca))
    with pytest.raises(DirectoryUnavailable):
        directory(slapd, bad).find_user("alice", "example.com")
    unverified = replace(bad, tls_verify_peer=False)  # tls.verify_mode = "none": the operator's choice
    assert directory(slapd, unverified).find_user("alice", "example.com") is not None


def test_starttls_works_and_is_verified(slapd: Slapd) -> None:
    good = pool_options(slapd, encrypt="starttls", tls_cacertfile=slapd.ca_file)
    assert directory(slapd, good).check_password("alice", "example.com", "alice-secret")[1] is True
    other_ca = slapd.directory / "other-ca-2.pem"
    other_ca.write_bytes(make_ca("not the directory's CA").pem)
    with pytest.raises(DirectoryUnavailable):
        directory(slapd, replace(good, tls_cacertfile=str(other_ca))).find_user("alice", "example.com")


def test_a_wrong_rootdn_password_is_unavailable_not_a_verdict(slapd: Slapd) -> None:
    with pytest.raises(DirectoryUnavailable, match="refused rootdn"):
        directory(slapd, pool_options(slapd, password="wrong")).find_user("alice", "example.com")


def test_directory_down_fails_fast_and_recovers() -> None:
    server = Slapd([LdapUser("dave", "dave-secret")])
    server.start()
    try:
        d = directory(server)
        assert d.check_password("dave", "example.com", "dave-secret")[1] is True
        server.stop()
        started = time.monotonic()
        with pytest.raises(DirectoryUnavailable):
            d.check_password("dave", "example.com", "dave-secret")
        with pytest.raises(DirectoryUnavailable, match="connect_interval"):
            d.find_user("dave", "example.com")  # within connect_interval: not even tried
        assert time.monotonic() - started < 5  # fails, does not hang (timeouts are 2 s)
        server.start()
        deadline = time.monotonic() + 5
        while True:
            try:
                assert d.check_password("dave", "example.com", "dave-secret")[1] is True
                break
            except DirectoryUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        server.remove()
