"""Load client for the c2s listeners: many certificate logins at once, in raw XML (no XMPP library).

Each login follows RFC 6120 as a real client does: TCP connect; TLS either at once (XEP-0368 direct TLS,
the 5223-style listener) or after ``<starttls/>``/``<proceed/>`` (RFC 6120 §5.4); stream header; SASL EXTERNAL
with the initial response ``=`` (no authzid, RFC 6120 §6.4.2, XEP-0178 §3); stream restart (§6.4.6); resource
binding (§7). Every simulated user presents its own client certificate (``bench.clientcerts``).

Modes:

- ``login``: ``--count`` logins, ``--concurrency`` in flight; each closes its stream after the bind result.
  Reports logins/s, latency (connect to bind result) median and p99, errors by kind, and the server's CPU time
  per login from ``/proc/<pid>/stat`` when ``--server-pid`` is given.
- ``tls``: full mutual-TLS handshakes only (direct TLS), each proven complete by one echoed line: the same
  client against ``openssl s_server -rev`` gives the handshake ceiling of this machine.
- ``idle``: ``--idle`` sessions logged in and held open; reports the server's resident memory per session
  (VmRSS after minus before, divided by the sessions), then pings every session (XEP-0199) to count those
  the server dropped.

Run from the checkout against a running server, e.g.::

    .venv/bin/python -m bench.loadclient --port 5223 --tls direct --server-pid PID --count 2000

The certificates come from the server's own CA through Django (same XMPPAUTH_* / DATABASE_URL environment as
the server) unless ``--ca-cert``/``--ca-key`` name PEM files of a CA the server trusts.
``bench.run_login_bench`` starts a scratch server and runs all of this for you.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import re
import resource
import secrets
import ssl
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.clientcerts import (
    KEY_TYPES,
    Identity,
    ResumingContext,
    client_context,
    load_ca_files,
    load_server_ca,
    make_identities,
)
from bench.proc import Pids, cpu_seconds, machine_busy_seconds, rss_bytes

logger = logging.getLogger(__name__)

SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
STEP_TIMEOUT = 30.0  # seconds one protocol step may take before the login counts as stalled
READ_SIZE = 65536


class LoginError(Exception):
    """A login that did not reach the bind result; ``kind`` is what the report groups by."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def stream_header(domain: str) -> bytes:
    """The client's initial stream header (RFC 6120 §4.7)."""
    return (
        f"<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xml:lang='en' "
        "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    ).encode()


STARTTLS = b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"  # RFC 6120 §5.4.2.1
AUTH_EXTERNAL = f"<auth xmlns='{SASL_NS}' mechanism='EXTERNAL'>=</auth>".encode()  # RFC 6120 §6.4.2
BIND = (  # RFC 6120 §7.6
    b"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
    b"<resource>bench</resource></bind></iq>"
)
PING = b"<iq type='get' id='ping1'><ping xmlns='urn:xmpp:ping'/></iq>"  # XEP-0199 §4.1 (client to server)
CLOSE = b"</stream:stream>"


class Stream:
    """Reads a stream until a marker appears; what follows the marker stays for the next read."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = b""
        self.jid = ""  # the full JID the server bound, once it has (RFC 6120 §7.6.1)

    async def until(self, step: str, *markers: bytes) -> bytes:
        """Everything up to and including the first of ``markers``.

        LoginError on a stream error, the connection's end, or no marker within STEP_TIMEOUT (a stall).
        """
        try:
            async with asyncio.timeout(STEP_TIMEOUT):
                while True:
                    if (
                        b"<stream:error" in self.buffer
                    ):  # RFC 6120 §4.9: the stream is over, whatever else came
                        raise LoginError(
                            f"{step}: stream error {_first_child(self.buffer, b'<stream:error')}"
                        )
                    for marker in markers:
                        at = self.buffer.find(marker)
                        if at >= 0:
                            end = at + len(marker)
                            found, self.buffer = self.buffer[:end], self.buffer[end:]
                            return found
                    chunk = await self.reader.read(READ_SIZE)
                    if not chunk:
                        raise LoginError(f"{step}: connection closed by the server")
                    self.buffer += chunk
        except TimeoutError as exc:
            raise LoginError(f"{step}: no answer within {STEP_TIMEOUT:.0f} s") from exc
        except OSError as exc:  # ssl.SSLError included
            raise LoginError(f"{step}: {type(exc).__name__}: {exc}") from exc

    def send(self, data: bytes) -> None:
        self.writer.write(data)


class ScramKeyCache:
    """A SCRAM-SHA-256 client's ClientKey/ServerKey per user and salt, as real clients keep them (RFC 5802
    §5.1 lets a client cache SaltedPassword): the bench then measures the server, not the client's PBKDF2."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, bytes, int], tuple[bytes, bytes]] = {}

    def prefill(self, user: str, password: str, salt: bytes, iterations: int) -> None:
        """Compute a user's keys now, before anything is timed (a client that logged in before has them)."""
        self.keys(user, password, salt, iterations)

    def keys(self, user: str, password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
        key = (user, salt, iterations)
        if key not in self._keys:
            salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
            self._keys[key] = (
                hmac.new(salted, b"Client Key", "sha256").digest(),
                hmac.new(salted, b"Server Key", "sha256").digest(),
            )
        return self._keys[key]


async def _sasl_scram_sha256(stream: Stream, user: str, password: str, cache: ScramKeyCache) -> None:
    """SCRAM-SHA-256 (RFC 5802 §5, RFC 7677) to ``<success/>``, checking the server's signature."""
    first_bare = f"n={user},r={secrets.token_urlsafe(18)}"
    initial = base64.b64encode(f"n,,{first_bare}".encode()).decode()
    stream.send(f"<auth xmlns='{SASL_NS}' mechanism='SCRAM-SHA-256'>{initial}</auth>".encode())
    challenge = await stream.until("sasl", b"</challenge>", b"</failure>")
    if challenge.endswith(b"</failure>"):
        raise LoginError(f"sasl: failure {_first_child(challenge, b'<failure')}")
    server_first = base64.b64decode(re.search(rb">([^<]*)</challenge>", challenge).group(1)).decode()
    fields = dict(item.split("=", 1) for item in server_first.split(","))
    client_key, server_key = cache.keys(user, password, base64.b64decode(fields["s"]), int(fields["i"]))
    stored_key = hashlib.sha256(client_key).digest()
    without_proof = f"c=biws,r={fields['r']}"
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.new(stored_key, auth_message, "sha256").digest()
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True))).decode()
    final = base64.b64encode(f"{without_proof},p={proof}".encode()).decode()
    stream.send(f"<response xmlns='{SASL_NS}'>{final}</response>".encode())
    outcome = await stream.until("sasl", b"</success>", b"</failure>")
    if outcome.endswith(b"</failure>"):
        raise LoginError(f"sasl: failure {_first_child(outcome, b'<failure')}")
    verifier = base64.b64encode(hmac.new(server_key, auth_message, "sha256").digest())
    if b"v=" + verifier not in base64.b64decode(re.search(rb">([^<]*)</success>", outcome).group(1)):
        raise LoginError("sasl: wrong server signature")  # RFC 5802 §5.1: the server proves itself too


def _first_child(buffer: bytes, opening: bytes) -> str:
    """The name of the first child element after ``opening`` (a stream error's or failure's condition)."""
    rest = buffer[buffer.find(opening) :]
    rest = rest[rest.find(b">") + 1 :]
    if not rest.startswith(b"<"):
        return "?"
    name = rest[1:].split(b" ", 1)[0].split(b"/", 1)[0].split(b">", 1)[0]
    return name.decode(errors="replace") or "?"


async def _open(host: str, port: int, context: ssl.SSLContext | None, domain: str) -> Stream:
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host,
                port,
                ssl=context,
                server_hostname=domain if context is not None else None,
                ssl_handshake_timeout=STEP_TIMEOUT if context is not None else None,
                limit=READ_SIZE,
            ),
            STEP_TIMEOUT,
        )
    except ssl.SSLError as exc:
        raise LoginError(f"tls: {exc.reason or exc}") from exc
    except TimeoutError as exc:
        raise LoginError("connect/tls: timed out") from exc
    except OSError as exc:
        raise LoginError(f"connect: {exc.strerror or type(exc).__name__}") from exc
    return Stream(reader, writer)


async def xmpp_login(
    host: str,
    port: int,
    domain: str,
    context: ssl.SSLContext,
    *,
    starttls: bool,
    password: tuple[str, str, ScramKeyCache] | None = None,
) -> Stream:
    """One login up to the bind result; the returned stream is bound (RFC 6120 §4.3). With ``password``
    (user, password, key cache) SCRAM-SHA-256 instead of the certificate's EXTERNAL."""
    stream = await _open(host, port, None if starttls else context, domain)
    try:
        stream.send(stream_header(domain))
        if starttls:
            features = await stream.until("features", b"</stream:features>", b"<stream:features/>")
            if b"starttls" not in features:
                raise LoginError("features: no <starttls/> offered")
            stream.send(STARTTLS)
            if (await stream.until("starttls", b"<proceed", b"<failure")).endswith(b"<failure"):
                raise LoginError("starttls: <failure/>")
            await stream.until("starttls", b"/>", b"</proceed>")  # nothing follows it (RFC 6120 §5.4.3.3)
            try:
                await asyncio.wait_for(stream.writer.start_tls(context, server_hostname=domain), STEP_TIMEOUT)
            except ssl.SSLError as exc:
                raise LoginError(f"tls: {exc.reason or exc}") from exc
            except TimeoutError as exc:
                raise LoginError("tls: timed out") from exc
            stream.send(stream_header(domain))
        features = await stream.until("features", b"</stream:features>", b"<stream:features/>")
        if password is not None:
            if b">SCRAM-SHA-256<" not in features:
                raise LoginError("features: SCRAM-SHA-256 not offered")
            await _sasl_scram_sha256(stream, *password)
        else:
            if b"EXTERNAL" not in features:
                raise LoginError("features: EXTERNAL not offered (certificate not accepted)")
            stream.send(AUTH_EXTERNAL)
            outcome = await stream.until("sasl", b"<success", b"<failure")
            if outcome.endswith(b"<failure"):
                failure = b"<failure" + await stream.until("sasl", b"</failure>")
                raise LoginError(f"sasl: failure {_first_child(failure, b'<failure')}")  # RFC 6120 §6.5
            await stream.until("sasl", b"/>", b"</success>")
        stream.send(stream_header(domain))  # restart after SASL (RFC 6120 §6.4.6)
        await stream.until("features", b"</stream:features>", b"<stream:features/>")
        stream.send(BIND)
        result = await stream.until("bind", b"</iq>")
        if b"result" not in result or b"<jid>" not in result:
            raise LoginError(f"bind: no result ({_first_child(result, b'<iq')})")
        stream.jid = result.split(b"<jid>", 1)[1].split(b"</jid>", 1)[0].decode()
        return stream
    except BaseException:
        stream.writer.transport.abort()
        raise


async def tls_handshake(host: str, port: int, domain: str, context: ssl.SSLContext) -> Stream:
    """A full mutual-TLS handshake, proven done by a line the server echoes (``openssl s_server -rev``)."""
    stream = await _open(host, port, context, domain)
    try:
        stream.send(b"bench\n")
        await stream.until("echo", b"\n")
        return stream
    except BaseException:
        stream.writer.transport.abort()
        raise


def close_stream(stream: Stream, *, xmpp: bool) -> None:
    """End the stream (RFC 6120 §4.4) and let the transport close in the background."""
    with contextlib.suppress(Exception):
        if xmpp:
            stream.send(CLOSE)
        stream.writer.close()


@dataclass
class LoginReport:
    """What one ``login`` or ``tls`` run measured."""

    label: str
    count: int
    concurrency: int
    ok: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    server_cpu: float | None = None  # seconds the server used during the run
    client_cpu: float = 0.0  # seconds this client process used during the run (it shares the cores)
    machine_cpu: float = 0.0  # seconds every process of the machine used during the run

    @property
    def other_load(self) -> float:
        """Cores that other processes (not this client nor the server) kept busy, on average over the run."""
        others = self.machine_cpu - self.client_cpu - (self.server_cpu or 0.0)
        return max(0.0, others) / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def per_second(self) -> float:
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def median_ms(self) -> float:
        return statistics.median(self.latencies) * 1e3 if self.latencies else float("nan")

    @property
    def p99_ms(self) -> float:
        return _percentile(self.latencies, 0.99) * 1e3

    @property
    def cpu_ms_per_login(self) -> float | None:
        return self.server_cpu / self.ok * 1e3 if self.server_cpu is not None and self.ok else None

    @property
    def client_cpu_ms_per_login(self) -> float:
        return self.client_cpu / self.ok * 1e3 if self.ok else float("nan")


@dataclass
class IdleReport:
    """What one ``idle`` run measured."""

    label: str
    sessions: int
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    rss_before: int = 0
    rss_after: int = 0
    alive: int = 0  # sessions that still answered a ping after the hold
    setup_seconds: float = 0.0
    setup_other_cpu: float = 0.0  # seconds other processes used while the sessions were set up
    up_at: list[float] = field(default_factory=list)  # seconds from the start at which each session was up

    def rate_between(self, start: float, end: float) -> float:
        """Logins/s while the ``start``..``end`` fraction of the sessions came up (slower as they grow?)."""
        times = self.up_at
        first, last = int(start * len(times)), max(int(end * len(times)) - 1, 0)
        span = times[last] - (times[first - 1] if first > 0 else 0.0) if times else 0.0
        return (last - first + 1) / span if span > 0 else float("nan")

    @property
    def other_load(self) -> float:
        return self.setup_other_cpu / self.setup_seconds if self.setup_seconds > 0 else 0.0

    @property
    def bytes_per_session(self) -> float:
        return (self.rss_after - self.rss_before) / self.ok if self.ok else float("nan")


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


Connect = Callable[[int], Awaitable[Stream]]


async def run_logins(
    connect: Connect, count: int, concurrency: int, label: str, *, server_pid: Pids | None, xmpp: bool
) -> LoginReport:
    """``count`` calls of ``connect(n)``, ``concurrency`` in flight; each stream is closed once it is up."""
    report = LoginReport(label, count, concurrency)
    next_index = iter(range(count))

    async def worker() -> None:
        for n in next_index:
            started = time.perf_counter()
            try:
                stream = await connect(n)
            except LoginError as exc:
                report.errors[exc.kind] += 1
                continue
            except Exception as exc:  # an error kind the client did not foresee: count it, keep going
                report.errors[f"unexpected: {type(exc).__name__}: {exc}"] += 1
                continue
            report.latencies.append(time.perf_counter() - started)
            report.ok += 1
            close_stream(stream, xmpp=xmpp)

    cpu_before = cpu_seconds(server_pid) if server_pid else None
    client_before, machine_before = time.process_time(), machine_busy_seconds()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
    report.elapsed = time.perf_counter() - started
    report.client_cpu = time.process_time() - client_before
    report.machine_cpu = machine_busy_seconds() - machine_before
    if server_pid and cpu_before is not None:
        report.server_cpu = cpu_seconds(server_pid) - cpu_before
    await asyncio.sleep(0.2)  # let the closing transports finish before the next run
    return report


class HeldSession:
    """A bound session kept open; it answers the server's keepalive pings (XEP-0199 §4.2) as clients do."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.lost: str | None = None  # why the session ended, if it did
        self.pong = asyncio.Event()  # the server answered our ping
        self.task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        try:
            while self.lost is None:
                element = await self._next_element()
                if (
                    element.startswith(b"<iq")
                    and b"urn:xmpp:ping" in element
                    and _attr(element, b"type") == b"get"
                ):
                    self.stream.send(b"<iq type='result' id='%s'/>" % _attr(element, b"id"))
                elif element.startswith(b"<iq") and _attr(element, b"id") == b"ping1":
                    self.pong.set()
        except LoginError as exc:
            self.lost = exc.kind
        except (OSError, ssl.SSLError) as exc:
            self.lost = f"held: {type(exc).__name__}"
        except asyncio.CancelledError:
            pass

    async def _next_element(self) -> bytes:
        """The next top-level element the server sent (stanzas; RFC 6120 §8)."""
        stream = self.stream
        while True:
            buffer = stream.buffer.lstrip()
            if b"<stream:error" in buffer or buffer.startswith(b"</stream:stream"):
                raise LoginError(f"held: stream error {_first_child(buffer, b'<stream:error')}")
            if buffer.startswith(b"<"):
                name = buffer[1:].split(b">", 1)[0].split(b" ", 1)[0].rstrip(b"/")
                start_end = buffer.find(b">")
                if start_end > 0 and buffer[start_end - 1 : start_end] == b"/":
                    stream.buffer = buffer[start_end + 1 :]
                    return buffer[: start_end + 1]
                close = buffer.find(b"</" + name + b">") if start_end > 0 else -1
                if close >= 0:
                    end = close + len(name) + 3
                    stream.buffer = buffer[end:]
                    return buffer[:end]
            chunk = await stream.reader.read(READ_SIZE)  # no step timeout: the session is idle on purpose
            if not chunk:
                raise LoginError("held: connection closed by the server")
            stream.buffer += chunk

    async def ping(self) -> bool:
        """Ask the server for a pong (XEP-0199 §4.1); False when the session is gone or no answer came."""
        if self.lost is not None:
            return False
        self.stream.send(PING)
        try:
            await asyncio.wait_for(self.pong.wait(), STEP_TIMEOUT)
        except TimeoutError:
            self.lost = self.lost or "held: no answer to our ping"
            return False
        return True


def _attr(element: bytes, name: bytes) -> bytes:
    """An attribute's value in an element's start tag (either quote)."""
    tag = element.split(b">", 1)[0]
    for quote in (b'"', b"'"):
        at = tag.find(b" " + name + b"=" + quote)
        if at >= 0:
            value_start = at + len(name) + 3
            return tag[value_start : tag.find(quote, value_start)]
    return b""


async def run_idle(
    connect: Connect,
    sessions: int,
    concurrency: int,
    label: str,
    *,
    server_pid: Pids,
    settle: float = 2.0,
    hold: float = 0.0,
) -> IdleReport:
    """Log ``sessions`` users in and hold them; measure the server's RSS before and after; ping; close.

    RSS is read ``settle`` seconds before the first login and after the last one; the sessions are then held
    ``hold`` seconds more (answering the server's keepalives) before every one is pinged.
    """
    report = IdleReport(label, sessions)
    held: list[HeldSession] = []
    next_index = iter(range(sessions))

    async def worker() -> None:
        for n in next_index:
            try:
                held.append(HeldSession(await connect(n)))
                report.up_at.append(time.perf_counter() - started)
            except LoginError as exc:
                report.errors[exc.kind] += 1
            except Exception as exc:
                report.errors[f"unexpected: {type(exc).__name__}: {exc}"] += 1

    await asyncio.sleep(settle)
    report.rss_before = rss_bytes(server_pid)
    started = time.perf_counter()
    own_before = cpu_seconds(server_pid) + time.process_time()
    machine_before = machine_busy_seconds()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, sessions))))
    report.setup_seconds = time.perf_counter() - started
    own = cpu_seconds(server_pid) + time.process_time() - own_before
    report.setup_other_cpu = max(0.0, machine_busy_seconds() - machine_before - own)
    report.ok = len(held)
    await asyncio.sleep(settle)  # the server's last threads and buffers come to rest
    report.rss_after = rss_bytes(server_pid)
    await asyncio.sleep(hold)
    answers = await asyncio.gather(*(session.ping() for session in held))
    report.alive = sum(answers)
    for session in held:
        if session.lost is not None:
            report.errors[session.lost] += 1
        session.task.cancel()
        close_stream(session.stream, xmpp=True)
    await asyncio.sleep(0.5)
    return report


def raise_nofile_limit() -> int:
    """Raise this process's open-file limit to its hard limit (10 000 sessions need 10 000 sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def xmpp_connector(
    host: str, port: int, domain: str, contexts: list[ssl.SSLContext], *, starttls: bool
) -> Connect:
    def connect(n: int) -> Awaitable[Stream]:
        return xmpp_login(host, port, domain, contexts[n % len(contexts)], starttls=starttls)

    return connect


def scram_connector(
    host: str,
    port: int,
    domain: str,
    contexts: list[ssl.SSLContext],
    users: list[str],
    password: str,
    cache: ScramKeyCache | None = None,
) -> Connect:
    """Logins of ``users`` (localparts) with SCRAM-SHA-256, over direct TLS with ``contexts``."""
    cache = cache or ScramKeyCache()

    def connect(n: int) -> Awaitable[Stream]:
        user = users[n % len(users)]
        return xmpp_login(
            host, port, domain, contexts[n % len(contexts)], starttls=False, password=(user, password, cache)
        )

    return connect


def tls_connector(host: str, port: int, domain: str, contexts: list[ssl.SSLContext]) -> Connect:
    def connect(n: int) -> Awaitable[Stream]:
        return tls_handshake(host, port, domain, contexts[n % len(contexts)])

    return connect


def contexts_for(
    identities: list[Identity], server_ca_file: Path | None = None, *, resuming: bool = False
) -> list[ssl.SSLContext]:
    """One SSL context per identity, made before anything is timed and reused by every connection;
    ``resuming``: each offers the session :func:`prime_sessions` gave it."""
    return [client_context(identity, server_ca_file, resuming=resuming) for identity in identities]


async def prime_session(host: str, port: int, domain: str, context: ResumingContext) -> bool:
    """One full login whose TLS session ``context`` offers from then on. The stream is closed the clean way,
    both ends' ``</stream:stream>`` and the server's close_notify before the socket closes: OpenSSL forgets
    the session of a connection that ends without its close_notify. False when no session came."""
    stream = await xmpp_login(host, port, domain, context, starttls=False)
    try:
        stream.send(CLOSE)
        await stream.until("close", CLOSE)
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while await asyncio.wait_for(stream.reader.read(READ_SIZE), STEP_TIMEOUT):
                pass  # until the server's close_notify and FIN
        session = stream.writer.get_extra_info("ssl_object").session
    finally:
        stream.writer.transport.abort()
    context.offered_session = session
    return session is not None


async def prime_sessions(
    host: str, port: int, domain: str, contexts: list[ssl.SSLContext], concurrency: int = 10
) -> Counter[str]:
    """:func:`prime_session` for every context, ``concurrency`` at a time; the errors, by kind."""
    errors: Counter[str] = Counter()
    pending = iter(contexts)

    async def worker() -> None:
        for context in pending:
            try:
                if not await prime_session(host, port, domain, context):
                    errors["no TLS session to resume"] += 1
            except LoginError as exc:
                errors[exc.kind] += 1

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(contexts)))))
    return errors


def resumed_connector(host: str, port: int, domain: str, contexts: list[ssl.SSLContext]) -> Connect:
    """Logins over direct TLS that must resume the session their context offers: one that did a full
    handshake instead counts as an error (``tls: not resumed``): a resumed row holds resumed logins only."""

    async def connect(n: int) -> Stream:
        stream = await xmpp_login(host, port, domain, contexts[n % len(contexts)], starttls=False)
        if not stream.writer.get_extra_info("ssl_object").session_reused:
            stream.writer.transport.abort()
            raise LoginError("tls: not resumed (a full handshake)")
        return stream

    return connect


# -- reporting ----------------------------------------------------------------------------------------------


def login_rows(reports: list[LoginReport]) -> list[str]:
    """Markdown table rows of login/handshake runs."""
    rows = [
        "| run | ok/count | conc. | logins/s | median ms | p99 ms | server CPU ms/login "
        "| client CPU ms/login | other load (cores) | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        cpu = f"{r.cpu_ms_per_login:.2f}" if r.cpu_ms_per_login is not None else "-"
        errors = "; ".join(f"{kind} ×{n}" for kind, n in r.errors.most_common()) or "0"
        rows.append(
            f"| {r.label} | {r.ok}/{r.count} | {r.concurrency} | {r.per_second:.1f} | {r.median_ms:.1f} "
            f"| {r.p99_ms:.1f} | {cpu} | {r.client_cpu_ms_per_login:.2f} | {r.other_load:.2f} | {errors} |"
        )
    return rows


def idle_rows(reports: list[IdleReport]) -> list[str]:
    rows = [
        "| run | sessions up/asked | alive after hold | RSS before MiB | RSS after MiB | KiB/session "
        "| setup s | logins/s first→last 10% | other load (cores) | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        errors = "; ".join(f"{kind} ×{n}" for kind, n in r.errors.most_common()) or "0"
        rows.append(
            f"| {r.label} | {r.ok}/{r.sessions} | {r.alive} | {r.rss_before / 2**20:.1f} "
            f"| {r.rss_after / 2**20:.1f} | {r.bytes_per_session / 1024:.1f} | {r.setup_seconds:.1f} "
            f"| {r.rate_between(0, 0.1):.0f}→{r.rate_between(0.9, 1):.0f} | {r.other_load:.2f} | {errors} |"
        )
    return rows


# -- command line -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--domain", default="localhost", help="the stream's 'to' and the users' domain")
    parser.add_argument("--tls", choices=("direct", "starttls"), default="direct")
    parser.add_argument("--mode", choices=("login", "tls", "idle"), default="login")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--idle", type=int, default=1000, help="sessions to hold in idle mode")
    parser.add_argument("--key-type", choices=KEY_TYPES, default="ec-p256")
    parser.add_argument("--server-pid", type=int, help="read the server's CPU time and memory from /proc")
    parser.add_argument(
        "--ca-cert", type=Path, help="PEM of a CA the server trusts (default: the server's CA)"
    )
    parser.add_argument("--ca-key", type=Path, help="its unencrypted private key (PEM)")
    parser.add_argument("--server-ca", type=Path, help="verify the server's certificate against this CA file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.mode == "idle" and not args.server_pid:
        raise SystemExit("--mode idle needs --server-pid (it measures the server's memory)")
    raise_nofile_limit()
    ca = load_ca_files(args.ca_cert, args.ca_key) if args.ca_cert else load_server_ca()
    users = args.idle if args.mode == "idle" else args.count
    with tempfile.TemporaryDirectory(prefix="xmppauth-bench-") as scratch:
        identities = make_identities(*ca, args.domain, users, Path(scratch), key_type=args.key_type)
        contexts = contexts_for(identities, args.server_ca)
    label = f"{args.mode} {args.tls} {args.key_type}"
    if args.mode == "tls":
        connect = tls_connector(args.host, args.port, args.domain, contexts)
    else:
        connect = xmpp_connector(args.host, args.port, args.domain, contexts, starttls=args.tls == "starttls")
    if args.mode == "idle":
        idle = asyncio.run(run_idle(connect, args.idle, args.concurrency, label, server_pid=args.server_pid))
        print("\n".join(idle_rows([idle])))
        return 0 if idle.ok else 1
    report = asyncio.run(
        run_logins(
            connect,
            args.count,
            args.concurrency,
            label,
            server_pid=args.server_pid,
            xmpp=args.mode == "login",
        )
    )
    print("\n".join(login_rows([report])))
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
