"""The server's side of TLS per login, alone: OpenSSL's records or ours, a session cache or stateless tickets.

Issue 17 §5 (stop 26). ``transport.tcp.tls.TlsPump`` over memory BIOs, as the c2s adapter drives it, against a
Python ``ssl`` client in the same process; only the server's calls are timed (``time.perf_counter`` around
each): the handshake, reading its facts (chain, channel bindings, resumption), then seven exchanges of a few
hundred bytes each way and close_notify, as a login does after the handshake. Variants:

- records: OpenSSL's (the pump not handing over, as before stop 26) or ours (``transport.tls.records``);
- resumption state: OpenSSL's session cache (``SSL_OP_NO_TICKET``, ``SESS_CACHE_SERVER``, as at stop 25) or
  stateless tickets (``transport.tls.context.build_context`` since stop 26);
- full handshakes, or resumed ones (each login resumes the session of the one before).

Run from the checkout::

    .venv/bin/python -m bench.tls_server_side             # 400 logins per variant, 3 rounds
    .venv/bin/python -m bench.tls_server_side --count 1000 --rounds 5
"""

from __future__ import annotations

import argparse
import ssl
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from OpenSSL import SSL

import transport.tcp.tls as pump_module
from tests.transport.tlsclient import client_context, make_pki
from transport.tls.context import (
    ServerTls,
    channel_bindings,
    peer_chain,
    release_bio_buffers,
    session_resumed,
    verify_errors,
)

EXCHANGES = 7
CLIENT_STANZA = b"<iq type='get' id='x'><query xmlns='jabber:iq:roster'/></iq>" * 2
SERVER_STANZA = b"<iq type='result' id='x'><query xmlns='jabber:iq:roster'/></iq>" * 3


class Timer:
    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self, function: Callable[..., Any], *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args)
        finally:
            self.seconds += time.perf_counter() - started


def login(tls: ServerTls, context: ssl.SSLContext, timer: Timer, session: Any = None) -> Any:
    """One login's TLS; returns the client's session (for the next to resume)."""
    pump = pump_module.TlsPump(tls.connection_for("127.0.0.1:1"))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname="localhost", session=session)
    for _ in range(10):
        try:
            client.do_handshake()
            client_done = True
        except ssl.SSLWantReadError:
            client_done = False
        received = timer(pump.receive, outgoing.read())
        if received.handshake_done:
            connection = pump.connection
            timer(facts, connection)
            if not timer(pump.release_handshake):
                timer(release_bio_buffers, connection)
        incoming.write(timer(pump.data_to_send))
        if client_done and pump.handshake_done:
            break
    for _ in range(EXCHANGES):
        client.write(CLIENT_STANZA)
        timer(pump.receive, outgoing.read())
        timer(pump.send, SERVER_STANZA)
        incoming.write(timer(pump.data_to_send))
        client.read(65536)
    if session is not None and not client.session_reused:
        raise RuntimeError("a resumed variant did a full handshake: its figure would mean nothing")
    timer(pump.close)
    incoming.write(timer(pump.data_to_send))
    return client.session


def facts(connection: SSL.Connection) -> None:
    """What the adapter reads once the handshake is done (``C2SProtocol._handshake_completed``)."""
    peer_chain(connection)
    verify_errors(connection)
    channel_bindings(connection)
    session_resumed(connection)


def server_tls(pki: Any, tickets: bool) -> ServerTls:
    tls = ServerTls(pki.options(mode="tls"), [pki.ca.cert], transport="tls")
    if not tickets:  # stop 25's context: TLS 1.3 tickets naming a cached session
        tls.context.set_options(SSL.OP_NO_TICKET)
        tls.context.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
    return tls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=400, help="logins per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    pki = make_pki(Path(tempfile.mkdtemp(prefix="tls-server-side-")))
    context = client_context(Path(tempfile.mkdtemp(prefix="tls-server-side-client-")), pki.valid)
    hand_over = pump_module.record_keys
    variants = [(records, tickets) for records in (False, True) for tickets in (False, True)]
    print("| round | handshakes | records | resumption state | server ms per login |")
    print("|---|---|---|---|---|")
    for round_number in range(1, args.rounds + 1):
        for resumed in (False, True):
            for records, tickets in variants:
                pump_module.record_keys = hand_over if records else (lambda connection: None)
                tls = server_tls(pki, tickets)
                session = login(tls, context, Timer()) if resumed else None
                timer = Timer()
                for _ in range(args.count):
                    next_session = login(tls, context, timer, session)
                    session = next_session if resumed else None
                handshakes = "resumed" if resumed else "full"
                layer = "ours" if records else "OpenSSL"
                state = "stateless tickets" if tickets else "session cache"
                per_login = timer.seconds / args.count * 1e3
                print(f"| {round_number} | {handshakes} | {layer} | {state} | {per_login:.3f} |", flush=True)
    pump_module.record_keys = hand_over
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
