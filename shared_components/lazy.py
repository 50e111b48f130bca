"""Package ``__init__`` files whose exported names load on first use, so importing one sub-module stays cheap.

The ``__init__`` keeps its re-exports as ordinary ``from X import name`` lines under ``if TYPE_CHECKING:`` (what
type checkers, editors and :mod:`shared_components.shipping.vendor` read) and ends with ``lazy_exports(__name__)``,
which reads those lines and imports a module the first time one of its names is used
(``shared_components.data.check_datalist`` in a config, ``from shared_components.data import split``).
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any


class LazyPackage(ModuleType):
    """A package whose ``_lazy_exports`` (name -> (module, attribute)) are imported on first access."""

    _lazy_exports: dict[str, tuple[str, str]]

    def __getattr__(self, name: str) -> Any:
        target = self.__dict__.get("_lazy_exports", {}).get(name)
        if target is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(target[0]), target[1])
        setattr(self, name, value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        # importing a sub-module binds it to its package; where the package exports a same-named object of that
        # module (``data.fingerprint``), the object stays, as it did when the package imported it eagerly
        if isinstance(value, ModuleType) and self.__dict__.get("_lazy_exports", {}).get(name) == (value.__name__, name):
            value = getattr(value, name)
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(self.__dict__) | set(self._lazy_exports))


def _type_checking_imports(path: Path, package: str) -> dict[str, tuple[str, str]]:
    exports: dict[str, tuple[str, str]] = {}
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom):
                    base = package.rsplit(".", stmt.level - 1)[0] if stmt.level else ""
                    module = ".".join(p for p in (base, stmt.module) if p)
                    exports.update({a.asname or a.name: (module, a.name) for a in stmt.names})
    return exports


def lazy_exports(package: str) -> None:
    """Make the names ``package``'s ``__init__`` imports under ``if TYPE_CHECKING:`` load on first use."""
    module = sys.modules[package]
    exports = _type_checking_imports(Path(module.__file__), package)
    module.__class__ = LazyPackage
    module._lazy_exports = exports
