"""The direction of imports between the layers (docs/ARCHITECTURE.md, "Layers and the direction of imports").

A static check with ``ast`` over the source tree: every ``import`` and ``from ... import`` counts, at module
level or inside a function (lazy imports), under ``if TYPE_CHECKING:`` too. The rules:

- the core (``transport.xmpp``) imports the standard library, itself, and its allow-list only;
- ``certauth`` and ``accounts`` import no ``transport`` module but the core;
- ``certauth`` and ``accounts`` import no adapter (``transport.tcp``, ``transport.http``, ``transport.tls``,
  ``transport.driver``);
- ``accounts`` imports no ``certauth.admin`` (certauth's admin registers into ``accounts.admin``);
- ``xmppauth`` outside the composition root (asgi, wsgi, celery, urls, the admin site and its dashboard)
  imports no app;
- only the composition root (and the apps' management commands) imports the composition root.

A failure names the file and line, the import as written, and the rule it breaks.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("accounts", "certauth", "transport", "xmppauth")
APPS = ("accounts", "certauth", "transport")
CORE = "transport.xmpp"
# Third-party packages the core may import: the JID grammar's RFC 7622 profiles (PRECIS, IDNA2008).
CORE_ALLOWED = ("precis_i18n", "idna")
ADAPTERS = ("transport.tcp", "transport.http", "transport.tls", "transport.driver")
# The modules where the apps are put together: they may import every app.
# Auth methods, EXTERNAL verifiers and verify modes: each registry is owned by the module that implements
# it and imports no Django at module level, so the config loader validates names against it.
REGISTRIES = ("certauth.authmethods", "certauth.identity", "certauth.verify")
COMPOSITION_ROOT = (
    "xmppauth.asgi",
    "xmppauth.wsgi",
    "xmppauth.celery",
    "xmppauth.urls",
    "xmppauth.adminsite",
    "xmppauth.dashboard",
    "xmppauth.metricsview",
    "xmppauth.management",
)


def within(module: str, *prefixes: str) -> bool:
    """``module`` is one of ``prefixes`` or inside one of them (``a.b`` is within ``a``, ``ab`` is not)."""
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def top(module: str) -> str:
    return module.partition(".")[0]


@dataclass(frozen=True)
class Rule:
    text: str
    importers: tuple[str, ...]  # the packages or modules it governs
    allows: Callable[[str], bool]  # whether an imported module is allowed there
    exempt: Callable[[str], bool] = lambda importer: False

    def governs(self, importer: str) -> bool:
        return within(importer, *self.importers) and not self.exempt(importer)


def in_composition_root(module: str) -> bool:
    """The root's modules, the management commands of every app, and ``xmppauth/__init__.py``, which loads
    the Celery app (Celery's convention)."""
    return within(module, *COMPOSITION_ROOT) or ".management.commands" in module or module == "xmppauth"


RULES = {
    "core": Rule(
        f"the core ({CORE}) imports only the standard library, itself and {', '.join(CORE_ALLOWED)}",
        (CORE,),
        lambda target: (
            within(target, CORE)
            or top(target) in sys.stdlib_module_names
            or top(target) in ("__future__", *CORE_ALLOWED)
        ),
    ),
    "apps-transport": Rule(
        f"certauth and accounts import no transport module but the core ({CORE})",
        ("certauth", "accounts"),
        lambda target: not within(target, "transport") or within(target, CORE),
    ),
    "apps-adapters": Rule(
        f"certauth and accounts import no transport adapter ({', '.join(ADAPTERS)})",
        ("certauth", "accounts"),
        lambda target: not within(target, *ADAPTERS),
    ),
    "accounts-certauth-admin": Rule(
        "accounts imports no certauth admin module (certauth.admin registers into accounts.admin)",
        ("accounts",),
        lambda target: not within(target, "certauth.admin"),
    ),
    "project": Rule(
        "xmppauth outside the composition root (asgi, wsgi, celery, urls, adminsite, dashboard) "
        f"imports no app but the registries the config loader checks names against ({', '.join(REGISTRIES)})",
        ("xmppauth",),
        lambda target: not within(target, *APPS) or target in REGISTRIES,
        exempt=in_composition_root,
    ),
    "root": Rule(
        "only the composition root imports the composition root (asgi, wsgi, celery, urls, adminsite, "
        "dashboard; management commands)",
        PACKAGES,
        lambda target: not within(target, *COMPOSITION_ROOT),
        exempt=in_composition_root,
    ),
}


@dataclass(frozen=True)
class Violation:
    path: str  # relative to the tree's root
    line: int
    statement: str
    importer: str
    target: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: `{self.statement}` ({self.target}) breaks: {RULES[self.rule].text}"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(root: Path, module: str) -> bool:
    base = root.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imported_modules(root: Path, path: Path, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The modules an import statement loads: ``from a import b`` is ``a.b`` when that is a module of the
    tree, else ``a``; relative imports resolved against the importing module's package."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:
        package = module_name(root, path).split(".")
        if path.name != "__init__.py":
            package.pop()
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        yield candidate if is_module(root, candidate) else base


def violations(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[Violation]:
    found: list[Violation] = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            importer = module_name(root, path)
            rules = [name for name, rule in RULES.items() if rule.governs(importer)]
            if not rules:
                continue
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):  # every statement, lazy imports inside functions included
                if not isinstance(node, ast.Import | ast.ImportFrom):
                    continue
                for target in dict.fromkeys(imported_modules(root, path, node)):  # each module once
                    for name in rules:
                        if not RULES[name].allows(target):
                            relative = str(path.relative_to(root))
                            statement = ast.unparse(node)
                            found.append(Violation(relative, node.lineno, statement, importer, target, name))
    return found


@pytest.fixture(scope="module")
def tree_violations() -> list[Violation]:
    return violations(ROOT)


@pytest.mark.parametrize("rule", list(RULES))
def test_the_source_tree_keeps_the_rule(tree_violations, rule):
    broken = [v for v in tree_violations if v.rule == rule]
    assert not broken, "imports against the layers:\n" + "\n".join(str(v) for v in broken)


# --- the checker itself, on a fabricated tree -----------------------------------------------------------


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    for parent in path.relative_to(root).parents:
        if parent != Path("."):
            (root / parent / "__init__.py").touch()
    path.write_text(text)


@pytest.fixture
def fake_tree(tmp_path) -> Path:
    _write(tmp_path, "transport/xmpp/events.py", "import re\nfrom dataclasses import dataclass\n")
    _write(tmp_path, "transport/xmpp/jid.py", "import idna\nfrom precis_i18n import get_profile\n")
    _write(tmp_path, "transport/http/websocket.py", "import django\n")
    _write(tmp_path, "transport/sessions/models.py", "")
    _write(tmp_path, "certauth/admin.py", "from accounts.models import Account\n")
    _write(tmp_path, "certauth/identity.py", "from transport.xmpp import jid\n")
    _write(tmp_path, "accounts/models.py", "from certauth.identity import parse\n")
    _write(tmp_path, "xmppauth/config.py", "import tomllib\n")
    _write(tmp_path, "xmppauth/asgi.py", "from transport.http import websocket\nimport accounts.models\n")
    _write(tmp_path, "xmppauth/dashboard.py", "from certauth.admin import overview\n")
    _write(tmp_path, "xmppauth/celery.py", "def ready():\n    from certauth import identity\n")
    _write(tmp_path, "xmppauth/__init__.py", "from xmppauth.celery import app\n")
    _write(tmp_path, "transport/management/commands/runxmpp.py", "from xmppauth.asgi import application\n")
    return tmp_path


def test_a_clean_tree_has_no_violation(fake_tree):
    assert violations(fake_tree) == []


@pytest.mark.parametrize(
    ("relative", "text", "rule", "target"),
    [
        ("transport/xmpp/stream.py", "import asyncio\nimport django.conf\n", "core", "django.conf"),
        (
            "transport/xmpp/stream.py",
            "def f():\n    from twisted.internet import reactor\n",
            "core",
            "twisted.internet",
        ),
        (
            "transport/xmpp/stream.py",
            "from certauth.identity import Jid, parse\n",
            "core",
            "certauth.identity",
        ),
        (
            "transport/xmpp/im/roster.py",
            "from ...sessions import models\n",
            "core",
            "transport.sessions.models",
        ),
        (
            "certauth/models.py",
            "from transport.sessions.models import LiveSession\n",
            "apps-transport",
            "transport.sessions.models",
        ),
        (
            "accounts/admin.py",
            "def f():\n    import transport.http.websocket\n",
            "apps-adapters",
            "transport.http.websocket",
        ),
        (
            "accounts/admin.py",
            "from transport.http import websocket\n",
            "apps-transport",
            "transport.http.websocket",
        ),
        ("accounts/admin.py", "from certauth.admin import X\n", "accounts-certauth-admin", "certauth.admin"),
        ("accounts/admin.py", "from certauth import admin\n", "accounts-certauth-admin", "certauth.admin"),
        (
            "xmppauth/config.py",
            "def f():\n    from transport.http import origin\n",
            "project",
            "transport.http",
        ),
        (
            "xmppauth/limits.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from accounts.models import A\n",
            "project",
            "accounts.models",
        ),
        ("certauth/tasks.py", "def f():\n    from xmppauth import dashboard\n", "root", "xmppauth.dashboard"),
        ("transport/tcp/protocol.py", "from xmppauth.asgi import application\n", "root", "xmppauth.asgi"),
    ],
)
def test_the_checker_names_a_fabricated_violation(fake_tree, relative, text, rule, target):
    _write(fake_tree, relative, text)
    found = [v for v in violations(fake_tree) if v.rule == rule]
    assert [(v.path, v.target) for v in found] == [(relative, target)]
    message = str(found[0])
    assert message.startswith(f"{relative}:{found[0].line}: `") and RULES[rule].text in message


def test_the_failure_message_names_file_line_import_and_rule(fake_tree):
    _write(fake_tree, "certauth/authenticator.py", "import logging\n\nfrom transport.tcp.protocol import X\n")
    (message,) = [str(v) for v in violations(fake_tree) if v.rule == "apps-adapters"]
    assert message == (
        "certauth/authenticator.py:3: `from transport.tcp.protocol import X` (transport.tcp.protocol) "
        "breaks: " + RULES["apps-adapters"].text
    )
