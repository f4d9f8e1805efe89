"""certauth.authenticator with trust, revocation and auth methods (DESIGN §4, §5; XEP-0178; RFC 6120 §6.5)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from accounts.models import Account, Domain
from certauth.authenticator import CertificateAuthenticator
from certauth.configcas import sync_config_cas
from certauth.models import (
    AuthEvent,
    Certificate,
    CertificateAuthority,
    CrlSource,
    RevocationReason,
    RevokedSerial,
)
from tests.certauth.crlhelpers import add_ca_row
from tests.certs import (
    SERVER_AUTH,
    Issued,
    make_ca,
    make_client,
    make_expired,
    make_not_yet_valid,
    make_self_signed,
)
from xmppauth.config import AuthConfig, C2SListener, Config, HttpAuthOptions, TlsOptions, XmppauthOptions

pytestmark = pytest.mark.django_db

DOMAIN = "localhost"


@pytest.fixture
def ca() -> Issued:
    return make_ca("DB CA")


@pytest.fixture
def ca_row(ca) -> CertificateAuthority:
    return add_ca_row(ca, name="DB CA")


def register(issued: Issued, *, account: Account | None = None, status=Certificate.Status.ACTIVE, **extra):
    facts = issued.facts
    return Certificate.objects.create(
        serial=facts.serial,
        issuer_name=facts.issuer,
        fingerprint_sha256=facts.fingerprint_sha256,
        subject=facts.subject,
        common_name=facts.common_name or "",
        xmpp_addrs=list(facts.xmpp_addrs),
        not_before=facts.not_before,
        not_after=facts.not_after,
        account=account,
        status=status,
        source=Certificate.Source.IMPORTED,
        pem=issued.pem.decode(),
        **extra,
    )


def make_account(jid: str, *, active: bool = True) -> Account:
    local, _, domain = jid.partition("@")
    return Account.objects.create(
        localpart=local, domain=Domain.objects.get_or_create(name=domain)[0], active=active
    )


def authenticator(
    *,
    methods=("pki",),
    verify_mode="peer",
    cacertfile=None,
    http: HttpAuthOptions | None = None,
    sasl_mechanisms=("external",),
    options: XmppauthOptions | None = None,
    hosts: tuple[str, ...] = (DOMAIN,),
) -> CertificateAuthenticator:
    config = Config(
        hosts=hosts,
        auth=AuthConfig(methods=tuple(methods), sasl_mechanisms=tuple(sasl_mechanisms), http=http),
        options=options or XmppauthOptions(crl_grace_seconds=3600),
    )
    tls = TlsOptions(verify_mode=verify_mode, cacertfile=str(cacertfile) if cacertfile else None)
    return CertificateAuthenticator(config, tls, "tcp", "127.0.0.1:40000")


def login(auth: CertificateAuthenticator, issued: Issued, authzid: str | None = None, domain: str = DOMAIN):
    check = auth.check_certificate([issued.der])
    return check, auth.authenticate_external(check.facts, authzid, domain)


def last_event() -> AuthEvent:
    return AuthEvent.objects.order_by("-pk").first()


# --- chain and trust -------------------------------------------------------------------------------------


def test_certificate_from_trusted_ca_row_logs_in(ca, ca_row):
    check, result = login(authenticator(), make_client(ca, jids=["alice@localhost"]))
    assert check.verified, check.reason
    assert result.jid == "alice@localhost"
    assert result.condition is None


def test_ca_in_tls_cacertfile_is_trusted(tmp_path):
    file_ca = make_ca("File CA")
    path = tmp_path / "ca.pem"
    path.write_bytes(file_ca.pem)
    tls = TlsOptions(cacertfile=str(path))
    sync_config_cas(Config(hosts=(DOMAIN,), listen_c2s=(C2SListener(tls=tls),), source="test.toml"))
    check, result = login(authenticator(cacertfile=path), make_client(file_ca))
    assert check.verified, check.reason
    assert result.accepted


def test_ca_row_not_trusted_for_client_auth_is_not_an_anchor(ca):
    add_ca_row(ca, name="DB CA", trusted=False)
    add_ca_row(make_ca("Another CA"), name="Another CA")
    check = authenticator().check_certificate([make_client(ca).der])
    assert not check.verified
    assert check.reason == "issuer not trusted"


def test_new_trusted_ca_row_is_seen_at_the_next_check(ca):
    auth = authenticator()
    alice = make_client(ca)
    assert not auth.check_certificate([alice.der]).verified  # cached: no anchor yet
    add_ca_row(ca, name="DB CA")  # post_save invalidates this process's cache
    assert auth.check_certificate([alice.der]).verified


@pytest.mark.parametrize("mode", ["peer", "selfsigned_peer"])
def test_certificate_from_untrusted_ca_is_refused(ca_row, mode):
    stranger = make_client(make_ca("Unknown CA"))
    auth = authenticator(verify_mode=mode)
    check, result = login(auth, stranger)
    assert not check.verified
    assert check.reason == "issuer not trusted"
    assert result.condition == "not-authorized"
    assert result.jid is None


def test_self_signed_certificate_is_refused_in_peer_mode(ca_row):
    check, result = login(authenticator(verify_mode="peer"), make_self_signed(jids=["carol@localhost"]))
    assert not check.verified
    assert "self-signed" in check.reason
    assert not result.accepted


@pytest.mark.parametrize("kind", ["trusted", "self_made"])
def test_verify_mode_none_never_counts_a_certificate_as_verified(ca, ca_row, kind):
    # Issue 12 point 2: such a listener requests none; one handed over anyway is refused, fail closed.
    cert = make_client(ca) if kind == "trusted" else make_self_signed(jids=["alice@localhost"])
    check, result = login(authenticator(verify_mode="none"), cert)
    assert not check.verified
    assert check.reason == "client certificates are not requested on this listener (verify_mode none)"
    assert (result.jid, result.condition) == (None, "not-authorized")
    assert result.reason == "no verified client certificate on this connection"
    refused_at_check = AuthEvent.objects.filter(cert_fingerprint=cert.facts.fingerprint_sha256).order_by("pk")
    assert [event.reason for event in refused_at_check] == [
        "certificate refused: client certificates are not requested on this listener (verify_mode none)",
        "no verified client certificate on this connection",
    ]
    assert not Account.objects.filter(localpart="alice").exists()


def test_self_signed_certificate_logs_in_in_selfsigned_peer_mode(ca_row):
    carol = make_self_signed(jids=["carol@localhost"])
    check, result = login(authenticator(verify_mode="selfsigned_peer"), carol)
    assert check.verified, check.reason
    assert result.jid == "carol@localhost"


def test_expired_certificate_is_refused_with_its_date(ca, ca_row):
    old = make_expired(ca, days_ago=2)
    check, result = login(authenticator(), old)
    assert not check.verified
    assert check.reason == f"expired {old.cert.not_valid_after_utc:%Y-%m-%d}"
    assert not result.accepted


def test_not_yet_valid_certificate_is_refused(ca, ca_row):
    check = authenticator().check_certificate([make_not_yet_valid(ca).der])
    assert not check.verified
    assert check.reason.startswith("not yet valid")


def test_server_auth_only_certificate_is_refused(ca, ca_row):
    check = authenticator().check_certificate([make_client(ca, ekus=[SERVER_AUTH]).der])
    assert not check.verified
    assert check.reason == "extended key usage lacks clientAuth"


def test_a_trusted_ca_certificate_presented_as_the_login_is_refused_and_recorded(ca, ca_row):
    """The leaf's cA flag is read from its facts (certauth.pki.cert_facts); the trusted CA's own certificate,
    whose chain would verify, is no client certificate. Its neighbour, a leaf that CA issued, logs in."""
    from certauth.verify import REASON_CA_AS_CLIENT

    check = authenticator().check_certificate([ca.der])
    assert (check.verified, check.reason) == (False, REASON_CA_AS_CLIENT)
    event = last_event()
    assert event.outcome == AuthEvent.Outcome.FAILURE and REASON_CA_AS_CLIENT in event.reason
    assert event.cert_fingerprint == check.facts.fingerprint_sha256
    check, result = login(authenticator(), make_client(ca, jids=[f"alice@{DOMAIN}"]))
    assert check.verified and result.jid == f"alice@{DOMAIN}", (check.reason, result)


def test_certificate_without_eku_logs_in(ca, ca_row):
    check, result = login(authenticator(), make_client(ca, ekus=[]))
    assert check.verified, check.reason
    assert result.accepted


def test_pem_chain_with_root_is_accepted(ca, ca_row):
    alice = make_client(ca)
    check = authenticator().check_certificate([alice.pem + ca.pem])
    assert check.verified, check.reason


def test_garbage_instead_of_a_certificate_is_refused_not_raised(ca_row):
    check = authenticator().check_certificate([b"\x30\x03\x02\x01\x00"])
    assert not check.verified
    assert "cannot be parsed" in check.reason


def test_no_certificate_is_not_verified_and_external_is_refused():
    auth = authenticator()
    check = auth.check_certificate([])
    assert not check.verified
    result = auth.authenticate_external(None, None, DOMAIN)
    assert result.condition == "not-authorized"


# Whether EXTERNAL is offered is the core's one decision (transport.xmpp.mechanisms), tested where clients
# see it (tests/transport/test_offered_mechanisms.py); here: an EXTERNAL sent anyway is refused.


def test_external_sent_anyway_when_no_method_supports_it_is_not_authorized(ca, ca_row):
    auth = authenticator(methods=("rdbms",))
    auth.check_certificate([make_client(ca).der])
    _, result = login(auth, make_client(ca))
    assert result.condition == "not-authorized"
    assert "no configured auth method supports SASL EXTERNAL" in result.reason


def test_facts_of_another_certificate_than_the_checked_one_are_refused(ca, ca_row):
    auth = authenticator()
    auth.check_certificate([make_client(ca, jids=["alice@localhost"]).der])
    other = make_client(ca, jids=["mallory@localhost"])
    result = auth.authenticate_external(other.facts, None, DOMAIN)
    assert result.condition == "not-authorized"
    assert result.reason == "no verified client certificate on this connection"


# --- revocation ------------------------------------------------------------------------------------------


def test_certificate_revoked_in_our_database_is_refused_with_date_and_reason(ca, ca_row):
    alice = make_client(ca)
    register(
        alice,
        status=Certificate.Status.REVOKED,
        revoked_at=datetime(2026, 11, 2, 10, 0, tzinfo=UTC),
        revocation_reason=RevocationReason.KEY_COMPROMISE,
    )
    check, result = login(authenticator(), alice)
    assert not check.verified
    assert check.reason == "revoked 2026-11-02 keyCompromise"
    assert not result.accepted


def test_certificate_on_hold_is_refused(ca, ca_row):
    alice = make_client(ca)
    register(alice, status=Certificate.Status.ON_HOLD, revoked_at=datetime(2026, 10, 1, tzinfo=UTC))
    check = authenticator().check_certificate([alice.der])
    assert not check.verified
    assert check.reason == "on hold since 2026-10-01"


def test_active_registered_certificate_is_not_revoked(ca, ca_row):
    alice = make_client(ca)
    register(alice)
    assert authenticator().check_certificate([alice.der]).verified


def test_serial_listed_in_the_issuers_crl_is_refused(ca, ca_row):
    alice = make_client(ca, serial=0xABC123)
    source = CrlSource.objects.create(
        ca=ca_row, kind=CrlSource.Kind.OPERATOR_URL, location="http://crl.test/ca.crl"
    )
    RevokedSerial.objects.create(
        source=source,
        ca=ca_row,
        serial="abc123",
        revoked_at=datetime(2026, 9, 3, tzinfo=UTC),
        reason=RevocationReason.SUPERSEDED,
    )
    check = authenticator().check_certificate([alice.der])
    assert not check.verified
    assert check.reason == "revoked 2026-09-03 superseded (CRL http://crl.test/ca.crl)"


def test_same_serial_revoked_by_another_ca_does_not_refuse(ca, ca_row):
    other_row = add_ca_row(make_ca("Other CA"), name="Other CA")
    source = CrlSource.objects.create(ca=other_row, kind=CrlSource.Kind.OPERATOR_URL, location="http://o/crl")
    RevokedSerial.objects.create(source=source, ca=other_row, serial="abc123", revoked_at=datetime.now(UTC))
    assert authenticator().check_certificate([make_client(ca, serial=0xABC123).der]).verified


def test_revocation_after_the_handshake_refuses_external(ca, ca_row):
    auth = authenticator()
    alice = make_client(ca)
    check = auth.check_certificate([alice.der])
    assert check.verified
    register(
        alice,
        status=Certificate.Status.REVOKED,
        revoked_at=datetime(2026, 11, 2, tzinfo=UTC),
        revocation_reason=RevocationReason.KEY_COMPROMISE,
    )
    result = auth.authenticate_external(check.facts, None, DOMAIN)
    assert result.condition == "not-authorized"
    assert result.reason == "certificate revoked 2026-11-02 keyCompromise"


def crl_source(ca_row, *, next_update, location="http://crl.test/ca.crl", fail_open=False) -> CrlSource:
    return CrlSource.objects.create(
        ca=ca_row,
        kind=CrlSource.Kind.DISTRIBUTION_POINT,
        location=location,
        state=CrlSource.State.OK if next_update else CrlSource.State.NEVER,
        next_update=next_update,
        fail_open=fail_open,
    )


def test_crl_past_next_update_and_grace_refuses_its_cas_certificates(ca, ca_row):
    crl_source(ca_row, next_update=datetime.now(UTC) - timedelta(hours=2))  # grace is 1 h
    check = authenticator().check_certificate([make_client(ca).der])
    assert not check.verified
    assert check.reason.startswith("revocation status unknown: CRL http://crl.test/ca.crl outdated since")


def test_crl_past_next_update_within_grace_still_accepts(ca, ca_row):
    crl_source(ca_row, next_update=datetime.now(UTC) - timedelta(minutes=30))
    assert authenticator().check_certificate([make_client(ca).der]).verified


def test_one_fresh_crl_source_is_enough(ca, ca_row):
    crl_source(ca_row, next_update=datetime.now(UTC) - timedelta(days=2), location="http://old/crl")
    crl_source(ca_row, next_update=datetime.now(UTC) + timedelta(days=2), location="http://new/crl")
    assert authenticator().check_certificate([make_client(ca).der]).verified


def test_stale_crl_source_marked_fail_open_accepts(ca, ca_row):
    crl_source(ca_row, next_update=datetime.now(UTC) - timedelta(days=2), fail_open=True)
    assert authenticator().check_certificate([make_client(ca).der]).verified


def test_stale_crl_accepts_when_the_config_chose_fail_open(ca, ca_row):
    crl_source(ca_row, next_update=datetime.now(UTC) - timedelta(days=2))
    auth = authenticator(options=XmppauthOptions(crl_fail_open=True))
    assert auth.check_certificate([make_client(ca).der]).verified


def test_crl_source_never_fetched_does_not_refuse(ca, ca_row):
    crl_source(ca_row, next_update=None)
    assert authenticator().check_certificate([make_client(ca).der]).verified


def test_stale_crl_of_another_ca_does_not_refuse(ca, ca_row):
    other_row = add_ca_row(make_ca("Other CA"), name="Other CA")
    crl_source(other_row, next_update=datetime.now(UTC) - timedelta(days=2))
    assert authenticator().check_certificate([make_client(ca).der]).verified


# --- identity rules are applied --------------------------------------------------------------------------


def test_identity_refusal_carries_its_condition(ca, ca_row):
    _, result = login(authenticator(), make_client(ca, jids=["alice@localhost"]), authzid="bob@localhost")
    assert result.condition == "invalid-authzid"


def test_jid_outside_hosted_domains_is_not_authorized(ca, ca_row):
    _, result = login(authenticator(), make_client(ca, jids=["alice@elsewhere.test"]))
    assert result.condition == "not-authorized"


def test_enabled_domain_row_for_a_host_the_config_does_not_list_is_not_hosted(ca, ca_row):
    """Issue 13 §3: config hosts minus disabled rows (accounts.domains); a row alone hosts nothing."""
    Domain.objects.create(name="chat.test")
    _, result = login(authenticator(), make_client(ca, jids=["alice@chat.test"]), domain="chat.test")
    assert result.condition == "not-authorized"
    assert "is not in a domain we host" in last_event().reason


def test_enabled_domain_row_for_a_config_host_is_hosted(ca, ca_row):
    Domain.objects.create(name="chat.test")
    auth = authenticator(hosts=(DOMAIN, "chat.test"))
    _, result = login(auth, make_client(ca, jids=["alice@chat.test"]), domain="chat.test")
    assert result.jid == "alice@chat.test"


def test_disabled_domain_row_is_not_hosted(ca, ca_row):
    Domain.objects.create(name="chat.test", enabled=False)
    _, result = login(authenticator(), make_client(ca, jids=["alice@chat.test"]), domain="chat.test")
    assert result.condition == "not-authorized"


def test_domain_rows_exist_for_config_hosts(ca, ca_row):
    login(authenticator(), make_client(ca))
    assert Domain.objects.filter(name=DOMAIN).exists()


# --- pki method ------------------------------------------------------------------------------------------


def test_pki_creates_the_account_on_first_login(ca, ca_row):
    assert not Account.objects.filter(localpart="dora").exists()
    _, result = login(authenticator(methods=["pki"]), make_client(ca, jids=["dora@localhost"]))
    assert result.jid == "dora@localhost"
    account = Account.objects.by_jid("dora@localhost")
    assert account.created_by == Account.Origin.FIRST_LOGIN
    assert account.active


def test_pki_logs_in_an_existing_active_account_without_changing_it(ca, ca_row):
    make_account("erin@localhost")
    _, result = login(authenticator(methods=["pki"]), make_client(ca, jids=["erin@localhost"]))
    assert result.accepted
    assert Account.objects.by_jid("erin@localhost").created_by == Account.Origin.ADMIN


def test_pki_refuses_an_inactive_account(ca, ca_row):
    make_account("frank@localhost", active=False)
    _, result = login(authenticator(methods=["pki"]), make_client(ca, jids=["frank@localhost"]))
    assert result.condition == "not-authorized"
    assert "account frank@localhost is disabled" in result.reason


def test_pki_refuses_an_account_disabled_after_its_first_login(ca, ca_row):
    gina = make_client(ca, jids=["gina@localhost"])
    assert login(authenticator(methods=["pki"]), gina)[1].accepted
    account = Account.objects.by_jid("gina@localhost")
    account.active = False
    account.save()
    _, result = login(authenticator(methods=["pki"]), gina)
    assert result.condition == "not-authorized"
    assert "account gina@localhost is disabled" in result.reason


def test_pki_same_localpart_disabled_in_another_domain_does_not_count(ca, ca_row):
    Domain.objects.create(name="other.test")
    make_account("hugo@other.test", active=False)
    _, result = login(authenticator(methods=["pki"]), make_client(ca, jids=["hugo@localhost"]))
    assert result.jid == "hugo@localhost"
    assert Account.objects.by_jid("hugo@localhost").active


def test_inactive_account_is_not_rescued_by_a_later_method(ca, ca_row):
    make_account("frank@localhost", active=False)
    alice = make_client(ca, jids=["frank@localhost"])
    _, result = login(authenticator(methods=["pki", "db"]), alice)
    assert not result.accepted
    assert "db:" not in result.reason


# --- db method -------------------------------------------------------------------------------------------


def test_db_accepts_a_certificate_registered_to_the_active_account(ca, ca_row):
    alice = make_client(ca, jids=["alice@localhost"])
    register(alice, account=make_account("alice@localhost"))
    _, result = login(authenticator(methods=["db"]), alice)
    assert result.jid == "alice@localhost"


def test_db_refuses_an_unregistered_certificate(ca, ca_row):
    make_account("alice@localhost")
    _, result = login(authenticator(methods=["db"]), make_client(ca, jids=["alice@localhost"]))
    assert result.condition == "not-authorized"
    assert "not registered" in result.reason


def test_db_refuses_a_certificate_registered_to_another_account(ca, ca_row):
    alice = make_client(ca, jids=["alice@localhost"])
    register(alice, account=make_account("bob@localhost"))
    _, result = login(authenticator(methods=["db"]), alice)
    assert not result.accepted
    assert "belongs to bob@localhost" in result.reason


def test_db_refuses_when_the_account_is_inactive(ca, ca_row):
    alice = make_client(ca, jids=["alice@localhost"])
    register(alice, account=make_account("alice@localhost", active=False))
    _, result = login(authenticator(methods=["db"]), alice)
    assert not result.accepted
    assert "disabled" in result.reason


def test_db_does_not_create_accounts(ca, ca_row):
    login(authenticator(methods=["db"]), make_client(ca, jids=["ghost@localhost"]))
    assert not Account.objects.filter(localpart="ghost").exists()


def test_methods_are_tried_in_order_first_acceptance_wins(ca, ca_row):
    _, result = login(authenticator(methods=["db", "pki"]), make_client(ca, jids=["hank@localhost"]))
    assert result.jid == "hank@localhost"
    assert result.reason.startswith("pki:")


# --- http method (MongooseIM get_certs) -------------------------------------------------------------------


class _CertService:
    """A local auth service on 127.0.0.1: answers get_certs with ``body`` and records the queries."""

    def __init__(self) -> None:
        self.body = b""
        self.status = 200
        self.queries: list[dict] = []
        self.auth_headers: list[str | None] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                parts = urlsplit(self.path)
                service.queries.append({"path": parts.path, **parse_qs(parts.query, keep_blank_values=True)})
                service.auth_headers.append(self.headers.get("Authorization"))
                self.send_response(service.status)
                self.send_header("Content-Length", str(len(service.body)))
                self.end_headers()
                self.wfile.write(service.body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def options(self) -> HttpAuthOptions:
        host, port = self.server.server_address[:2]
        return HttpAuthOptions(host=f"http://{host}:{port}", path_prefix="/auth/", basic_auth="xmpp:s3cret")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def cert_service():
    service = _CertService()
    yield service
    service.close()


def test_http_accepts_when_the_service_lists_the_same_certificate(ca, ca_row, cert_service):
    alice = make_client(ca, jids=["alice@localhost"])
    cert_service.body = make_client(ca).pem + alice.pem  # the user's certificates, one after another
    _, result = login(authenticator(methods=["http"], http=cert_service.options), alice)
    assert result.jid == "alice@localhost"
    query = cert_service.queries[-1]
    assert query == {"path": "/auth/get_certs", "user": ["alice"], "server": ["localhost"], "pass": [""]}
    assert cert_service.auth_headers[-1] == "Basic eG1wcDpzM2NyZXQ="


def test_http_refuses_an_account_disabled_here_even_when_the_service_lists_the_certificate(
    ca, ca_row, cert_service
):
    alice = make_client(ca, jids=["alice@localhost"])
    cert_service.body = alice.pem
    make_account("alice@localhost", active=False)
    _, result = login(authenticator(methods=["http", "pki"], http=cert_service.options), alice)
    assert result.condition == "not-authorized"
    assert "http: account alice@localhost is disabled" in result.reason and "pki:" not in result.reason
    assert cert_service.queries == []  # refused before asking the service
    Account.objects.filter(localpart="alice").update(active=True)  # enabled again: the service decides
    _, result = login(authenticator(methods=["http"], http=cert_service.options), alice)
    assert result.jid == "alice@localhost"


def test_http_refuses_a_byte_different_certificate(ca, ca_row, cert_service):
    alice = make_client(ca, jids=["alice@localhost"])
    # Same CA, names and serial, another key: a different certificate that merely looks alike.
    twin = make_client(ca, jids=["alice@localhost"], serial=alice.cert.serial_number)
    assert twin.der != alice.der
    cert_service.body = twin.pem
    _, result = login(authenticator(methods=["http"], http=cert_service.options), alice)
    assert result.condition == "not-authorized"
    assert "not among the 1 listed" in result.reason


def test_http_refuses_when_the_service_answers_not_found(ca, ca_row, cert_service):
    alice = make_client(ca)
    cert_service.body, cert_service.status = alice.pem, 404
    _, result = login(authenticator(methods=["http"], http=cert_service.options), alice)
    assert not result.accepted
    assert "HTTP 404" in result.reason


def test_http_refuses_when_the_service_is_unreachable(ca, ca_row, cert_service):
    options = cert_service.options
    cert_service.close()
    cert_service.close = lambda: None
    _, result = login(authenticator(methods=["http"], http=options), make_client(ca))
    assert not result.accepted
    assert "unreachable" in result.reason


def test_http_refuses_an_empty_answer(ca, ca_row, cert_service):
    _, result = login(authenticator(methods=["http"], http=cert_service.options), make_client(ca))
    assert not result.accepted
    assert "lists no certificate" in result.reason


# --- the event log ---------------------------------------------------------------------------------------


def test_success_writes_an_auth_event(ca, ca_row):
    alice = make_client(ca, jids=["alice@localhost"])
    login(authenticator(), alice, authzid="alice@localhost")
    event = last_event()
    assert event.outcome == AuthEvent.Outcome.SUCCESS
    assert event.transport == "tcp"
    assert event.peer == "127.0.0.1:40000"
    assert event.cert_fingerprint == alice.facts.fingerprint_sha256
    assert event.cert_subject == alice.facts.subject
    assert event.jid_requested == "alice@localhost"
    assert event.jid_granted == "alice@localhost"
    assert event.condition == ""
    assert event.reason.startswith("pki:")


def test_refusal_writes_an_auth_event_with_condition_and_reason(ca, ca_row):
    login(authenticator(), make_client(ca, jids=["alice@localhost"]), authzid="bob@localhost")
    event = last_event()
    assert event.outcome == AuthEvent.Outcome.FAILURE
    assert event.condition == "invalid-authzid"
    assert event.jid_requested == "bob@localhost"
    assert event.jid_granted == ""
    assert event.reason


def test_certificate_refused_at_the_handshake_writes_an_auth_event(ca_row):
    stranger = make_client(make_ca("Unknown CA"))
    authenticator().check_certificate([stranger.der])
    event = last_event()
    assert event.outcome == AuthEvent.Outcome.FAILURE
    assert event.cert_fingerprint == stranger.facts.fingerprint_sha256
    assert event.reason == "certificate refused: issuer not trusted"


def test_every_external_attempt_writes_one_event(ca, ca_row):
    auth = authenticator()
    check = auth.check_certificate([make_client(ca).der])
    before = AuthEvent.objects.count()
    auth.authenticate_external(check.facts, None, DOMAIN)
    auth.authenticate_external(check.facts, "nobody@localhost", DOMAIN)
    assert AuthEvent.objects.count() == before + 2


# --- one normalised name (issue 12 §4, RFC 7622 §3.2-3.3) ---------------------------------------------------


def test_a_domain_row_disabled_in_the_admin_refuses_logins_even_for_a_config_host(ca, ca_row):
    _, before = login(authenticator(), make_client(ca, jids=["alice@localhost"]))
    assert before.jid == "alice@localhost"
    row = Domain.objects.get(name=DOMAIN)
    row.enabled = False
    row.save()  # as the admin does: post_save forgets this process's cached disabled names at once
    _, after = login(authenticator(), make_client(ca, jids=["alice@localhost"]))
    assert after.condition == "not-authorized"
    assert "is not in a domain we host" in last_event().reason


def test_an_account_disabled_as_typed_with_capitals_stays_disabled_for_its_lower_case_login(ca, ca_row):
    localhost = Domain.objects.get_or_create(name=DOMAIN)[0]
    Account.objects.create(localpart="Dave", domain=localhost, active=False)
    _, result = login(authenticator(methods=["pki"]), make_client(ca, jids=["dave@localhost"]))
    assert result.condition == "not-authorized"
    assert list(Account.objects.values_list("localpart", "active")) == [("dave", False)]  # no second "dave"


def test_a_certificate_naming_a_look_alike_of_an_account_is_not_that_account(ca, ca_row):
    make_account("fiona@localhost")
    _, result = login(authenticator(methods=["pki"]), make_client(ca, jids=["\ufb01ona@localhost"]))
    assert result.jid is None  # the ligature is no PRECIS username: no account, and not fiona's
    assert not Account.objects.exclude(localpart="fiona").exists()
