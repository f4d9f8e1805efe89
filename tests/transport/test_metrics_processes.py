"""Issue 18 point 8 end to end: real logins in two listener processes, counted on one HTTPS endpoint.

``runxmpp`` (c2s on direct TLS and the HTTPS listener) and ``runc2s`` (c2s on another port) share a SQLite
file and a ``PROMETHEUS_MULTIPROC_DIR``. A raw TLS client logs in with SASL EXTERNAL on each, and a revoked
certificate is refused on the second; initial presence brings the first an expiry headline (its
certificate ends within ``certificate_expiry_warning_days``); then ``/metrics`` on runxmpp's HTTPS listener
refuses an anonymous scrape (401) and shows a staff user both processes' logins, the refusal, and the
sessions of both.
"""

from __future__ import annotations

import base64
import ssl
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path
from xml.etree import ElementTree

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.certs import make_client
from tests.processes import ROOT, SAME_ON_BOTH_LEGS, Managed, free_port
from tests.transport.runc2s_process import environment, manage
from tests.transport.sessionclient import Refused, login
from tests.transport.tlsclient import client_context, make_pki

pytestmark = SAME_ON_BOTH_LEGS

STAFF, PASSWORD = "ops-metrics", "pw-ops-metrics-processes"


def c2s(port: int, pki, ca_file: Path) -> list[str]:
    return [
        "[[listen.c2s]]",
        f"  port = {port}",
        '  ip_address = "127.0.0.1"',
        '  tls.mode = "tls"',
        f'  tls.certfile = "{pki.server_certfile}"',
        f'  tls.keyfile = "{pki.server_keyfile}"',
        f'  tls.cacertfile = "{ca_file}"',
        '  tls.verify_mode = "peer"',
    ]


def scrape(port: int, credentials: tuple[str, str] | None) -> tuple[int, str]:
    request = urllib.request.Request(f"https://127.0.0.1:{port}/metrics")
    if credentials is not None:
        token = base64.b64encode(":".join(credentials).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, context=context, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def totals(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_logins_in_two_processes_show_on_one_https_endpoint_for_staff_only(tmp_path):
    pki = make_pki(tmp_path)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(pki.ca.pem)
    port_a, port_b, https = free_port(), free_port(), free_port()
    hosts = '[general]\n  hosts = ["localhost"]\n'
    config_a, config_b = tmp_path / "a.toml", tmp_path / "b.toml"
    config_a.write_text(
        "\n".join(
            [hosts, *c2s(port_a, pki, ca_file), "", "[[listen.http]]", f"  port = {https}"]
            + ['  ip_address = "127.0.0.1"', f'  tls.certfile = "{pki.server_certfile}"']
            + [f'  tls.keyfile = "{pki.server_keyfile}"', f'  tls.cacertfile = "{ca_file}"']
            + ['  tls.verify_mode = "peer"', "  tls.disconnect_on_failure = false"]
        )
        + "\n"
    )
    config_b.write_text("\n".join([hosts, *c2s(port_b, pki, ca_file)]) + "\n")
    env_a = environment(tmp_path, config_a)
    env_a.update(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"), PYTHONPATH=str(ROOT))
    (tmp_path / "metrics").mkdir()
    env_b = dict(env_a, XMPPAUTH_CONFIG=str(config_b))
    for args in (
        ("migrate", "--noinput"),
        ("shell", "-c", f"from django.contrib.auth.models import User; "
         f"User.objects.create_user({STAFF!r}, password={PASSWORD!r}, is_staff=True)"),
    ):  # fmt: skip
        result = manage(env_a, *args)
        assert result.returncode == 0, result.stdout + result.stderr
    revoked = make_client(pki.ca, jids=["bob@localhost"])
    (tmp_path / "bob.pem").write_bytes(revoked.pem)
    for args in (
        ("pki", "import-cert", str(tmp_path / "bob.pem")),
        ("pki", "revoke", revoked.facts.fingerprint_sha256),
    ):
        result = manage(env_a, *args)
        assert result.returncode == 0, result.stdout + result.stderr

    first = Managed(env_a, "runxmpp")
    second = Managed(env_b, "runc2s")
    sessions = []
    try:
        first.wait_for(f"c2s listening on 127.0.0.1:{port_a}")
        first.wait_for("session termination watcher polls")
        second.wait_for(f"runc2s ready: 127.0.0.1:{port_b}\n")
        second.wait_for("garbage collector: ")  # xmppauth.gcpolicy, once it is set up (issue 17)
        first.wait_for_port(https)
        sessions.append(login(port_a, client_context(tmp_path, pki.valid)))
        carol = make_client(pki.ca, jids=["carol@localhost"])
        sessions.append(login(port_b, client_context(tmp_path, carol)))
        with pytest.raises(Refused):
            login(port_b, client_context(tmp_path, revoked))
        # Test certificates live 30 days: within the default expiry window, so initial presence brings the
        # server's headline (issue 18 §4), a stanza delivered to the client.
        sessions[0].sock.sendall(b"<presence/>")
        raw = sessions[0].read_until(b"</message>")
        notice = ElementTree.fromstring(raw[raw.rindex(b"<message") :])
        assert notice.get("type") == "headline" and notice.get("from") == "localhost", raw
        assert "expires on" in (notice.findtext("body") or ""), raw  # jabber:client is the stream default

        status, body = scrape(https, None)
        assert status == 401 and "xmppauth_" not in body
        assert scrape(https, (STAFF, "wrong password"))[0] == 401
        status, body = scrape(https, (STAFF, PASSWORD))
        assert status == 200, body
        found = totals(body)
        logins = found["xmppauth_logins_total"]
        successes = sum(v for labels, v in logins.items() if ("outcome", "success") in labels)
        failures = {labels: v for labels, v in logins.items() if ("outcome", "failure") in labels}
        assert successes == 2, logins  # one in each process, summed
        assert sum(failures.values()) >= 1 and all(dict(k)["condition"] for k in failures), logins
        live = found["xmppauth_live_sessions"]
        assert sum(live.values()) == 2 and len({dict(k)["process"] for k in live}) == 2, live
        stanzas = found["xmppauth_stanzas_total"]
        assert stanzas[(("direction", "in"), ("kind", "presence"))] >= 1, stanzas
        assert stanzas[(("direction", "out"), ("kind", "message"))] >= 1, stanzas  # the headline
        assert len(list((tmp_path / "metrics").glob("counter_*.db"))) >= 2  # one file per process
    finally:
        for session in sessions:
            session.close()
        outputs = first.stop() + second.stop()
        print(outputs)
    assert "Traceback" not in outputs
