"""Benchmark: time from a revocation to the live session's ``<reset/>`` (DESIGN §5: within a second).

Prints figures; not a test. What it does, on 127.0.0.1 with free ports:

1. a scratch server as ``bench.run_login_bench`` prepares it (SQLite file migrated and bootstrapped, or
   ``--database-url``), and ``manage.py runc2s`` as its own process (its termination watcher included);
2. ``--tries`` client certificates issued by the server's CA and recorded in the database (so they can be
   revoked), one per account;
3. per try: a client logs in over direct TLS (XEP-0368) and holds its session; the certificate is revoked,
   either in this process with ``certauth.services.revoke`` (``--via service``) or with ``manage.py pki
   revoke`` in another process (``--via command``); the clock stops when the client reads ``<reset`` (RFC 6120
   §13.7.2.3). Two figures per try: from the revocation's commit (the ``SessionTermination`` row's
   ``created_at``, written right after it, same machine clock) and, with ``--via service``, from the call's
   return. A command's return is no start: the interpreter takes longer to exit than the session to end.

Run from the checkout::

    .venv/bin/python -m bench.revocation_latency                     # 20 tries, service call, no Redis
    .venv/bin/python -m bench.revocation_latency --via command --redis redis://127.0.0.1:6379/13
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.clientcerts import Identity, client_context
from bench.loadclient import close_stream, xmpp_login
from bench.run_login_bench import DOMAIN, HOST, ROOT, Scratch, prepare, start_runc2s

RESET_TIMEOUT = 10.0  # a session not ended by then counts as a failure, not as a figure


def setup_django(scratch: Scratch) -> None:
    for key in ("XMPPAUTH_CONFIG", "XMPPAUTH_VAR_DIR", "DATABASE_URL", "REDIS_URL"):
        if key in scratch.env:
            os.environ[key] = scratch.env[key]
        else:
            os.environ.pop(key, None)
    os.environ["DJANGO_SETTINGS_MODULE"] = "xmppauth.settings"
    import django

    django.setup()


def issue_identities(count: int, directory: Path) -> list[tuple[Identity, str]]:
    """``count`` accounts with a recorded certificate each: (identity, fingerprint)."""
    from cryptography.hazmat.primitives import serialization

    from accounts.models import Account, Domain
    from certauth import services

    domain, _ = Domain.objects.get_or_create(name=DOMAIN)
    out = []
    for n in range(count):
        account = Account.objects.create(localpart=f"revoked{n}", domain=domain)
        issued = services.issue_for_account(account, days=2)
        path = directory / f"revoked{n}.pem"
        path.write_bytes(
            issued.private_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            + issued.certificate.public_bytes(serialization.Encoding.PEM)
        )
        out.append((Identity(account.jid, path), issued.row.fingerprint_sha256))
    return out


def revoke_by_service(fingerprint: str) -> None:
    from django.db import close_old_connections

    from certauth import services
    from certauth.models import RevocationReason

    close_old_connections()
    services.revoke(services.find_certificate(fingerprint), RevocationReason.KEY_COMPROMISE)
    close_old_connections()


def revoke_by_command(env: dict[str, str], fingerprint: str) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "pki", "revoke", fingerprint, "--reason", "key_compromise"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )


def commit_time(fingerprint: str) -> float:
    """When the termination command of ``fingerprint`` was written (epoch seconds)."""
    from transport.sessions.models import SessionTermination

    row = SessionTermination.objects.filter(fingerprint=fingerprint).order_by("-id").first()
    if row is None:
        raise RuntimeError(f"no SessionTermination for {fingerprint}")
    return row.created_at.timestamp()


async def one_try(scratch: Scratch, identity: Identity, fingerprint: str, via: str) -> tuple[float, float]:
    """Seconds from the commit and from the call's return to ``<reset`` on the client's stream."""
    stream = await xmpp_login(HOST, scratch.direct_port, DOMAIN, client_context(identity), starttls=False)

    async def reset_seen() -> float:
        while b"<reset" not in stream.buffer:
            chunk = await stream.reader.read(65536)
            if not chunk:
                raise RuntimeError(f"closed without <reset/>: {stream.buffer[-300:]!r}")
            stream.buffer += chunk
        return time.perf_counter(), time.time()

    waiter = asyncio.create_task(reset_seen())
    try:
        if via == "service":
            await asyncio.to_thread(revoke_by_service, fingerprint)
        else:
            await asyncio.to_thread(revoke_by_command, scratch.env, fingerprint)
        revoked = time.perf_counter()
        seen, seen_wall = await asyncio.wait_for(waiter, RESET_TIMEOUT)
        committed = await asyncio.to_thread(commit_time, fingerprint)
        return seen_wall - committed, seen - revoked
    finally:
        waiter.cancel()
        close_stream(stream, xmpp=False)


async def run(
    scratch: Scratch, identities: list[tuple[Identity, str]], via: str
) -> tuple[list[float], list[float]]:
    from_commit, from_return = [], []
    for n, (identity, fingerprint) in enumerate(identities, 1):
        since_commit, since_return = await one_try(scratch, identity, fingerprint, via)
        print(
            f"try {n:2}: {since_commit * 1000:6.1f} ms from commit, {since_return * 1000:6.1f} ms from return"
        )
        from_commit.append(since_commit)
        from_return.append(since_return)
    return from_commit, from_return


def summary(values: list[float]) -> str:
    return (
        f"median {statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms, "
        f"min {min(values) * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--via", choices=["service", "command"], default="service")
    parser.add_argument("--redis", help="REDIS_URL for the server and the revoking side (default: none)")
    parser.add_argument("--database-url", help="a throw-away database instead of a scratch SQLite file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="revocation-bench-") as tmp:
        scratch = prepare(Path(tmp), args.database_url)
        if args.redis:
            scratch.env["REDIS_URL"] = args.redis
        setup_django(scratch)
        identities = issue_identities(args.tries, Path(tmp))
        server = start_runc2s(scratch)
        try:
            from_commit, from_return = asyncio.run(run(scratch, identities, args.via))
        finally:
            output = server.stop()
        if "Traceback" in output:
            print(output[-3000:], file=sys.stderr)
    database = (args.database_url or "sqlite").split(":", 1)[0]
    label = f"revocation -> <reset/> via {args.via}, {database}, {'Redis' if args.redis else 'no Redis'}"
    print(f"{label}, {len(from_commit)} tries, from commit: {summary(from_commit)}")
    if args.via == "service":
        print(f"{label}, {len(from_return)} tries, from return: {summary(from_return)}")


if __name__ == "__main__":
    main()
