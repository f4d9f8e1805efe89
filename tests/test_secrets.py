"""var/, the SQLite database, secrets and keys are readable by their owner only (issue 12 §9)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from xmppauth.secrets import make_private, read_or_create_secret, write_private

REPO = Path(__file__).resolve().parents[1]


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_fresh_embedded_default_makes_var_0700_and_database_and_secrets_0600(tmp_path):
    var = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(XMPPAUTH_VAR_DIR=str(var), XMPPAUTH_SECRET_KEY="", XMPPAUTH_KEY_ENCRYPTION_KEY="")
    old_umask = os.umask(0o022)  # the usual umask: without our chmods everything would be 0644 / 0755
    try:
        for args in (["migrate", "--noinput"], ["bootstrap"]):
            done = subprocess.run(
                [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True
            )
            assert done.returncode == 0, done.stderr
    finally:
        os.umask(old_umask)
    assert _mode(var) == 0o700
    assert _mode(var / "xmppauth.sqlite3") == 0o600
    assert _mode(var / "django-secret-key") == 0o600
    assert _mode(var / "key-encryption-key") == 0o600
    assert _mode(var / "pki") == 0o700
    assert _mode(var / "pki" / "server.key") == 0o600


def test_existing_world_readable_secret_and_database_are_made_0600(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("kept-value\n")
    secret.chmod(0o644)
    assert read_or_create_secret("XMPPAUTH_TEST_UNSET_SECRET", secret) == "kept-value"
    assert _mode(secret) == 0o600
    database = tmp_path / "db.sqlite3"
    database.write_bytes(b"")
    database.chmod(0o666)
    make_private(database)
    assert _mode(database) == 0o600


def test_write_private_sets_0600_over_an_older_file_and_refuses_a_symlink(tmp_path):
    key = tmp_path / "server.key"
    key.write_text("old")
    key.chmod(0o644)
    write_private(key, b"new")
    assert key.read_bytes() == b"new" and _mode(key) == 0o600
    target = tmp_path / "elsewhere"
    target.write_text("untouched")
    link = tmp_path / "link.key"
    link.symlink_to(target)
    try:
        write_private(link, b"key material")
    except OSError:
        pass
    else:
        raise AssertionError("write_private followed a symlink")
    assert target.read_text() == "untouched"
