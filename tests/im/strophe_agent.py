"""A scripted Strophe.js client over wss (tests/js/agent.cjs under Node), with SlixAgent's interface."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from pathlib import Path
from xml.etree.ElementTree import Element, fromstring

from cryptography.hazmat.primitives import serialization

from tests.certs import Issued
from tests.im.agents import TIMEOUT, StanzaInbox

JS_DIR = Path(__file__).resolve().parents[1] / "js"


def client_files(directory: Path, client: Issued, name: str) -> tuple[Path, Path]:
    certfile, keyfile = directory / f"{name}.pem", directory / f"{name}.key"
    chain = client.chain[:-1] or client.chain
    certfile.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
    keyfile.write_bytes(client.key_pem)
    return certfile, keyfile


class StropheAgent(StanzaInbox):
    def __init__(self, url: str, directory: Path, cert: Issued, jid: str, *, resource: str = "ws") -> None:
        self.jid = jid
        self.full_jid = f"{jid}/{resource}"
        self.received: list[Element] = []
        self.failures: list[dict] = []
        self.lines: list[str] = []  # everything the Node process printed
        self.disconnected = threading.Event()
        self._connected = threading.Event()
        self._cond = threading.Condition()
        certfile, keyfile = client_files(directory, cert, f"strophe-{jid}-{resource}")
        self.process = subprocess.Popen(
            ["node", str(JS_DIR / "agent.cjs"), url, jid, resource, str(certfile), str(keyfile)],
            cwd=JS_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def start(self) -> StropheAgent:
        if not self._connected.wait(TIMEOUT):
            raise AssertionError(f"Strophe {self.full_jid} never connected: {self.failures}")
        return self

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            with self._cond:
                if event["event"] == "stanza":
                    self.received.append(fromstring(event["xml"]))
                elif event["event"] == "connected":
                    self._connected.set()
                elif event["event"] == "failed":
                    self.failures.append(event)
                elif event["event"] == "disconnected":
                    self.disconnected.set()
                self._cond.notify_all()
        self.disconnected.set()

    def _command(self, command: dict) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def send(self, xml: str) -> None:
        """Send a stanza; RFC 7395 §3.3.2 wants ``jabber:client`` declared on each one."""
        if "xmlns=" not in xml.split(">", 1)[0]:
            xml = re.sub(r"^<([A-Za-z]+)", r"<\1 xmlns='jabber:client'", xml, count=1)
        self._command({"send": xml})

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self._command({"stop": True})
            except (BrokenPipeError, OSError):
                pass
            try:
                self.process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
