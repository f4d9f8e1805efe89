"""XEP-0257 end to end over TCP: a logged-in user manages their own certificates with slixmpp's xep_0257
plugin, and the certificates behave as the user said: added → logs in, disabled → refused, revoked → its
live session ends. Specs: XEP-0257 §2-§3, RFC 5280 §5.3.1, issue 15 point 3.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import slixmpp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from accounts.models import Account, Domain
from accounts.passwords import set_password
from certauth import services
from certauth.models import AuthEvent, Certificate
from tests.certs import Issued, make_self_signed
from tests.transport.test_bind_recheck import watcher  # noqa: F401 (the termination watcher fixture)
from tests.transport.tlsclient import client_context
from tests.transport.xmppclient import run_until_finished, slixmpp_login
from xmppauth.config import AuthConfig, PasswordOptions

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "alice manages her certificates"
AUTH = AuthConfig(
    methods=("rdbms", "pki"),
    sasl_mechanisms=("plain", "external"),
    password=PasswordOptions(hashes=("sha256",), scram_iterations=4096),
)


@dataclass
class Client:
    """One slixmpp session that runs ``action`` after binding and records how it ended."""

    bound: str | None = None
    result: Any = None
    error: BaseException | None = None
    stream_error: str | None = None
    events: list[str] = field(default_factory=list)


def run_client(
    port: int,
    directory: Path,
    certificate: Issued | None,
    action: Callable[[slixmpp.ClientXMPP], Awaitable[Any]] | None = None,
    *,
    password: str = "",
    stay: threading.Event | None = None,
    bound_event: threading.Event | None = None,
    timeout: float = 30,
) -> Client:
    """Log in (EXTERNAL with ``certificate``, else PLAIN with ``password``), run ``action``; with ``stay``,
    keep the session until the server ends it or ``stay`` is set."""
    loop = asyncio.new_event_loop()
    outcome = Client()
    xmpp = slixmpp.ClientXMPP("alice@localhost", password, loop=loop)
    xmpp.register_plugin("xep_0030")
    xmpp.register_plugin("xep_0257")
    xmpp.plugin["feature_mechanisms"].use_mech = "EXTERNAL" if certificate is not None else "PLAIN"
    xmpp.ssl_context = client_context(directory, certificate)
    xmpp.enable_direct_tls, xmpp.enable_starttls, xmpp.enable_plaintext = False, True, False
    finished: asyncio.Future = loop.create_future()

    def finish(_: object = None) -> None:
        if not finished.done():
            finished.set_result(None)

    async def on_start(_: object) -> None:
        outcome.events.append("session_start")
        outcome.bound = str(xmpp.boundjid)
        if bound_event is not None:
            bound_event.set()
        try:
            if action is not None:
                outcome.result = await action(xmpp)
        except Exception as exc:  # an IqError is the server's answer: the test reads it
            outcome.error = exc
        if stay is None:
            xmpp.disconnect()
            return
        while not stay.is_set() and not finished.done():
            await asyncio.sleep(0.05)
        xmpp.disconnect()

    def on_stream_error(error: Any) -> None:
        outcome.stream_error = error["condition"]

    xmpp.add_event_handler("session_start", on_start)
    xmpp.add_event_handler("stream_error", on_stream_error)
    xmpp.add_event_handler("failed_auth", lambda s: outcome.events.append(f"failed_auth:{s['condition']}"))
    xmpp.add_event_handler("failed_all_auth", finish)
    xmpp.add_event_handler("disconnected", finish)
    xmpp.add_event_handler("connection_failed", finish)
    if not run_until_finished(xmpp, loop, finished, port, timeout):
        outcome.events.append("timeout")
    return outcome


def certs(xmpp: slixmpp.ClientXMPP) -> Any:
    """slixmpp's XEP-0257 plugin."""
    return xmpp.plugin["xep_0257"]


def b64(issued: Issued) -> str:
    return base64.b64encode(issued.der).decode()


def condition_of(client: Client) -> str | None:
    error = client.error
    return error.iq["error"]["condition"] if isinstance(error, slixmpp.exceptions.IqError) else None


@pytest.fixture
def alice(db) -> Account:
    domain, _ = Domain.objects.get_or_create(name="localhost")
    account = Account.objects.create(localpart="alice", domain=domain)
    set_password(account, PASSWORD, AUTH.password, validate=False)
    return account


@pytest.fixture
def listener(c2s) -> int:
    return c2s("starttls", auth=AUTH, verify_mode="selfsigned_peer", disconnect_on_failure=False, routed=True)


def add(port: int, tmp_path: Path, name: str, cert: Issued, **options: Any) -> Client:
    return run_client(
        port,
        tmp_path,
        None,
        lambda xmpp: certs(xmpp).add_cert(name, b64(cert), **options),
        password=PASSWORD,
    )


def login(port: int, tmp_path: Path, cert: Issued) -> Any:
    return slixmpp_login(port, tmp_path, cert)


def test_an_added_self_signed_certificate_logs_in_and_another_does_not(listener, tmp_path, alice):
    phone = make_self_signed(jids=["alice@localhost"])
    added = add(listener, tmp_path, "Phone", phone)
    assert added.bound is not None and added.error is None, added
    assert login(listener, tmp_path, phone).bound_jid.startswith("alice@localhost/")
    tablet = make_self_signed(jids=["alice@localhost"])  # never added: the account holds a pin now
    refused = login(listener, tmp_path, tablet)
    assert refused.bound_jid is None and refused.sasl_failures == ["not-authorized"], refused
    listed = run_client(listener, tmp_path, phone, lambda xmpp: certs(xmpp).get_certs())
    assert listed.error is None and listed.result is not None, listed
    ((name, cert, users),) = listed.result
    assert name == "Phone" and base64.b64decode(cert) == phone.der
    # <users/> comes from the session registry, which this in-process listener does not persist
    # (tests/im/test_saslcert_router.py shows the resource listed from a registry row).
    assert set(users) <= {listed.bound.split("/")[1]}
    event = AuthEvent.objects.filter(reason__contains="XEP-0257: certificate 'Phone' added").get()
    assert event.jid_granted == "alice@localhost" and event.cert_fingerprint == phone.facts.fingerprint_sha256


def test_a_name_used_twice_a_foreign_jid_and_an_unknown_ca_are_refused(listener, tmp_path, alice, pki):
    assert add(listener, tmp_path, "Phone", make_self_signed(jids=["alice@localhost"])).error is None
    twice = add(listener, tmp_path, "Phone", make_self_signed(jids=["alice@localhost"]))
    assert condition_of(twice) == "conflict"
    bobs = add(listener, tmp_path, "Bob's", make_self_signed(jids=["bob@localhost"]))
    assert condition_of(bobs) == "not-acceptable"
    foreign = add(listener, tmp_path, "Foreign", pki.untrusted)  # issued by a CA we do not know
    assert condition_of(foreign) == "not-acceptable"
    assert not Certificate.objects.filter(label__in=["Bob's", "Foreign"]).exists()
    assert AuthEvent.objects.filter(outcome=AuthEvent.Outcome.FAILURE, condition="conflict").exists()


def test_a_disabled_certificate_is_refused_and_its_live_session_stays(listener, tmp_path, alice):
    phone = make_self_signed(jids=["alice@localhost"])
    assert add(listener, tmp_path, "Phone", phone).error is None
    stay, bound = threading.Event(), threading.Event()
    holder: dict[str, Client] = {}
    thread = threading.Thread(
        target=lambda: holder.update(c=run_client(listener, tmp_path, phone, stay=stay, bound_event=bound))
    )
    thread.start()
    assert bound.wait(30)
    disabled = run_client(
        listener, tmp_path, None, lambda xmpp: certs(xmpp).disable_cert("Phone"), password=PASSWORD
    )
    assert disabled.error is None, disabled
    refused = login(listener, tmp_path, phone)
    # On hold: refused at the handshake already, so EXTERNAL is not even offered to it.
    assert refused.bound_jid is None and refused.no_usable_mechanism, refused
    assert "hold" in AuthEvent.objects.filter(cert_fingerprint=phone.facts.fingerprint_sha256).first().reason
    stay.set()
    thread.join(30)
    assert holder["c"].stream_error is None  # XEP-0257 §2.3: disabling does not end the session
    assert Certificate.objects.get(label="Phone").status == Certificate.Status.ON_HOLD


@pytest.mark.usefixtures("watcher")
def test_a_revoked_certificate_ends_its_session(listener, tmp_path, alice):
    laptop = make_self_signed(jids=["alice@localhost"])
    assert add(listener, tmp_path, "Laptop", laptop).error is None
    bound = threading.Event()
    holder: dict[str, Client] = {}
    thread = threading.Thread(
        target=lambda: holder.update(
            c=run_client(listener, tmp_path, laptop, stay=threading.Event(), bound_event=bound, timeout=60)
        )
    )
    thread.start()
    assert bound.wait(30)
    revoked = run_client(
        listener, tmp_path, None, lambda xmpp: certs(xmpp).revoke_cert("Laptop"), password=PASSWORD
    )
    assert revoked.error is None, revoked
    thread.join(60)
    assert holder["c"].stream_error == "reset", holder["c"]  # RFC 6120 §4.9.3.16
    refused = login(listener, tmp_path, laptop)
    assert refused.bound_jid is None and refused.no_usable_mechanism, refused
    assert Certificate.objects.get(label="Laptop").status == Certificate.Status.REVOKED


def test_no_cert_management_session_may_list_only(listener, tmp_path, alice):
    bot = make_self_signed(jids=["alice@localhost"])
    assert add(listener, tmp_path, "Bot", bot, allow_management=False).error is None
    listed = run_client(listener, tmp_path, bot, lambda xmpp: certs(xmpp).get_certs())
    assert listed.error is None and {name for name, _, _ in listed.result} == {"Bot"}
    other = make_self_signed(jids=["alice@localhost"])
    refused = run_client(listener, tmp_path, bot, lambda xmpp: certs(xmpp).add_cert("Other", b64(other)))
    assert condition_of(refused) == "forbidden"
    revoke = run_client(listener, tmp_path, bot, lambda xmpp: certs(xmpp).revoke_cert("Bot"))
    assert condition_of(revoke) == "forbidden"


def test_the_admin_turns_it_off_per_domain(listener, tmp_path, alice):
    Domain.objects.filter(name="localhost").update(certificate_self_service=False)
    listed = run_client(listener, tmp_path, None, lambda xmpp: certs(xmpp).get_certs(), password=PASSWORD)
    assert condition_of(listed) == "not-allowed"
    assert (
        condition_of(add(listener, tmp_path, "Phone", make_self_signed(jids=["alice@localhost"])))
        == "not-allowed"
    )


def _csr_request(key: ec.EllipticCurvePrivateKey) -> str:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice's tablet")]))
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(csr.public_bytes(serialization.Encoding.DER)).decode()


async def _append_csr(xmpp: slixmpp.ClientXMPP, csr_b64: str) -> slixmpp.Iq:
    iq = xmpp.make_iq_set(
        slixmpp.xmlstream.ET.fromstring(
            "<append xmlns='urn:xmpp:saslcert:1'><name>Tablet</name>"
            f"<csr xmlns='urn:xmppauth:saslcert-csr:0'>{csr_b64}</csr></append>"
        )
    )
    return await iq.send()


def test_a_csr_is_signed_only_where_the_admin_allows_it(listener, tmp_path, alice):
    services.create_ca("our CA")
    key = ec.generate_private_key(ec.SECP256R1())
    refused = run_client(
        listener, tmp_path, None, lambda xmpp: _append_csr(xmpp, _csr_request(key)), password=PASSWORD
    )
    assert condition_of(refused) == "not-allowed"
    Domain.objects.filter(name="localhost").update(self_service_csr_signing=True)
    signed = run_client(
        listener, tmp_path, None, lambda xmpp: _append_csr(xmpp, _csr_request(key)), password=PASSWORD
    )
    assert signed.error is None, signed
    item = signed.result.xml.find("{urn:xmpp:saslcert:1}item")
    der = base64.b64decode(item.findtext("{urn:xmpp:saslcert:1}x509cert"))
    issued = Issued(x509.load_der_x509_certificate(der), key)
    assert issued.facts.xmpp_addrs == ("alice@localhost",)
    assert login(listener, tmp_path, issued).bound_jid.startswith("alice@localhost/")
