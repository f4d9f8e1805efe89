"""Strophe.js (Node) over wss (RFC 7395) and BOSH (XEP-0206): a leaf sent with an intermediate that the
root's CRL revokes is refused; a leaf of an unrevoked intermediate logs in (issue 11 point 3, RFC 5280
§6.1.3 (a)(3)); the distribution points named in the chain are learnt by the server and fetched by the job.

The server is our daphne command line (``tests.transport.xmpphttp``) with the root in ``tls.cacertfile`` and
as a CA row (imported unless start-up made it one). Nothing else is set up by hand: the intermediates become
rows through the server's learning at the first logins, their CDPs (the root's CRL) and the leaves' CDPs
(each intermediate's CRL) become sources, and ``certauth.tasks.refresh_due_crl_sources`` (run as a
management shell against the server's database) fetches them from ``tests.certauth.crlserver``.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from tests.certauth.crlhelpers import make_crl
from tests.certauth.crlserver import CrlServer
from tests.certs import make_client, make_intermediate, make_root
from tests.transport.tlsclient import make_pki
from tests.transport.xmpphttp import start_server, strophe_login

REVOKED_SERIAL, GOOD_SERIAL = 0x5EA1, 0x5EA2

IMPORT_ROOT = """
from pathlib import Path
from certauth import pki, services
from certauth.models import CertificateAuthority
pem = Path({path!r}).read_bytes()
fingerprint = pki.fingerprint_sha256(pki.load_certificate(pem))
if not CertificateAuthority.objects.filter(fingerprint_sha256=fingerprint):
    services.import_ca(pem, name="Strophe Path Root")
"""
REFRESH = "from certauth import tasks; print(tasks.refresh_due_crl_sources())"
STATE = """
import json
from certauth.models import AuthEvent, CertificateAuthority, CrlSource

from tests.processes import SAME_ON_BOTH_LEGS

pytestmark = SAME_ON_BOTH_LEGS
learned = CertificateAuthority.objects.filter(origin="learned").values_list("subject", flat=True)
sources = CrlSource.objects.values_list("ca__subject", "location", "state")
failures = AuthEvent.objects.filter(outcome="failure").order_by("pk").values_list("reason", flat=True)
print(json.dumps({
    "learned": sorted(learned), "sources": sorted(list(row) for row in sources), "failures": list(failures),
}))
"""


def shell(server, code: str) -> str:
    """Python ``code`` run by ``manage.py shell`` against the server's database; its standard output."""
    return server.manage("shell", "-v", "0", "-c", code)


@pytest.fixture(scope="module")
def crl_server():
    with CrlServer() as server:
        yield server


@pytest.fixture(scope="module")
def root():
    return make_root("Strophe Path Root")


@pytest.fixture(scope="module")
def server(tmp_path_factory, root):
    directory = tmp_path_factory.mktemp("strophe-path")
    pki = dataclasses.replace(make_pki(directory), ca=root)
    yield from start_server(directory, pki=pki)


def test_revoked_intermediate_is_refused_and_an_unrevoked_one_logs_in_over_wss_and_bosh(
    server, crl_server, root
):
    root_file = server.directory / "root.pem"
    root_file.write_bytes(root.pem)
    shell(server, IMPORT_ROOT.format(path=str(root_file)))
    root_crl = crl_server.url("/root.crl")
    revoked = make_intermediate(root, "Strophe Revoked Inter", crl_url=root_crl, serial=REVOKED_SERIAL)
    good = make_intermediate(root, "Strophe Good Inter", crl_url=root_crl, serial=GOOD_SERIAL)
    crl_server.serve("/root.crl", make_crl(root, [REVOKED_SERIAL]))
    crl_server.serve("/revoked.crl", make_crl(revoked, []))
    crl_server.serve("/good.crl", make_crl(good, []))

    def leaf(inter, name: str):
        return make_client(inter, jids=["alice@localhost"], crl_url=crl_server.url(f"/{name}.crl"))

    # First logins: the intermediates are no rows and no CRL of theirs is held yet (not refused, as a source
    # not tried yet); the server learns them.
    for inter, name in ((revoked, "revoked"), (good, "good")):
        verdict = strophe_login(server, server.url("peer", "wss"), leaf(inter, name))
        assert verdict["status"] == "connected", verdict
    assert shell(server, REFRESH).strip() == "3"  # the root's CRL and each intermediate's
    state = json.loads(shell(server, STATE))
    assert state["learned"] == ["CN=Strophe Good Inter", "CN=Strophe Revoked Inter"]
    assert state["sources"] == [  # RFC 5280 §4.2.1.13: each CDP is a source of the certificate's issuer
        ["CN=Strophe Good Inter", crl_server.url("/good.crl"), "ok"],
        ["CN=Strophe Path Root", root_crl, "ok"],
        ["CN=Strophe Revoked Inter", crl_server.url("/revoked.crl"), "ok"],
    ]

    for scheme in ("wss", "https"):
        refused = strophe_login(server, server.url("peer", scheme), leaf(revoked, "revoked"))
        assert refused["status"] == "no-external", (scheme, refused)  # DESIGN §4: EXTERNAL not offered
        accepted = strophe_login(server, server.url("peer", scheme), leaf(good, "good"))
        assert accepted["status"] == "connected", (scheme, accepted)
        assert accepted["jid"].split("/")[0] == "alice@localhost"
    failures = json.loads(shell(server, STATE))["failures"]
    expected = (
        "certificate refused: chain through intermediate CA CN=Strophe Revoked Inter, which is revoked"
        f" 2026-09-03 keyCompromise (CRL {root_crl})"
    )
    assert failures[-2:] == [expected, expected], failures
