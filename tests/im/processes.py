"""Server processes for the messaging tests: ``runc2s`` listeners and a ``runworker`` router, sharing one
SQLite file and, when given, one Redis (DESIGN §1: production is several listeners, routers, one Redis)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.processes import Managed, free_port
from tests.transport.runc2s_process import environment

REDIS_TEST_URL = os.environ.get("XMPPAUTH_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


def redis_unreachable(url: str = REDIS_TEST_URL) -> str | None:
    """Why Redis cannot be used (None when it answers)."""
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:  # any failure means: no Redis for this test
        return f"no Redis at {url}: {exc}"
    return None


def c2s_config(
    path: Path,
    port: int,
    certfile: Path,
    keyfile: Path,
    cafile: Path,
    *,
    https_port: int | None = None,
    **options: object,
) -> Path:
    """A config with one direct-TLS c2s listener and, with ``https_port``, one HTTPS listener serving wss
    (RFC 7395) at /ws-xmpp and BOSH (XEP-0206) at /http-bind."""
    lines = ['[general]\n  hosts = ["localhost"]\n']
    if options:
        lines.append("[xmppauth]")
        lines += [f"  {key} = {value}" for key, value in options.items()]
        lines.append("")
    lines += [
        "[[listen.c2s]]",
        f"  port = {port}",
        '  ip_address = "127.0.0.1"',
        '  tls.mode = "tls"',
        f'  tls.certfile = "{certfile}"',
        f'  tls.keyfile = "{keyfile}"',
        f'  tls.cacertfile = "{cafile}"',
        '  tls.verify_mode = "peer"',
        "",
    ]
    if https_port is not None:
        lines += [
            "[[listen.http]]",
            f"  port = {https_port}",
            '  ip_address = "127.0.0.1"',
            f'  tls.certfile = "{certfile}"',
            f'  tls.keyfile = "{keyfile}"',
            f'  tls.cacertfile = "{cafile}"',
            '  tls.verify_mode = "peer"',
            "  [[listen.http.handlers.mod_websockets]]",
            '    path = "/ws-xmpp"',
            "  [[listen.http.handlers.mod_bosh]]",
            '    path = "/http-bind"',
            "",
        ]
    path.write_text("\n".join(lines))
    return path


def server_env(
    directory: Path, config: Path, redis_url: str | None, router_channel: str | None = None
) -> dict[str, str]:
    """The processes' environment; ``router_channel`` keeps test runs that share one Redis apart."""
    env = environment(directory, config)
    if redis_url:
        env["REDIS_URL"] = redis_url
    if router_channel:
        env["XMPPAUTH_ROUTER_CHANNEL"] = router_channel
    return env


def wait_listening(process: Managed, port: int, timeout: float = 60) -> None:
    """Until ``port`` accepts connections (daphne prints nothing we can wait for on every version)."""
    import socket
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return
        except OSError:
            assert process.process.poll() is None, process.stop()
            assert time.monotonic() < deadline, f"nothing listens on {port}: {process.stop()}"
            time.sleep(0.2)


def start_runc2s(env: dict[str, str], port: int) -> Managed:
    server = Managed(env, "runc2s")
    server.wait_for(f"runc2s ready: 127.0.0.1:{port}\n")
    return server


__all__ = ["Managed", "c2s_config", "free_port", "redis_unreachable", "server_env", "start_runc2s"]
