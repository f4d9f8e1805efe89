"""XEP-0178 / DESIGN §4: certificate facts + authzid -> JID, every rule both ways."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest

from certauth.identity import (
    INVALID_AUTHZID,
    NOT_AUTHORIZED,
    VERIFIERS,
    IdentityFailure,
    check_verifiers,
    resolve_identity,
)
from xmppauth.config import parse_config

HOSTED = ("example.org", "other.example")


@dataclass(frozen=True)
class Facts:
    xmpp_addrs: tuple[str, ...] = ()
    common_name: str | None = None
    xmpp_addr_entries: int = 0  # certauth.pki.CertFacts: xmppAddr SAN entries, malformed ones included
    fingerprint_sha256: str = "ab" * 32
    subject: str = "CN=test"


def resolve(facts, authzid=None, domain="example.org", verifiers=("standard",), **kwargs):
    return resolve_identity(facts, authzid, domain, HOSTED, verifiers, **kwargs)


# --- standard -----------------------------------------------------------------------------------


def test_one_xmppaddr_without_authzid_is_that_jid():
    decision = resolve(Facts(xmpp_addrs=("Juliet@Example.org",)))
    assert decision.accepted and decision.jid == "juliet@example.org"
    assert decision.verifier == "standard"


def test_one_xmppaddr_with_equal_authzid_is_accepted_after_normalisation():
    decision = resolve(Facts(xmpp_addrs=("juliet@example.org",)), authzid="JULIET@example.ORG")
    assert decision.jid == "juliet@example.org"


def test_one_xmppaddr_with_other_authzid_is_invalid_authzid():
    decision = resolve(Facts(xmpp_addrs=("juliet@example.org",)), authzid="romeo@example.org")
    assert not decision.accepted
    assert decision.condition == INVALID_AUTHZID
    assert "romeo@example.org" in decision.reason


def test_two_xmppaddrs_without_authzid_is_invalid_authzid():
    decision = resolve(Facts(xmpp_addrs=("juliet@example.org", "romeo@example.org")))
    assert decision.condition == INVALID_AUTHZID
    assert decision.reason == "certificate has 2 xmppAddrs and no authzid was given"


def test_two_xmppaddrs_with_authzid_matching_one_is_that_jid():
    decision = resolve(
        Facts(xmpp_addrs=("juliet@example.org", "romeo@example.org")), authzid="romeo@example.org"
    )
    assert decision.jid == "romeo@example.org"


def test_two_xmppaddrs_with_authzid_matching_none_is_invalid_authzid():
    decision = resolve(
        Facts(xmpp_addrs=("juliet@example.org", "romeo@example.org")), authzid="nurse@example.org"
    )
    assert decision.condition == INVALID_AUTHZID


def test_no_xmppaddr_is_not_authorized():
    decision = resolve(Facts(common_name="juliet"))
    assert decision.condition == NOT_AUTHORIZED
    assert "xmppAddr" in decision.reason


def test_unparseable_xmppaddr_is_ignored_and_logged(caplog):
    caplog.set_level(logging.WARNING, logger="certauth.identity")
    decision = resolve(Facts(xmpp_addrs=("not a jid@example.org", "juliet@example.org")))
    assert decision.jid == "juliet@example.org"
    assert "ignoring xmppAddr 'not a jid@example.org'" in caplog.text


def test_duplicate_xmppaddrs_count_once():
    decision = resolve(Facts(xmpp_addrs=("juliet@example.org", "Juliet@example.org")))
    assert decision.jid == "juliet@example.org"


# --- authzid that is not a JID ------------------------------------------------------------------


@pytest.mark.parametrize(
    "authzid", ["", "juliet", "@example.org", "a b@example.org", "juliet@example.org/res"]
)
def test_authzid_that_is_not_a_bare_jid_is_invalid_authzid(authzid):
    decision = resolve(Facts(xmpp_addrs=("juliet@example.org",)), authzid=authzid)
    assert decision.condition == INVALID_AUTHZID
    assert "is not a JID" in decision.reason


# --- domain -------------------------------------------------------------------------------------


def test_xmppaddr_in_a_domain_we_do_not_host_is_not_authorized():
    decision = resolve(Facts(xmpp_addrs=("juliet@elsewhere.example",)))
    assert decision.condition == NOT_AUTHORIZED
    assert "not in a domain we host" in decision.reason


def test_xmppaddr_in_another_hosted_domain_than_the_stream_is_not_authorized():
    decision = resolve(Facts(xmpp_addrs=("juliet@other.example",)), domain="example.org")
    assert decision.condition == NOT_AUTHORIZED
    assert "stream's domain" in decision.reason


def test_stream_domain_is_compared_after_normalisation():
    assert (
        resolve(Facts(xmpp_addrs=("juliet@example.org",)), domain="EXAMPLE.org.").jid == "juliet@example.org"
    )


# --- common_name --------------------------------------------------------------------------------


def test_common_name_is_the_localpart_at_the_stream_domain():
    decision = resolve(Facts(common_name="Juliet"), verifiers=("common_name",))
    assert decision.jid == "juliet@example.org"


def test_common_name_gets_prefix_and_suffix():
    decision = resolve(
        Facts(common_name="juliet"), verifiers=("common_name",), cn_prefix="u-", cn_suffix=".x"
    )
    assert decision.jid == "u-juliet.x@example.org"


def test_common_name_with_equal_authzid_is_accepted():
    decision = resolve(Facts(common_name="juliet"), authzid="juliet@example.org", verifiers=("common_name",))
    assert decision.jid == "juliet@example.org"


def test_common_name_with_other_authzid_is_invalid_authzid():
    decision = resolve(Facts(common_name="juliet"), authzid="romeo@example.org", verifiers=("common_name",))
    assert decision.condition == INVALID_AUTHZID


def test_no_common_name_is_invalid_authzid():
    decision = resolve(Facts(), verifiers=("common_name",))
    assert decision.condition == INVALID_AUTHZID
    assert decision.reason == "certificate has no common name"


def test_common_name_that_is_no_localpart_is_invalid_authzid():
    decision = resolve(Facts(common_name="Juliet Capulet"), verifiers=("common_name",))
    assert decision.condition == INVALID_AUTHZID


# --- common_name only without xmppAddr (DESIGN §4; the seed: "when no xmppAddr is specified") ---------

CN_REFUSAL = (
    "certificate carries an xmppAddr, so its common name is not used (common_name applies only to "
    "certificates without one)"
)
HERON = Facts(xmpp_addrs=("heron@example.org", "heron-work@example.org"), common_name="heron-cn")


@pytest.mark.parametrize("verifiers", [("standard", "common_name"), ("common_name", "standard")])
def test_two_xmppaddrs_without_authzid_stay_invalid_authzid_whatever_the_place_of_common_name(verifiers):
    decision = resolve(HERON, verifiers=verifiers)
    assert decision.jid is None
    assert decision.condition == INVALID_AUTHZID
    assert decision.reason == "certificate has 2 xmppAddrs and no authzid was given"
    assert decision.verifier == "standard"


@pytest.mark.parametrize("verifiers", [("standard", "common_name"), ("common_name", "standard")])
def test_authzid_naming_the_cn_account_of_an_xmppaddr_certificate_is_invalid_authzid(verifiers):
    decision = resolve(HERON, authzid="heron-cn@example.org", verifiers=verifiers)
    assert decision.jid is None and decision.condition == INVALID_AUTHZID
    assert decision.reason.startswith("authzid 'heron-cn@example.org' is none of the certificate's xmppAddrs")


@pytest.mark.parametrize("verifiers", [("standard", "common_name"), ("common_name", "standard")])
def test_two_xmppaddrs_with_authzid_naming_one_is_that_jid_with_common_name_configured(verifiers):
    decision = resolve(HERON, authzid="heron-work@example.org", verifiers=verifiers)
    assert decision.jid == "heron-work@example.org" and decision.verifier == "standard"


def test_common_name_first_does_not_override_the_single_xmppaddr():
    facts = Facts(xmpp_addrs=("juliet@example.org",), common_name="romeo")
    decision = resolve(facts, verifiers=("common_name", "standard"))
    assert decision.jid == "juliet@example.org" and decision.verifier == "standard"


def test_common_name_alone_refuses_a_certificate_with_an_xmppaddr():
    decision = resolve(
        Facts(xmpp_addrs=("juliet@example.org",), common_name="juliet"), verifiers=("common_name",)
    )
    assert decision.jid is None
    assert decision.condition == NOT_AUTHORIZED and decision.reason == CN_REFUSAL


def test_unusable_xmppaddr_still_keeps_the_cn_out():
    facts = Facts(xmpp_addrs=("not a jid",), common_name="romeo")
    decision = resolve(facts, verifiers=("standard", "common_name"))
    assert decision.jid is None
    assert decision.condition == NOT_AUTHORIZED and decision.reason == "certificate has no usable xmppAddr"


def test_malformed_xmppaddr_entry_still_keeps_the_cn_out():
    # certauth.pki drops a non-UTF8String xmppAddr from xmpp_addrs but counts it in xmpp_addr_entries.
    facts = Facts(xmpp_addrs=(), xmpp_addr_entries=1, common_name="romeo")
    assert resolve(facts, verifiers=("common_name",)).reason == CN_REFUSAL
    decision = resolve(facts, verifiers=("standard", "common_name"))
    assert decision.jid is None and decision.condition == NOT_AUTHORIZED


@pytest.mark.parametrize("verifiers", [("standard", "common_name"), ("common_name", "standard")])
def test_certificate_without_xmppaddr_uses_its_cn_whatever_the_order(verifiers):
    decision = resolve(Facts(common_name="Heron"), verifiers=verifiers)
    assert decision.jid == "heron@example.org" and decision.verifier == "common_name"


# --- auth_id ------------------------------------------------------------------------------------


def test_auth_id_trusts_the_authzid():
    decision = resolve(Facts(), authzid="romeo@example.org", verifiers=("auth_id",))
    assert decision.jid == "romeo@example.org"


def test_auth_id_without_authzid_is_not_authorized():
    assert resolve(Facts(), verifiers=("auth_id",)).condition == NOT_AUTHORIZED


def test_auth_id_still_needs_the_stream_domain():
    decision = resolve(Facts(), authzid="romeo@other.example", verifiers=("auth_id",))
    assert decision.condition == NOT_AUTHORIZED


# --- order of verifiers -------------------------------------------------------------------------


def test_first_successful_verifier_wins():
    facts = Facts(common_name="romeo")
    decision = resolve(facts, verifiers=("common_name", "auth_id"), authzid="romeo@example.org")
    assert decision.jid == "romeo@example.org" and decision.verifier == "common_name"
    decision = resolve(facts, verifiers=("auth_id", "common_name"), authzid="romeo@example.org")
    assert decision.jid == "romeo@example.org" and decision.verifier == "auth_id"


def test_later_verifier_is_tried_when_the_first_refuses():
    decision = resolve(Facts(common_name="romeo"), verifiers=("standard", "common_name"))
    assert decision.jid == "romeo@example.org" and decision.verifier == "common_name"


def test_when_all_refuse_the_last_condition_is_returned():
    facts = Facts(xmpp_addrs=("juliet@example.org", "romeo@example.org"))
    assert resolve(facts, verifiers=("common_name", "standard")).condition == INVALID_AUTHZID
    assert resolve(Facts(), verifiers=("common_name", "standard")).condition == NOT_AUTHORIZED
    assert resolve(Facts(), verifiers=("standard", "common_name")).condition == INVALID_AUTHZID
    assert (
        resolve(Facts(common_name="a b"), verifiers=("common_name", "standard")).condition == NOT_AUTHORIZED
    )


def test_no_verifier_configured_is_not_authorized():
    assert resolve(Facts(xmpp_addrs=("juliet@example.org",)), verifiers=()).condition == NOT_AUTHORIZED


def test_refusal_is_logged_with_reason(caplog):
    caplog.set_level(logging.INFO, logger="certauth.identity")
    resolve(Facts(xmpp_addrs=("juliet@example.org", "romeo@example.org")))
    assert "certificate has 2 xmppAddrs and no authzid was given" in caplog.text
    assert "ab" * 32 in caplog.text


# --- dotted path --------------------------------------------------------------------------------


def custom_ok(facts, authzid, domain):
    return f"custom-{facts.common_name}@{domain}"


def custom_refuse(facts, authzid, domain):
    return IdentityFailure(INVALID_AUTHZID, "custom says no")


def custom_bad_jid(facts, authzid, domain):
    return "not a jid"


def custom_raises(facts, authzid, domain):
    raise RuntimeError("boom")


def test_dotted_path_verifier_returns_a_jid():
    decision = resolve(Facts(common_name="x"), verifiers=(f"{__name__}.custom_ok",))
    assert decision.jid == "custom-x@example.org"


def test_dotted_path_verifier_refusal_is_returned():
    decision = resolve(Facts(common_name="x"), verifiers=(f"{__name__}.custom_refuse",))
    assert (decision.condition, decision.reason) == (INVALID_AUTHZID, "custom says no")


def test_dotted_path_verifier_returning_no_jid_is_not_authorized():
    assert resolve(Facts(), verifiers=(f"{__name__}.custom_bad_jid",)).condition == NOT_AUTHORIZED


def test_dotted_path_verifier_that_raises_is_not_authorized_not_a_crash():
    decision = resolve(Facts(), verifiers=(f"{__name__}.custom_raises",))
    assert decision.condition == NOT_AUTHORIZED and "boom" in decision.reason


def test_check_verifiers_accepts_builtins_and_importable_paths():
    check_verifiers(["standard", "common_name", "auth_id", f"{__name__}.custom_ok"])


@pytest.mark.parametrize(
    "name", ["nonsense", "no.such.module.func", f"{__name__}.missing", f"{__name__}.HOSTED"]
)
def test_check_verifiers_refuses_unknown_names(name):
    with pytest.raises(ValueError, match="sasl_external verifier"):
        check_verifiers([name])


def test_auth_id_is_registered_for_development_only_and_the_config_loader_warns(caplog):
    """The warning moved from check_verifiers to the loader, which reads the registry's flag."""
    assert VERIFIERS["auth_id"].development_only and not VERIFIERS["standard"].development_only
    caplog.set_level(logging.WARNING, logger="xmppauth.config")
    parse_config({"auth": {"sasl_external": ["auth_id"]}}, "test.toml")
    assert 'test.toml: auth.sasl_external includes "auth_id"' in caplog.text
    assert "development only" in caplog.text
