"""A bench probe, never production: the server's CPU per login, phase by phase (``profile_login --phases``).

``bench.profile_login --phases`` puts this directory first on the server's ``PYTHONPATH``, so Python imports
this file at start-up (``site``). When the server is about to serve (``xmppauth.gcpolicy``'s
``settle_heap_for_serving``, called once every listener is up), the functions of :data:`PHASES` are wrapped
where their callers look them up, each with a timer of the calling thread's CPU time
(``time.thread_time``), and so is every callback the event loop runs (``asyncio.events.Handle._run``, by the
callback's name): the loop's callbacks partition the reactor thread's time, the phases say what is inside
them. Inclusive times: a phase's time contains the phases it calls.

``SIGUSR2`` zeroes the counts (the bench sends it after its warm-up logins); at exit the counts go, as JSON,
to the file named by ``XMPPAUTH_PHASES_OUT``. Each timed call costs about a microsecond more than it would,
so the whole process is slower by that much per call under this probe; compare phases with each other, and
the whole with a run without it.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# (label, module, attribute path): wrapped in ``module``, where its callers look it up ("Class.method" for a
# method, wrapped on the class).
PHASES: tuple[tuple[str, str, str], ...] = (
    ("accept: connection_made", "transport.tcp.protocol", "C2SProtocol.connection_made"),
    ("  new TLS connection", "transport.tcp.protocol", "C2SProtocol._new_tls"),
    ("read: data_received", "transport.tcp.protocol", "C2SProtocol.data_received"),
    ("  TLS in (handshake, records)", "transport.tcp.tls", "TlsPump.receive"),
    ("    OpenSSL's handshake", "OpenSSL.SSL", "Connection.do_handshake"),
    ("  handshake done: chain, bindings", "transport.tcp.protocol", "C2SProtocol._handshake_completed"),
    ("    peer_chain", "transport.tcp.protocol", "peer_chain"),
    ("    channel_bindings", "transport.tcp.protocol", "channel_bindings"),
    ("    accepted_from_memory", "certauth.authenticator", "CertificateAuthenticator.accepted_from_memory"),
    ("  XMPP: SessionDriver.receive", "transport.driver", "SessionDriver.receive"),
    ("  TLS out (records)", "transport.tcp.tls", "TlsPump.send"),
    ("database batch: run_batch", "xmppauth.loopdb", "run_batch"),
    ("  BEGIN", "xmppauth.loopdb", "_begin"),
    ("  check_certificate", "certauth.authenticator", "CertificateAuthenticator.check_certificate"),
    ("    leaf facts (also on the loop's try)", "certauth.authenticator", "_facts_of"),
    ("    verify_client_chain", "certauth.authenticator", "verify_client_chain"),
    ("    learning.offer", "certauth.learning", "offer"),
    ("  revocation (TLS, SASL, bind)", "certauth.authenticator", "CertificateAuthenticator._revocation"),
    ("  authenticate_external", "certauth.authenticator", "CertificateAuthenticator.authenticate_external"),
    ("    identity rules", "certauth.authenticator", "resolve_identity"),
    ("    auth methods", "certauth.authenticator", "run_methods"),
    ("    auth event", "certauth.authenticator", "CertificateAuthenticator._record"),
    ("  bind: admit", "transport.sessions.registry", "_admit"),
    ("    session row", "transport.sessions.terminations", "save_session"),
    ("  close: delete session row", "transport.sessions.terminations", "delete_session"),
    ("answers of the batch (Deferreds)", "transport.workers", "_settle"),
    ("  certificate checked", "transport.driver", "SessionDriver._certificate_checked"),
    ("  EXTERNAL judged: <success/>", "transport.driver", "SessionDriver._external_judged"),
    ("  bind admitted: result, bridge", "transport.driver", "SessionDriver._bind_admitted"),
    ("    session bridge start", "transport.im.bridge", "SessionBridge.start"),
    ("close: connection_lost", "transport.tcp.protocol", "C2SProtocol.connection_lost"),
)
LOOP = "event loop: "  # the label prefix of the loop's callbacks

_totals: dict[str, list[float]] = {}


def _count(label: str, seconds: float) -> None:
    entry = _totals.get(label)
    if entry is None:
        entry = _totals[label] = [0, 0.0]
    entry[0] += 1
    entry[1] += seconds


def _timed(label: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            _count(label, time.thread_time() - started)

    return timed


def _install() -> None:
    for label, module_name, path in PHASES:
        owner: Any = importlib.import_module(module_name)
        *classes, name = path.split(".")
        for class_name in classes:
            owner = getattr(owner, class_name)
        setattr(owner, name, _timed(label, getattr(owner, name)))

    import asyncio.events

    run = asyncio.events.Handle._run

    def timed_run(handle: Any) -> None:
        callback = handle._callback  # noqa: SLF001
        label = LOOP + (getattr(callback, "__qualname__", None) or type(callback).__name__)
        started = time.thread_time()
        try:
            run(handle)
        finally:
            _count(label, time.thread_time() - started)

    asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR2, lambda *_: _totals.clear())


def _dump() -> None:
    target = os.environ.get("XMPPAUTH_PHASES_OUT")
    if target and _totals:
        with open(target, "w", encoding="utf-8") as out:
            counts = {label: {"calls": n, "seconds": seconds} for label, (n, seconds) in _totals.items()}
            json.dump(counts, out)


def _patch(gcpolicy: Any) -> None:
    settle = gcpolicy.settle_heap_for_serving

    def settle_and_time() -> None:
        _install()
        settle()

    gcpolicy.settle_heap_for_serving = settle_and_time


if __name__ == "sitecustomize":  # the server's start-up (bench.profile_login reads PHASES and LOOP only)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/probes: the probes' shared helper
    from patch_on_import import patch_on_import

    patch_on_import("xmppauth.gcpolicy", _patch)
    atexit.register(_dump)
