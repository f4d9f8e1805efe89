"""Benchmark: messages between a TCP client and a WebSocket client, through the router (issue 6).

Prints figures; not a test. On 127.0.0.1 with free ports and a scratch SQLite file:

- ``--mode redis`` (production's shape): ``manage.py runc2s`` (TCP, direct TLS), our daphne server (wss,
  RFC 7395) and ``manage.py runworker xmpp.router``, three processes sharing one Redis (``--redis-url``).
- ``--mode embedded``: ``manage.py runxmpp`` alone, without Redis (in-memory channel layer, one process).

Clients, in this process, in raw XML (no XMPP library in the measured path): alice over TCP
(``asyncio`` + ``ssl``) and dave over wss (``websockets``), each logged in with SASL EXTERNAL and a client
certificate, with available presence sent. Figures:

1. round trip: alice sends a chat message to dave's full JID; dave's client answers each one at once; the
   time until alice reads the answer, ``--round-trips`` times one after the other: median and p99;
2. throughput, each direction: ``--messages`` chat messages written at once; messages per second from the
   first write to the last message read on the other side.

Run from the checkout (Redis must answer on ``--redis-url``)::

    .venv/bin/python -m bench.messaging --mode redis --redis-url redis://127.0.0.1:6379/12
    .venv/bin/python -m bench.messaging --mode embedded
"""

from __future__ import annotations

import argparse
import asyncio
import re
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.im.processes import Managed, free_port, server_env, wait_listening  # noqa: E402
from tests.im.test_messaging_processes import Cluster  # noqa: E402
from tests.transport.tlsclient import client_context  # noqa: E402

HEADER = (
    "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
)
OPEN = "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>"
AUTH = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>"
BODY = re.compile(rb"<body>([^<]*)</body>")
STEP_TIMEOUT = 30.0
# Messages in flight in a throughput run: half the server's default [xmppauth] session_queue_stanzas
# (1000), past which it ends the sending session with policy-violation (issue 16).
WINDOW = 500


def bind(resource: str) -> str:
    return (
        f"<iq type='set' id='bind' xmlns='jabber:client'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
        f"<resource>{resource}</resource></bind></iq>"
    )


def chat(to: str, body: str) -> str:
    return f"<message xmlns='jabber:client' to='{to}' type='chat'><body>{body}</body></message>"


class TcpClient:
    """alice over direct TLS: bytes in, <body/> texts out."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buffer = b""

    @classmethod
    async def login(cls, port: int, context: ssl.SSLContext, resource: str) -> TcpClient:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="localhost"
        )
        client = cls(reader, writer)
        for send, until in (
            (HEADER, b"</stream:features>"),
            (AUTH, b"<success"),
            (HEADER, b"</stream:features>"),
            (bind(resource), b"</iq>"),
        ):
            writer.write(send.encode())
            await client.read_until(until)
        writer.write(b"<presence/>")
        return client

    async def read_until(self, marker: bytes) -> None:
        while marker not in self.buffer:
            chunk = await asyncio.wait_for(self.reader.read(65536), STEP_TIMEOUT)
            if not chunk:
                raise ConnectionError(f"closed while waiting for {marker!r}: {self.buffer[-300:]!r}")
            self.buffer += chunk
        self.buffer = self.buffer[self.buffer.index(marker) + len(marker) :]

    async def bodies(self) -> list[bytes]:
        chunk = await asyncio.wait_for(self.reader.read(65536), STEP_TIMEOUT)
        if not chunk:
            raise ConnectionError("the TCP session closed")
        self.buffer += chunk
        found = BODY.findall(self.buffer)
        cut = self.buffer.rfind(b"</body>")
        if cut >= 0:
            self.buffer = self.buffer[cut + 7 :]
        return found

    def send(self, xml: str) -> None:
        self.writer.write(xml.encode())


class WsClient:
    """dave over wss (RFC 7395): one element per frame."""

    def __init__(self, socket: websockets.ClientConnection) -> None:
        self.socket = socket

    @classmethod
    async def login(cls, url: str, context: ssl.SSLContext, resource: str) -> WsClient:
        socket = await websockets.connect(url, subprotocols=["xmpp"], ssl=context, max_size=None)
        client = cls(socket)
        for send, until in (
            (OPEN, "</stream:features>"),
            (AUTH, "<success"),
            (OPEN, "</stream:features>"),
            (bind(resource), "</iq>"),
        ):
            await socket.send(send)
            while until not in (await asyncio.wait_for(socket.recv(), STEP_TIMEOUT)):
                pass
        await socket.send("<presence xmlns='jabber:client'/>")
        return client

    async def bodies(self) -> list[bytes]:
        frame = await asyncio.wait_for(self.socket.recv(), STEP_TIMEOUT)
        return BODY.findall(frame.encode() if isinstance(frame, str) else frame)

    def send(self, xml: str) -> None:
        asyncio.get_running_loop().create_task(self.socket.send(xml))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


async def wait_presence_settled(tcp: TcpClient, ws: WsClient) -> None:
    """One message each way, so both sessions are registered and routed before any clock starts."""
    tcp.send(chat("dave@localhost/ws", "warm"))
    while b"warm" not in await ws.bodies():
        pass
    ws.send(chat("alice@localhost/tcp", "warm"))
    while b"warm" not in await tcp.bodies():
        pass


async def round_trips(tcp: TcpClient, ws: WsClient, count: int) -> list[float]:
    async def echo() -> None:
        while True:
            for body in await ws.bodies():
                ws.send(chat("alice@localhost/tcp", body.decode()))

    echoing = asyncio.create_task(echo())
    times = []
    try:
        for index in range(count):
            started = time.perf_counter()
            tcp.send(chat("dave@localhost/ws", f"rt{index}"))
            wanted = f"rt{index}".encode()
            while wanted not in await tcp.bodies():
                pass
            times.append(time.perf_counter() - started)
    finally:
        echoing.cancel()
        await asyncio.gather(echoing, return_exceptions=True)
    return times


async def throughput(sender, receiver, to: str, count: int, tag: str) -> tuple[float, int]:
    """``count`` messages as fast as the receiver takes them, at most :data:`WINDOW` sent and not yet received
    (the server ends a session with more than ``session_queue_stanzas`` stanzas waiting to be routed)."""
    started = time.perf_counter()
    sent = received = 0
    last = f"{tag}{count - 1}".encode()
    try:
        while received < count:
            while sent < count and sent - received < WINDOW:
                sender.send(chat(to, f"{tag}{sent}"))
                sent += 1
            bodies = await receiver.bodies()
            received += sum(1 for body in bodies if body.startswith(tag.encode()))
            if last in bodies:
                break
    except TimeoutError:
        pass
    return time.perf_counter() - started, received


async def measure(tcp_port: int, url: str, directory: Path, certs: dict, args: argparse.Namespace) -> None:
    tcp = await TcpClient.login(tcp_port, client_context(directory, certs["alice"]), "tcp")
    ws = await WsClient.login(url, client_context(directory, certs["dave"]), "ws")
    await wait_presence_settled(tcp, ws)
    times = await round_trips(tcp, ws, args.round_trips)
    print(f"round trip TCP -> WebSocket -> TCP, {len(times)} sequential messages:")
    print(
        f"  median {statistics.median(times) * 1000:.2f} ms, p99 {percentile(times, 0.99) * 1000:.2f} ms, "
        f"max {max(times) * 1000:.2f} ms"
    )
    for name, sender, receiver, to, tag in (
        ("TCP -> WebSocket", tcp, ws, "dave@localhost/ws", "a"),
        ("WebSocket -> TCP", ws, tcp, "alice@localhost/tcp", "b"),
    ):
        elapsed, received = await throughput(sender, receiver, to, args.messages, tag)
        print(
            f"throughput {name}: {received}/{args.messages} messages in {elapsed:.2f} s = "
            f"{received / elapsed:.0f} messages/s"
        )
    tcp.writer.close()
    await ws.socket.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=("redis", "embedded"), default="redis")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--round-trips", type=int, default=500)
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-messaging-") as scratch:
        directory = Path(scratch)
        redis_url = args.redis_url if args.mode == "redis" else None
        cluster = Cluster(directory, redis_url)
        try:
            if args.mode == "redis":
                cluster.router_process = cluster.router()
                tcp_port, _ = cluster.runc2s("c2s")
                url, _ = cluster.daphne("wss")
                print("processes: runc2s (TCP), daphne (wss), runworker xmpp.router; Redis", redis_url)
            else:
                tcp_port, https_port = free_port(), free_port()
                from tests.im.processes import c2s_config

                config = c2s_config(
                    directory / "embedded.toml",
                    tcp_port,
                    cluster.pki.server_certfile,
                    cluster.pki.server_keyfile,
                    cluster.cafile,
                    https_port=https_port,
                )
                process = Managed(server_env(directory, config, None), "runxmpp")
                cluster.processes.append(process)
                wait_listening(process, tcp_port)
                wait_listening(process, https_port)
                url = f"wss://127.0.0.1:{https_port}/ws-xmpp"
                print("process: runxmpp alone (TCP and wss), in-memory channel layer, in-process router")
            asyncio.run(measure(tcp_port, url, directory, cluster.certs, args))
        finally:
            for process in cluster.processes:
                process.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
