"""What every bench probe's ``sitecustomize`` needs: run a patch on a module once it has been imported.

A probe directory is put first on the server's ``PYTHONPATH`` (``bench.profile_login``), so its
``sitecustomize`` runs at start-up, before Django or the server import anything; it adds this directory to
``sys.path`` and calls :func:`patch_on_import`, which patches the module right after its own code ran.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable
from typing import Any


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def __init__(self, name: str, patch: Callable[[Any], None]) -> None:
        self.name = name
        self.patch = patch

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != self.name:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            execute(module)
            self.patch(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def patch_on_import(name: str, patch: Callable[[Any], None]) -> None:
    """``patch(module)`` as soon as the module ``name`` is imported (its code has run, nobody has used it)."""
    sys.meta_path.insert(0, _PatchOnImport(name, patch))
