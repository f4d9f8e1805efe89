"""A ``tls.crl_files`` entry that cannot be applied stops start-up with one line, in every process (issue 11).

Unreadable, not a CRL, a bad signature, or no trusted CA that issued it: ``manage.py runc2s`` exits with
status 1 and the last line on stderr names the key, the file and the reason, before any port is listened on.
The same line stops our daphne (``xmppauth.asgi``), the embedded ``runxmpp``, ``runworker`` and the Celery
worker.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from certauth.userstatus import TEXT_UNTRUSTED
from tests.certauth.crlhelpers import make_crl
from tests.certs import make_ca, make_client
from tests.processes import Managed, free_port
from tests.transport.configca_servers import environment, migrate, run, scratch_database
from tests.transport.tlsclient import make_pki
from tests.transport.xmppclient import slixmpp_login

KINDS = ["unreadable", "not a CRL", "bad signature", "no trusted CA"]


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    directory = tmp_path_factory.mktemp("config-ca-startup")
    config = directory / "empty.toml"
    config.write_text('[general]\n  hosts = ["localhost"]\n')
    with scratch_database(directory) as url:
        migrate(environment(directory, config, url))
        yield url


def bad_entry(directory: Path, kind: str) -> tuple[Path, str]:
    """A CRL file of ``kind`` for the CA in ``directory / "ca.pem"``, and the reason start-up must give."""
    name = f"Partner CA {directory.name}"  # the module's tests share one database: one name each
    ca = make_ca(name)
    (directory / "ca.pem").write_bytes(ca.pem)
    if kind == "unreadable":
        return directory / "missing.crl", "cannot be read: No such file or directory"
    if kind == "not a CRL":
        path = directory / "ca.pem.crl"
        path.write_bytes(ca.pem)
        reason = "Valid PEM but no BEGIN X509 CRL/END X509 delimiters. Are you sure this is a CRL?"
        return path, f"not a CRL (PEM or DER): {reason}"
    if kind == "bad signature":
        path = directory / "forged.crl"
        path.write_bytes(make_crl(ca, [1], signing_key=make_ca(name).key))
        return path, f"bad signature: issuer CN={name} is CA {name}, whose key did not sign it"
    path = directory / "stranger.crl"
    path.write_bytes(make_crl(make_ca("Stranger CA"), [1]))
    return path, "matches no trusted CA (issuer CN=Stranger CA)"


def site(directory: Path, database_url: str, kind: str) -> tuple[dict[str, str], int, str]:
    """Environment, c2s port and the expected line for a config whose c2s listener has a bad entry."""
    pki = make_pki(directory)
    crl, reason = bad_entry(directory, kind)
    port = free_port()
    config = directory / "xmppauth.toml"
    config.write_text(
        f"""[general]
  hosts = ["localhost"]

[[listen.c2s]]
  port = {port}
  ip_address = "127.0.0.1"
  tls.mode = "tls"
  tls.certfile = "{pki.server_certfile}"
  tls.keyfile = "{pki.server_keyfile}"
  tls.cacertfile = "{directory / "ca.pem"}"
  tls.crl_files = ["{crl}"]

[[listen.http]]
  port = {free_port()}
  ip_address = "127.0.0.1"
  tls.certfile = "{pki.server_certfile}"
  tls.keyfile = "{pki.server_keyfile}"
  tls.cacertfile = "{directory / "ca.pem"}"
"""
    )
    line = f"xmppauth: configuration error: {config}: listen.c2s[0].tls.crl_files: {crl}: {reason}"
    return environment(directory, config, database_url), port, line


def assert_stopped_with(result, line: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.rstrip("\n").splitlines()[-1] == line, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def nothing_listens(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("kind", KINDS)
def test_runc2s_refuses_to_start_on_a_bad_crl_files_entry(tmp_path, database, kind):
    env, port, line = site(tmp_path, database, kind)
    result = run(env, "runc2s", timeout=120)
    assert_stopped_with(result, line)
    assert nothing_listens(port)
    assert "c2s listening" not in result.stdout


@pytest.mark.parametrize(
    "command",
    [
        ("-m", "transport.http.server", "-e", "xmpptls:listener=0", "xmppauth.asgi:application"),
        ("runxmpp",),
        ("runworker", "xmpp.router"),
        ("-m", "celery", "-A", "xmppauth", "worker", "--pool=solo", "--concurrency=1"),
    ],
    ids=["daphne", "runxmpp", "runworker", "celery_worker"],
)
def test_every_process_that_reads_the_config_refuses_a_bad_crl_files_entry(tmp_path, database, command):
    env, port, line = site(tmp_path, database, "no trusted CA")
    result = run(env, *command, timeout=120)
    assert_stopped_with(result, line)
    assert nothing_listens(port)


def _c2s_config(directory: Path, port: int, pki) -> Path:
    config = directory / "xmppauth.toml"
    config.write_text(
        f"""[general]
  hosts = ["localhost"]

[[listen.c2s]]
  port = {port}
  ip_address = "127.0.0.1"
  tls.mode = "tls"
  tls.certfile = "{pki.server_certfile}"
  tls.keyfile = "{pki.server_keyfile}"
  tls.cacertfile = "{directory / "ca.pem"}"
  tls.disconnect_on_failure = false
"""
    )
    return config


def _login_once(env: dict[str, str], port: int, directory: Path, client):
    server = Managed(env, "runc2s")
    try:
        server.wait_for(f"c2s listening on 127.0.0.1:{port}")
        return slixmpp_login(port, directory, client, direct_tls=True)
    finally:
        output = server.stop()
        assert "Traceback" not in output, output


def test_a_ca_removed_from_the_cacertfile_is_no_longer_trusted_after_a_restart(tmp_path, database):
    pki = make_pki(tmp_path)
    removed, kept = make_ca(f"Removed CA {tmp_path.name}"), make_ca(f"Kept CA {tmp_path.name}")
    port = free_port()
    env = environment(tmp_path, _c2s_config(tmp_path, port, pki), database)
    (tmp_path / "ca.pem").write_bytes(removed.pem + kept.pem)
    first = _login_once(env, port, tmp_path, make_client(removed))
    assert first.bound_jid is not None and first.bound_jid.startswith("alice@localhost/"), first

    (tmp_path / "ca.pem").write_bytes(kept.pem)  # the operator edits the file and restarts
    refused = _login_once(env, port, tmp_path, make_client(removed))
    assert refused.bound_jid is None and refused.sasl_failures == [], refused
    assert refused.stream_errors == [("not-authorized", TEXT_UNTRUSTED)], refused  # issue 18 §5
    accepted = _login_once(env, port, tmp_path, make_client(kept))
    assert accepted.bound_jid is not None, accepted
