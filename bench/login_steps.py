"""The Python work of one EXTERNAL login, in process: no sockets, TLS or threads (prints figures; not a test).

Issue 17 §6. Each login is what a direct-TLS client costs the server after its handshake: a fresh
``C2SConnection`` (``new_c2s_stream``, the listener's core) in a ``SessionDriver`` with the real
``CertificateAuthenticator`` (chain verification, revocation, identity rules, auth methods, the auth event)
and a session registry of its own (the session row is written); the client's chain is handed over as
freshly parsed certificates (as ``transport.tls.context.peer_chain`` gives them); then stream header, SASL
EXTERNAL, stream header, bind, and the client's ``</stream:stream>``. Database calls and the registry's
thread run inline (the driver's fake adapter of ``tests/transport/test_driver.py``). Accounts are
provisioned; ``--users`` distinct certificates log in in turn. A throw-away test database (SQLite by
default, or ``DATABASE_URL``).

Plain timing (CPU time per login, on a loaded machine a rough figure)::

    .venv/bin/python -m bench.login_steps --count 2000

Instruction counts (deterministic, what the A/B figures of issue 17 §6 are): callgrind collects only during
the timed logins (``--instr-atstart=no``; the script turns collection on and off with ``callgrind_control``),
so set-up and migrations cost nothing; instructions per login = the total ``Ir`` / ``--count``::

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/login.cg \\
        .venv/bin/python -m bench.login_steps --count 300 --callgrind
    callgrind_annotate --inclusive=yes /tmp/login.cg | head -60   # where they go

``--profile`` prints cProfile's top functions (inclusive) of the timed logins instead.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

from bench.testdb import in_test_database

DOMAIN = "localhost"
HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"
)
AUTH = b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>"
BIND = (
    b"<iq type='set' id='bind_1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
    b"<resource>bench</resource></bind></iq>"
)
FOOTER = b"</stream:stream>"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="timed logins")
    parser.add_argument("--users", type=int, default=50, help="distinct certificates, logging in in turn")
    parser.add_argument("--warm-up", type=int, default=100, help="logins before the timed ones")
    parser.add_argument("--callgrind", action="store_true", help="toggle callgrind collection (see above)")
    parser.add_argument("--profile", action="store_true", help="cProfile the timed logins")
    parser.add_argument("--profile-out", help="with --profile: also dump the stats here (pstats, snakeviz)")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--sort", default="cumulative", help="cProfile order: cumulative, tottime, ...")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    in_test_database(lambda: run(args))


def _callgrind(on: bool) -> None:
    command = ["callgrind_control", "-i", "on" if on else "off", str(os.getpid())]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def run(args: argparse.Namespace) -> None:
    import logging

    from cryptography import x509
    from twisted.internet import defer
    from twisted.internet.task import Clock

    from accounts.domains import checker
    from accounts.models import Account, Domain
    from certauth import services, trust
    from certauth.authenticator import CertificateAuthenticator
    from tests.certs import make_ca, make_client
    from tests.transport.test_driver import FakeAdapter
    from transport.driver import SessionDriver
    from transport.sessions.registry import LiveSessions
    from transport.xmpp import new_c2s_stream
    from xmppauth.config import AuthConfig, C2SListener, Config, TlsOptions
    from xmppauth.gcpolicy import settle_heap_for_serving

    logging.disable(logging.NOTSET)  # the production level: INFO lines are formatted and filtered
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger().handlers = [logging.NullHandler()]

    issuer = make_ca("bench login CA")
    services.import_ca(issuer.pem, name="bench login CA")
    trust.invalidate()
    domain, _ = Domain.objects.get_or_create(name=DOMAIN)
    users = [f"u{i}" for i in range(args.users)]
    Account.objects.bulk_create(Account(localpart=name, domain=domain) for name in users)
    ders = [make_client(issuer, jids=[f"{name}@{DOMAIN}"]).der for name in users]

    tls = TlsOptions(mode="tls", verify_mode="peer")
    config = Config(hosts=(DOMAIN,), auth=AuthConfig(methods=("pki",)))
    listener = C2SListener(port=5223, tls=tls)
    hosted = checker(config.hosts)
    registry = LiveSessions(reactor=Clock())
    registry._in_thread = lambda function, *a: defer.maybeDeferred(function, *a)  # inline, as the tests

    def login(index: int) -> None:
        adapter = FakeAdapter()
        peer = f"192.0.2.{index % 200 + 1}:{40000 + index % 20000}"
        driver = SessionDriver(
            new_c2s_stream(config, listener, hosted=hosted, log_id=f"tls {peer}"),
            CertificateAuthenticator(config, tls, "tls", peer),
            adapter,
            transport="tls",
            peer=peer,
            tls_options=tls,
            sessions=registry,
        )
        driver.open()
        driver.certificate_presented([x509.load_der_x509_certificate(ders[index % len(ders)])])
        for data in (HEADER, AUTH, HEADER, BIND):
            driver.receive(data)
        if driver.jid is None:
            raise SystemExit(f"login {index} failed: {adapter.sent!r}")
        driver.receive(FOOTER)
        driver.connection_lost("closed")

    for index in range(args.warm_up):
        login(index)
    settle_heap_for_serving()  # the collector as a server process runs it (xmppauth.gcpolicy)
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    if args.callgrind:
        _callgrind(True)
    if profiler is not None:
        profiler.enable()
    started = time.process_time()
    for index in range(args.count):
        login(index)
    cpu = time.process_time() - started
    if profiler is not None:
        profiler.disable()
    if args.callgrind:
        _callgrind(False)
    per_login = 1000 * cpu / args.count
    print(f"# {args.count} EXTERNAL logins, {args.users} users in turn: {per_login:.3f} ms CPU each")
    if profiler is not None:
        import pstats

        pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.top)
        if args.profile_out:
            profiler.dump_stats(args.profile_out)


if __name__ == "__main__":
    main()
