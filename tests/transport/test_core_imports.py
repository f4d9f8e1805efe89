"""The core (transport/xmpp/) is pure: it imports the standard library and, for the JID grammar (RFC 7622
via RFC 8265 and IDNA2008), exactly two pure-Python libraries, ``precis_i18n`` and ``idna`` (the allow-list
of docs/ARCHITECTURE.md). Checked in a fresh interpreter, with the I/O and framework packages made
unimportable by a meta-path finder, every module of the package imported (issue 13 §1).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("django", "twisted", "asyncio", "socket", "ssl", "OpenSSL", "channels", "daphne")
ALLOWED_THIRD_PARTY = ("precis_i18n", "idna")

PROBE = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys

    BLOCKED = set(json.loads(sys.argv[1]))

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ImportError(f"the pure core imported {name}")
            return None

    sys.meta_path.insert(0, Refuse())
    before = set(sys.modules)
    import transport.xmpp
    names = ["transport.xmpp"] + [
        info.name for info in pkgutil.walk_packages(transport.xmpp.__path__, "transport.xmpp.")
    ]
    for name in names:
        importlib.import_module(name)
    loaded = sorted({name.partition(".")[0] for name in set(sys.modules) - before})
    print(json.dumps({"modules": names, "loaded": loaded}))
    """
)


def probe(blocked: tuple[str, ...] = BLOCKED) -> dict[str, list[str]]:
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(ROOT)!r})\n{PROBE}",
            json.dumps(blocked),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_every_core_module_imports_with_io_and_frameworks_blocked():
    found = probe()
    assert "transport.xmpp.connection" in found["modules"] and "transport.xmpp.jid" in found["modules"]
    assert not set(found["loaded"]) & set(BLOCKED)


def test_the_core_imports_only_the_standard_library_and_the_allow_list():
    outside = set(probe()["loaded"]) - set(sys.stdlib_module_names) - {"transport", *ALLOWED_THIRD_PARTY}
    assert not outside, f"the core imported {sorted(outside)}"


def test_the_probe_fails_when_a_blocked_module_is_imported():
    """The finder bites: block something the core does import (the expat parser) and the probe fails."""
    with pytest.raises(AssertionError, match="the pure core imported xml"):
        probe(("xml",))
