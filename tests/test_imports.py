"""Start-up stays cheap: the command-line entry point imports neither MONAI nor torch, and the lazy package
``__init__`` files still export every name they list."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from shared_components.paths import REPO_ROOT

LAZY_PACKAGES = ["data", "evaluation", "training", "transforms", "networks"]
HEAVY = ("monai", "torch")


def _fresh(code: str) -> str:
    """stdout of ``code`` run in a new interpreter from the repository root."""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_cli_imports_neither_monai_nor_torch():
    code = f"import sys, shared_components.cli; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    assert _fresh(code) == "[]"


def test_new_bundle_check_imports_neither_monai_nor_torch():
    code = (
        "import runpy, sys\n"
        "sys.argv = ['new_bundle.py', 'check']\n"
        "try:\n    runpy.run_path('scripts/new_bundle.py', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    assert _fresh(code).splitlines()[-1] == "[]"


@pytest.mark.parametrize("name", LAZY_PACKAGES)
def test_lazy_package_exports_every_name(name):
    pkg = importlib.import_module(f"shared_components.{name}")
    assert set(pkg.__all__) <= set(dir(pkg))
    for export in pkg.__all__:
        assert getattr(pkg, export) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = pkg.nope


def test_export_named_like_its_module_stays_the_export():
    # importing shared_components.data.fingerprint (the module) first must not hide data.fingerprint (the function)
    code = (
        "import shared_components.data.fingerprint\n"
        "from shared_components.data import fingerprint\n"
        "print(callable(fingerprint) and fingerprint.__name__)"
    )
    assert _fresh(code) == "fingerprint"


def test_architecture_doc_names_every_module():
    """docs/architecture.md names every module of the package, so a new module is placed where a reader looks."""
    doc = (REPO_ROOT / "docs" / "architecture.md").read_text()
    modules = sorted(
        p
        for p in (REPO_ROOT / "shared_components").rglob("*.py")
        if p.name != "__init__.py" and "template" not in p.parts
    )
    missing = [str(p.relative_to(REPO_ROOT)) for p in modules if f"`{p.stem}`" not in doc]
    assert not missing, f"docs/architecture.md does not name: {missing}"
