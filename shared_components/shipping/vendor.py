"""Vendor exactly the ``shared_components`` code a bundle's configs use into the bundle's own ``scripts`` package.

The configs name what they use (``shared_components.training.prepare_network``, ``_target_:
shared_components.data.make_dataset``, ...). Each name is resolved to the module that defines it, and the modules
those import from this package are followed (by reading their ``import`` statements), so the vendored copy holds the
defining modules and nothing else. Imports between vendored modules are rewritten to relative imports (so the copy
works under any package name), and each vendored sub-package gets an ``__init__`` exporting just the names the
configs reference; ``scripts/__init__.py`` imports the sub-packages, so ``$import scripts`` gives
``scripts.training.prepare_network`` exactly as ``$import shared_components`` gave
``shared_components.training.prepare_network``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

PACKAGE = "shared_components"
REFERENCE = re.compile(rf"\b{PACKAGE}((?:\.[A-Za-z_]\w*)+)")
# the Model Zoo's black/isort/flake8 line length
LINE_LENGTH = 120
# a one-line relative import: indent, source, names (no parentheses, no comment)
RELATIVE_IMPORT = re.compile(r"^( *)from (\.+[\w.]*) import ([\w ,]+)\n$")
HEADER = "# Vendored from monai-seg-bundles (Apache-2.0): {origin}\n"


@dataclass
class Vendored:
    """What :func:`vendor` wrote: module name -> file, the config names exported, the third-party imports."""

    files: dict[str, Path] = field(default_factory=dict)
    exports: dict[str, set[str]] = field(default_factory=dict)
    third_party: set[str] = field(default_factory=set)


def config_references(texts: Iterable[str]) -> set[str]:
    """Dotted names below ``shared_components`` that config texts use, e.g. ``training.prepare_network``."""
    return {m.group(1)[1:] for text in texts for m in REFERENCE.finditer(text)}


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _is_package(name: str) -> bool:
    spec = importlib.util.find_spec(name)
    return spec is not None and spec.submodule_search_locations is not None


def defining_module(module: str, name: str) -> str:
    """The module whose code defines ``module.name`` (following re-exports in package ``__init__`` files)."""
    if _is_module(f"{module}.{name}"):
        return f"{module}.{name}"
    mod = importlib.import_module(module)
    if not hasattr(mod, name):
        raise AttributeError(f"{module} has no attribute {name!r} (referenced by a bundle config).")
    obj = getattr(mod, name)
    owner = getattr(obj, "__module__", None)
    if isinstance(owner, str) and owner.startswith(PACKAGE) and getattr(sys.modules.get(owner), name, None) is obj:
        return owner
    # constants have no __module__: find the ``from X import name`` that put it there
    path = Path(mod.__file__)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            source = _absolute(node, module, _is_package(module))
            if source.startswith(PACKAGE):
                alias = next(a.name for a in node.names if (a.asname or a.name) == name)
                return defining_module(source, alias)
    return module


def resolve_reference(dotted: str) -> tuple[str, str, str]:
    """``'training.prepare_network'`` -> (container module, name, defining module)."""
    parts = dotted.split(".")
    module = PACKAGE
    for i, part in enumerate(parts):
        if _is_module(f"{module}.{part}") and i < len(parts) - 1:
            module = f"{module}.{part}"
            continue
        return module, part, defining_module(module, part)
    raise ValueError(f"{PACKAGE}.{dotted} names a module, not something a config can call.")


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _module_file(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"cannot find the source of {name}")
    return Path(spec.origin)


def _relative(current: str, current_is_package: bool, target: str) -> str:
    """Relative module path from ``current`` to ``target`` (both absolute in this package)."""
    here = current.split(".") if current_is_package else current.split(".")[:-1]
    there = target.split(".")
    common = 0
    while common < min(len(here), len(there)) and here[common] == there[common]:
        common += 1
    return "." * (len(here) - common + 1) + ".".join(there[common:])


def _imports(module: str) -> tuple[list[tuple[ast.stmt, dict[str, list[tuple[str, str | None]]]]], set[str]]:
    """Import statements of ``module`` that reach into this package (with, per statement, the defining module of
    each imported name) and the top-level names of the third-party packages it imports."""
    path = _module_file(module)
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    inside: list[tuple[ast.stmt, dict[str, list[tuple[str, str | None]]]]] = []
    third: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == PACKAGE or a.name.startswith(PACKAGE + "."):
                    raise ValueError(
                        f"{path}:{node.lineno}: `import {a.name}` cannot be vendored; "
                        f"use `from {a.name.rsplit('.', 1)[0]} import ...`."
                    )
                third.add(a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, module, is_pkg)
            if not source.startswith(PACKAGE):
                if node.level == 0 and source:
                    third.add(source.split(".")[0])
                continue
            targets: dict[str, list[tuple[str, str | None]]] = {}
            for a in node.names:
                if a.name == "*":
                    raise ValueError(f"{path}:{node.lineno}: `from {source} import *` cannot be vendored.")
                if _is_module(f"{source}.{a.name}"):
                    # ``from pkg import submodule``: import the module object from its parent
                    targets.setdefault(f"{source}.{a.name}|module", []).append((a.name, a.asname))
                else:
                    targets.setdefault(defining_module(source, a.name), []).append((a.name, a.asname))
            inside.append((node, targets))
    return inside, third


def _rewrite(module: str) -> tuple[str, set[str], set[str]]:
    """Source of ``module`` with its package imports made relative; the modules it needs; third-party imports."""
    path = _module_file(module)
    is_pkg = path.name == "__init__.py"
    lines = path.read_text().splitlines(keepends=True)
    inside, third = _imports(module)
    needed: set[str] = set()
    for node, targets in sorted(inside, key=lambda x: -x[0].lineno):
        indent = " " * node.col_offset
        rest = lines[node.end_lineno - 1][node.end_col_offset :].strip()
        # a trailing comment (a noqa for E402, say) stays on every line the statement becomes
        comment = f"  {rest}" if rest.startswith("#") else ""
        new = []
        for target, names in targets.items():
            if target.endswith("|module"):
                mod = target[: -len("|module")]
                needed.add(mod)
                source = _relative(module, is_pkg, mod.rsplit(".", 1)[0])
            else:
                needed.add(target)
                source = _relative(module, is_pkg, target)
            line = _import_line(indent, source, [n if a is None else f"{n} as {a}" for n, a in names])
            new.append(line[:-1] + comment + "\n" if comment else line)
        lines[node.lineno - 1 : node.end_lineno] = new
    return "".join(_sort_relative_imports(lines)), needed, third


def _import_line(indent: str, source: str, names: list[str]) -> str:
    """``from source import names`` as black (``--skip-magic-trailing-comma``, 120 columns) writes it."""
    one = f"{indent}from {source} import {', '.join(names)}\n"
    if len(one) <= LINE_LENGTH + 1:
        return one
    inner = f"{indent}    {', '.join(names)}"
    if len(inner) <= LINE_LENGTH:
        return f"{indent}from {source} import (\n{inner}\n{indent})\n"
    return f"{indent}from {source} import (\n" + "".join(f"{indent}    {n},\n" for n in names) + f"{indent})\n"


def _isort_key(name: str) -> tuple[int, str]:
    """isort's ``order_by_type``: CONSTANTS, then Classes, then functions and modules (case-insensitive)."""
    bare = name.split(" as ")[0]
    kind = 0 if bare.isupper() and len(bare) > 1 else 1 if bare[:1].isupper() else 2
    return kind, bare.lower()


def _sort_relative_imports(lines: list[str]) -> list[str]:
    """Sort each run of one-line relative imports the way isort (profile black) does: the furthest package first,
    then by module; two imports from one module are merged. Rewriting ``from shared_components.x import ...`` to
    relative imports in place would otherwise leave ``from ..files`` after ``from .formatting``."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = RELATIVE_IMPORT.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent, run = m.group(1), {}
        while i < len(lines) and (m := RELATIVE_IMPORT.match(lines[i])) and m.group(1) == indent:
            names = run.setdefault(m.group(2), [])
            names += [n.strip() for n in m.group(3).split(",") if n.strip() not in names]
            i += 1
        for source in sorted(run, key=lambda s: (-(len(s) - len(s.lstrip("."))), s.lstrip(".").lower())):
            out.append(_import_line(indent, source, sorted(run[source], key=_isort_key)))
    return out


def _stdlib(name: str) -> bool:
    return name in sys.stdlib_module_names or name == "__future__"


def vendor(references: Iterable[str], dest: Path, package: str = "scripts", bundle: str = "this") -> Vendored:
    """Copy the modules defining ``references`` (dotted names below ``shared_components``) and every module they
    import from it into ``dest/<package>/``, with imports rewritten; returns what was written."""
    out = Vendored()
    containers: dict[str, set[str]] = {}
    queue: list[str] = []
    for ref in sorted(set(references)):
        container, name, owner = resolve_reference(ref)
        containers.setdefault(container, set()).add(name)
        queue.append(owner)
    sources: dict[str, str] = {}
    while queue:
        mod = queue.pop()
        if mod in sources:
            continue
        text, needed, third = _rewrite(mod)
        sources[mod] = text
        out.third_party |= {t for t in third if not _stdlib(t)}
        queue.extend(needed - set(sources))
    root = dest / package
    # every package on the way to a vendored module needs an __init__ importing its vendored children
    modules = set(sources) | {c for c in containers if not _is_package(c)}
    packages = {".".join(m.split(".")[:i]) for m in modules for i in range(1, m.count(".") + 1)}
    packages |= {c for c in containers if _is_package(c)} | {m for m in sources if _is_package(m)}
    children: dict[str, set[str]] = {}
    for m in (modules | packages) - {PACKAGE}:
        parent, child = m.rsplit(".", 1)
        if parent in packages and (m in packages or m in containers):
            children.setdefault(parent, set()).add(child)
    for pkg in sorted(packages):
        if pkg in sources:
            continue  # a package whose own __init__ defines something is vendored as is
        rel = Path(*pkg.split(".")[1:], "__init__.py")
        names = sorted(containers.get(pkg, set()) - children.get(pkg, set()))
        subs = sorted(children.get(pkg, ()))
        body = [f'"""{_docstring(pkg, bundle)}"""\n\n']
        imports = [_import_line("", ".", subs)] if subs else []
        by_module: dict[str, list[str]] = {}
        for n in names:
            by_module.setdefault(defining_module(pkg, n), []).append(n)
        for target, ns in sorted(by_module.items()):
            imports.append(_import_line("", _relative(pkg, True, target), sorted(ns, key=_isort_key)))
        body += _sort_relative_imports(imports)
        exported = sorted(set(names) | set(subs))
        if exported:
            body.append("\n" + _list_assignment("__all__", [f'"{n}"' for n in exported]))
        _write(root / rel, "".join(body))
        out.files[pkg] = root / rel
        out.exports[pkg] = set(exported)
    for mod, text in sorted(sources.items()):
        is_pkg = _module_file(mod).name == "__init__.py"
        rel = Path(*mod.split(".")[1:], "__init__.py") if is_pkg else Path(*mod.split(".")[1:]).with_suffix(".py")
        origin = mod.replace(".", "/") + ("/__init__" if is_pkg else "") + ".py"
        _write(root / rel, HEADER.format(origin=origin) + text)
        out.files[mod] = root / rel
    return out


def _list_assignment(name: str, items: list[str]) -> str:
    """``name = [items]`` as black (``--skip-magic-trailing-comma``, 120 columns) writes it."""
    one = f"{name} = [{', '.join(items)}]\n"
    if len(one) <= LINE_LENGTH + 1:
        return one
    # black adds the trailing comma of a split collection, and then gives each item its own line
    return f"{name} = [\n" + "".join(f"    {i},\n" for i in items) + "]\n"


def _docstring(pkg: str, bundle: str = "this") -> str:
    """One line (within the zoo's 120 columns with its quotes) saying what a generated ``__init__`` holds."""
    if pkg == PACKAGE:
        text = f"Code the {bundle} bundle uses, vendored from the monai-seg-bundles `shared_components` package."
        return text if len(text) <= LINE_LENGTH - 6 else "Code this bundle uses, vendored from monai-seg-bundles."
    mod: ModuleType = importlib.import_module(pkg)
    first = (mod.__doc__ or "").strip().splitlines()
    title = first[0].rstrip(".") if first else pkg.rsplit(".", 1)[1]
    text = f"{title}: the parts this bundle uses."
    short = f"The parts of `{pkg}` this bundle uses (vendored)."
    return text if len(text) <= LINE_LENGTH - 6 else short


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
