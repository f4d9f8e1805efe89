"""A CRL distribution point that accepts the connection and never answers (issue 16 point 4).

A real Celery worker (solo pool: one task at a time, so a hung fetch would hold it) refreshes the source:
the download gives up after ``[xmppauth] crl_fetch_timeout_seconds``, the source is marked failing with the
reason, and the worker takes its next task. Once the last good CRL is past its nextUpdate (plus
``crl_grace_seconds``, 0 here), the stale rule refuses that CA's certificates (DESIGN §5, fail closed), while
the listener keeps serving the certificates of another CA. The test runs its own PostgreSQL, and its own
Redis as the Celery broker. Timeouts only bound a hung process.
"""

from __future__ import annotations

import json
import socket
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.certauth.crlhelpers import make_crl
from tests.certauth.crlserver import CrlServer
from tests.certs import make_ca, make_client
from tests.faults.cluster import FaultCluster, eventually, logged
from tests.im.agents import SlixAgent
from tests.processes import Managed, free_port
from tests.transport.rawxmpp import direct_tls
from tests.transport.runc2s_process import manage
from tests.transport.tlsclient import client_context

FETCH_TIMEOUT = 1  # [xmppauth] crl_fetch_timeout_seconds
FRESH_FOR = 15  # seconds the good CRL is valid (its nextUpdate)


class BlackHole:
    """Accepts every connection and never reads nor writes a byte (until closed)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.accepted = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            self.accepted.set()

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def hole():
    server = BlackHole()
    yield server
    server.close()


def shell(cluster: FaultCluster, code: str, timeout: float = 120) -> dict:
    """``manage.py shell -c code`` in the cluster's environment; the JSON its last line prints."""
    result = manage(cluster.env("shell", free_port(), **OPTIONS), "shell", "-c", code, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


OPTIONS = {"crl_fetch_timeout_seconds": FETCH_TIMEOUT, "crl_grace_seconds": 0}

ADD_SOURCE = """
import json
from certauth import crlfetch
from certauth.models import CertificateAuthority, CrlSource
ca = CertificateAuthority.objects.get(subject__contains="{subject}")
source = CrlSource.objects.create(ca=ca, kind="operator_url", location="{url}")
outcome = crlfetch.refresh_source(source)
print(json.dumps({{"source": source.pk, "ok": outcome.ok, "message": outcome.message}}))
"""

SEND = """
import json
from certauth.tasks import refresh_crl_source, refresh_due_crl_sources
outcome = refresh_crl_source.delay({source}).get(timeout=60)  # the timeout only bounds a hung worker
refreshed = refresh_due_crl_sources.delay().get(timeout=60)  # the worker is free for its next task
print(json.dumps({{"outcome": outcome, "next": refreshed}}))
"""


def refused_at_handshake(cluster: FaultCluster, port: int, cert) -> bool:
    """True when the listener ends the TLS connection instead of offering EXTERNAL (disconnect_on_failure)."""
    try:
        sock, features = direct_tls(port, client_context(cluster.directory, cert))
    except OSError:
        return True
    sock.close()
    return b"EXTERNAL" not in features


def test_crl_server_that_never_answers_times_out_frees_the_worker_and_the_stale_rule_refuses(
    tmp_path: Path, postgres, redis_server, hole
):
    redis = redis_server
    cluster = FaultCluster(tmp_path, postgres.create_database("faults"), redis.url())
    ca = cluster.pki.ca
    other = make_ca("Faults Other CA")  # no CRL source: its certificates are unaffected
    cluster.cafile.write_bytes(ca.pem + other.pem)
    dave = make_client(other, jids=["dave@localhost"])
    port, listener = cluster.runc2s("c2s", **OPTIONS)
    worker = Managed(cluster.env("celery", free_port(), **OPTIONS), "-m", "celery", "-A", "xmppauth",
                     "worker", "--pool=solo", "-l", "info")  # fmt: skip
    worker.args = ("celery",)
    cluster.processes.append(worker)
    agents: list[SlixAgent] = []
    try:
        worker.wait_for("ready.")
        with CrlServer() as good:
            next_update = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=FRESH_FOR)
            url = good.serve("/ca.crl", make_crl(ca, [], next_update=next_update))
            added = shell(cluster, ADD_SOURCE.format(subject=ca.cert.subject.rfc4514_string(), url=url))
        assert added["ok"], added

        location = f"http://127.0.0.1:{hole.port}/ca.crl"
        cluster.query("UPDATE certauth_crlsource SET location = %s WHERE id = %s", location, added["source"])
        sent = shell(cluster, SEND.format(source=added["source"]))
        assert hole.accepted.is_set()  # the fetch reached the server that never answers
        assert sent["outcome"]["ok"] is False
        assert sent["outcome"]["message"] == f"timed out after {FETCH_TIMEOUT:g} s"
        assert sent["next"] == 0  # the next task ran: the worker did not hang (the failed source backs off)
        state, error = cluster.query(
            "SELECT state, last_error FROM certauth_crlsource WHERE id = %s", added["source"]
        )[0]
        assert state in ("failing", "stale") and error == f"timed out after {FETCH_TIMEOUT:g} s"

        # Past nextUpdate (grace 0) with no newer CRL: that CA's certificates are refused (fail closed) ...
        eventually(lambda: datetime.now(UTC) > next_update + timedelta(seconds=1), "the CRL stale", 60)
        eventually(
            lambda: refused_at_handshake(cluster, port, cluster.certs["bob"]), "bob refused once stale", 30
        )
        logged(listener, "outdated since")  # the stale rule, not anything else, refused bob
        # ... and the listener keeps serving another CA's certificates.
        agents.append(SlixAgent(port, tmp_path, dave, "dave@localhost").start())
        assert listener.process.poll() is None and worker.process.poll() is None
    finally:
        output = cluster.shutdown(agents)
    assert "Traceback" not in output, output
