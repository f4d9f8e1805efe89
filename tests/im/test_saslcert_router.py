"""XEP-0257 through the IM router: requests reach certauth.selfservice, answers carry who uses which
certificate (§2.2 <users/>), malformed requests get bad-request. The end-to-end flows with slixmpp are in
tests/transport/test_tcp_saslcert.py."""

from __future__ import annotations

import base64
from xml.etree.ElementTree import fromstring

import pytest
from django.utils import timezone

from accounts.models import Account, Domain
from certauth import services
from tests.certs import make_self_signed
from transport.im.router import Router, load
from transport.sessions.models import LiveSession
from transport.sessions.terminations import SessionFacts

pytestmark = pytest.mark.django_db

SASLCERT = "urn:xmpp:saslcert:1"


@pytest.fixture
def alice() -> Account:
    domain, _ = Domain.objects.get_or_create(name="localhost")
    return Account.objects.create(localpart="alice", domain=domain)


def ask(payload: str, kind: str = "get", to: str = "", session: object = None) -> object:
    address = f" to='{to}'" if to else ""
    iq = fromstring(
        f"<iq xmlns='jabber:client' type='{kind}' id='q' from='alice@localhost/phone'{address}>{payload}</iq>"
    )
    ((channel, message),) = Router(final=True).from_client(iq, "sender-channel", session)
    assert channel == "sender-channel"
    return load(message["xml"])


def test_the_list_names_the_resources_logged_in_with_each_certificate(alice):
    phone, laptop = make_self_signed(jids=["alice@localhost"]), make_self_signed(jids=["alice@localhost"])
    for name, issued in (("Phone", phone), ("Laptop", laptop)):
        row = services.record_certificate(issued.cert, source="user", account=alice, issuer=None)
        row.label = name
        row.save()
    now = timezone.now()
    LiveSession.objects.create(
        full_jid="alice@localhost/phone",
        bare_jid="alice@localhost",
        resource="phone",
        transport="tcp",
        cert_fingerprint=phone.facts.fingerprint_sha256,
        process_id="test",
        started_at=now,
        lease_expires_at=now,
    )
    for to in ("", "alice@localhost", "localhost"):  # no 'to', the account, the server
        reply = ask(f"<items xmlns='{SASLCERT}'/>", to=to)
        assert reply.get("type") == "result"
        items = {item.findtext(f"{{{SASLCERT}}}name"): item for item in reply.iter(f"{{{SASLCERT}}}item")}
        assert set(items) == {"Phone", "Laptop"}
        assert base64.b64decode(items["Phone"].findtext(f"{{{SASLCERT}}}x509cert")) == phone.der
        assert [r.text for r in items["Phone"].iter(f"{{{SASLCERT}}}resource")] == ["phone"]
        assert list(items["Laptop"].iter(f"{{{SASLCERT}}}resource")) == []


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (f"<append xmlns='{SASLCERT}'><x509cert>AAAA</x509cert></append>", "set"),  # no name
        (f"<append xmlns='{SASLCERT}'><name>x</name><x509cert>not base64!</x509cert></append>", "set"),
        (f"<append xmlns='{SASLCERT}'><name>x</name></append>", "set"),  # nothing to add
        (f"<items xmlns='{SASLCERT}'/>", "set"),  # a list is a get
        (f"<revoke xmlns='{SASLCERT}'/>", "set"),
    ],
)
def test_malformed_requests_are_bad_request(alice, payload, kind):
    reply = ask(payload, kind)
    assert reply.get("type") == "error"
    assert reply.find("{jabber:client}error/{urn:ietf:params:xml:ns:xmpp-stanzas}bad-request") is not None


def test_another_users_account_is_not_addressed_here(alice):
    reply = ask(f"<items xmlns='{SASLCERT}'/>", to="bob@localhost")
    assert reply.get("type") == "error"  # not alice's certificates: bob's account answers (or nobody)
    assert reply.find(f"{{{SASLCERT}}}items") is None


@pytest.mark.parametrize(
    ("common_name", "condition"),
    [
        ("alice", None),
        ("alice@localhost", None),
        ("bob", "not-acceptable"),
        ("bob@localhost", "not-acceptable"),
    ],
)
def test_without_xmppaddr_only_a_common_name_of_this_account_may_be_added(alice, common_name, condition):
    """XEP-0257 §3: the certificate must name the account; without an xmppAddr its CN must be the JID or
    the localpart (what the common_name verifier could map to it), never another user's."""
    added = make_self_signed(jids=(), common_name=common_name)
    der = base64.b64encode(added.der).decode()
    payload = f"<append xmlns='{SASLCERT}'><name>n</name><x509cert>{der}</x509cert></append>"
    session = SessionFacts(full_jid="alice@localhost/phone", transport="tcp", cert_fingerprint="")
    reply = ask(payload, "set", session=session)
    if condition is None:
        assert reply.get("type") == "result", reply
    else:
        assert reply.get("type") == "error"
        assert (
            reply.find(f"{{jabber:client}}error/{{urn:ietf:params:xml:ns:xmpp-stanzas}}{condition}")
            is not None
        )
