"""Secrets read from the environment, or generated once under var/ for the embedded default; and the one way
we write a private file (a secret, a key, the database) or make a private directory (var/)."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

logger = logging.getLogger(__name__)


PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def private_directory(path: Path) -> Path:
    """``path`` (and missing parents) made, and ``path`` itself set to 0700 whatever existed before."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_DIR_MODE)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only.

    The mode is set with ``fchmod`` on the open file: ``os.open``'s mode applies only when the file is new, so
    re-writing a key over an older world-readable file would otherwise keep that file's mode.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), PRIVATE_FILE_MODE)
        handle.write(data)


def make_private(path: Path) -> None:
    """Create ``path`` empty if missing and set it to 0600 (the SQLite database before Django opens it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)


def read_or_create_secret(env_name: str, fallback_file: Path) -> str:
    """Return the secret in ``env_name``; else the one stored in ``fallback_file``, created if missing.

    The file is created with mode 0600. Its content is never logged.
    """
    value = os.environ.get(env_name)
    if value:
        return value
    if fallback_file.exists():
        make_private(fallback_file)  # an older checkout may have left it readable by others
        return fallback_file.read_text().strip()
    private_directory(fallback_file.parent)
    value = secrets.token_urlsafe(48)
    write_private(fallback_file, (value + "\n").encode())
    logger.warning("%s is not set: generated one in %s (set it in production)", env_name, fallback_file)
    return value
