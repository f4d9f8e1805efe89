"""`make run` needs Python only (issue 18 §7): Node.js and npm are for the test targets alone."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _dry_run(target: str) -> str:
    # -B: every prerequisite counts as out of date, so its recipe is printed even when it was already run.
    result = subprocess.run(
        ["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout


def test_make_run_does_not_need_npm() -> None:
    commands = _dry_run("run")
    assert "manage.py runxmpp" in commands
    assert "npm" not in commands


def test_make_test_installs_the_js_dependencies() -> None:
    assert "npm ci" in _dry_run("test-sqlite")
