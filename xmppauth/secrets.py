"""Secrets read from the environment, or generated once under var/ for the embedded default."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

logger = logging.getLogger(__name__)


def read_or_create_secret(env_name: str, fallback_file: Path) -> str:
    """Return the secret in ``env_name``; else the one stored in ``fallback_file``, created if missing.

    The file is created with mode 0600. Its content is never logged.
    """
    value = os.environ.get(env_name)
    if value:
        return value
    if fallback_file.exists():
        return fallback_file.read_text().strip()
    fallback_file.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    fd = os.open(fallback_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    logger.warning("%s is not set: generated one in %s (set it in production)", env_name, fallback_file)
    return value
