"""The JID grammar of the core (transport/xmpp/jid.py): RFC 7622 §3, every rule both ways.

Moved from tests/certauth/test_identity.py with the grammar (issue 13).
"""

from __future__ import annotations

import pytest

from transport.xmpp.jid import InvalidJid, parse_bare_jid, parse_jid


def str_jid(text: str) -> str:
    """The canonical string form of the JID ``text`` (what ``identity.normalise_jid`` was)."""
    return str(parse_jid(text))


# --- JID normalisation (RFC 7622) ---------------------------------------------------------------


def test_parse_jid_splits_and_lowercases_local_and_domain():
    jid = parse_jid("Juliet@Example.ORG/Balcony")
    assert (jid.local, jid.domain, jid.resource) == ("juliet", "example.org", "Balcony")
    assert jid.bare == "juliet@example.org"


def test_resource_keeps_its_case_and_may_contain_at_and_slash():
    assert str_jid("a@b.example/Res@x/y") == "a@b.example/Res@x/y"


def test_domain_only_jid_has_no_localpart():
    assert parse_jid("example.org").local is None


def test_trailing_dot_of_domain_is_stripped():
    assert str_jid("a@example.org.") == "a@example.org"


def test_fullwidth_localpart_is_nfkc_normalised():
    assert str_jid("\uff2a\uff35\uff2c@example.org") == "jul@example.org"


@pytest.mark.parametrize(
    "text",
    [
        "@example.org",
        "juliet@",
        "juliet@example.org/",
        "",
        "a b@example.org",
        'a"b@example.org',
        "a&b@example.org",
        "a'b@example.org",
        "a:b@example.org",
        "a<b@example.org",
        "a>b@example.org",
        "x" * 1024 + "@example.org",
        "a@" + "d" * 1024,
        "a@exa mple.org",
        "a@example..org",
        "a\x00b@example.org",
    ],
)
def test_invalid_jids_are_refused(text):
    with pytest.raises(InvalidJid):
        parse_jid(text)


def test_localpart_of_exactly_1023_bytes_is_accepted():
    assert parse_jid("x" * 1023 + "@example.org").local == "x" * 1023


def test_bare_jid_requires_a_localpart_and_no_resource():
    assert parse_bare_jid("a@example.org").bare == "a@example.org"
    with pytest.raises(InvalidJid):
        parse_bare_jid("example.org")
    with pytest.raises(InvalidJid):
        parse_bare_jid("a@example.org/r")
