"""Run the MONAI Model Zoo's own CI on an export: its ``ci/verify_bundle.py`` and its code-format tools.

Both need a copy of the zoo repository (``$MONAI_MODEL_ZOO``: a checkout, or a bare git directory such as the one
``git clone --mirror`` makes); nothing of it is copied into this repository. :func:`verify_bundle` lays out a
temporary zoo tree the way its CI does before ``verify_bundle.py``:

* the zoo's ``ci/`` (and its ``setup.cfg``/``pyproject.toml``), the export in ``models/<name>/`` and an empty
  ``models/model_info.json`` (a new bundle);
* the metadata schema in ``models/<name>/eval/schema.json``, taken from this repository's schemas folder instead of
  downloaded (what ``ci/prepare_schema.py`` does);
* for each app in ``supported_apps``, ``<app>/bundle_properties.py`` with the app's properties
  (:data:`zoo_offline_checks.APP_PROPERTIES`), where the zoo's property check looks for them;
* a bundle whose network MONAI cannot script added to ``exclude_verify_torchscript_list`` (what a zoo pull request
  of it does, as for the zoo's own SwinUNETR bundle).

It then runs ``python ci/verify_bundle.py -b <name> -m full`` there in the isolated environment (no
``shared_components``). :func:`format_check` runs black, isort and flake8 with the zoo's settings (from the zoo
copy, else the equivalent :data:`SETUP_CFG`/:data:`PYPROJECT`) on the export, with the tools of ``$ZOO_LINT_PYTHON``
(default: this Python), pinned in :data:`FORMAT_TOOLS`.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path

from shared_components.paths import named_schema
from shared_components.shipping import isolation, zoo_offline_checks

ZOO_ENV = "MONAI_MODEL_ZOO"
LINT_ENV = "ZOO_LINT_PYTHON"
ZOO_FILES = ("ci", "setup.cfg", "pyproject.toml")
# the versions the zoo's code-format CI (Python 3.10, unpinned requirements-dev.txt) installed when this was written
FORMAT_TOOLS = {
    "black": "26.10.1",
    "isort": "9.0.2",
    "flake8": "7.4.1",
    "flake8-bugbear": "26.10.27",
    "flake8-comprehensions": "3.17.0",
    "flake8-executable": "2.1.3",
    "pep8-naming": "0.15.1",
    "pycodestyle": "2.15.0",
    "pyflakes": "4.0.3",
    "mccabe": "0.7.0",
}
# the zoo's format settings, for when no copy of the zoo is at hand (its setup.cfg and pyproject.toml say the same)
SETUP_CFG = """[flake8]
select = B,C,E,F,N,P,T4,W,B9
max_line_length = 120
ignore = E203,E501,E741,W503,W504,C408,N812,B023,B905,B028,B907,C419
per_file_ignores = __init__.py: F401, __main__.py: F401

[isort]
known_first_party = models
profile = black
line_length = 120
"""
PYPROJECT = """[tool.black]
line-length = 120
target-version = ['py37', 'py38', 'py39']
"""


def zoo_dir(path: str | os.PathLike | None = None) -> Path | None:
    """The zoo copy to use (``path``, else ``$MONAI_MODEL_ZOO``), or None when there is none."""
    path = path or os.environ.get(ZOO_ENV)
    if not path:
        return None
    path = Path(path).expanduser()
    return path if (path / "ci" / "verify_bundle.py").is_file() or _is_git_dir(path) else None


def _is_git_dir(path: Path) -> bool:
    return (path / "HEAD").is_file() and (path / "objects").is_dir()


def zoo_sources(zoo: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Copy the zoo's ``ci/``, ``setup.cfg`` and ``pyproject.toml`` into ``dest`` (from a checkout, or with ``git
    archive HEAD`` from a bare git directory)."""
    zoo, dest = Path(zoo), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if (zoo / "ci" / "verify_bundle.py").is_file():
        shutil.copytree(zoo / "ci", dest / "ci", dirs_exist_ok=True)
        for name in ZOO_FILES[1:]:
            if (zoo / name).is_file():
                shutil.copy(zoo / name, dest / name)
        return dest
    cmd = ["git", f"--git-dir={zoo}", "archive", "--format=tar", "HEAD", *ZOO_FILES]
    tar = subprocess.run(cmd, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        tf.extractall(dest, filter="data")
    return dest


def _properties_module(app: str) -> str:
    props = zoo_offline_checks.APP_PROPERTIES[app]
    return (
        f'"""What {app} needs of a bundle, for the Model Zoo\'s property check (written by monai-seg-bundles)."""\n\n'
        f"InferProperties = {props['InferProperties']!r}\n\nMetaProperties = {props['MetaProperties']!r}\n"
    )


def stage(export_dir: str | os.PathLike, zoo: str | os.PathLike, root: str | os.PathLike, exclude_ts: bool) -> Path:
    """A zoo tree in ``root`` ready for ``ci/verify_bundle.py`` on the export (see the module docstring); returns
    the staged bundle folder ``root/models/<name>``."""
    export_dir, root = Path(export_dir), Path(root)
    zoo_sources(zoo, root)
    bundle = root / "models" / export_dir.name
    shutil.copytree(export_dir, bundle, ignore=shutil.ignore_patterns("eval", "__pycache__"))
    (root / "models" / "model_info.json").write_text("{}\n")
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    schema = named_schema(meta)
    (bundle / "eval").mkdir()
    shutil.copy(schema, bundle / "eval" / "schema.json")
    for app in meta.get("supported_apps") or {}:
        if app in zoo_offline_checks.APP_PROPERTIES:
            (root / app).mkdir(exist_ok=True)
            (root / app / "bundle_properties.py").write_text(_properties_module(app))
    if exclude_ts:
        with open(root / "ci" / "bundle_custom_data.py", "a") as f:
            f.write(f"\nexclude_verify_torchscript_list.append({export_dir.name!r})\n")
    return bundle


def verify_bundle(
    export_dir: str | os.PathLike,
    zoo: str | os.PathLike,
    mode: str = "full",
    exclude_torchscript: bool = False,
    python: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 1800,
) -> subprocess.CompletedProcess:
    """Run the zoo's ``ci/verify_bundle.py -m <mode>`` on an export in a staged zoo tree (:func:`stage`), in the
    isolated environment; returns the finished process (``returncode`` 0 when it passed, output in ``stdout``)."""
    with tempfile.TemporaryDirectory(prefix="model_zoo_") as root:
        stage(export_dir, zoo, root, exclude_torchscript)
        cmd = [str(python or sys.executable), "ci/verify_bundle.py", "-b", Path(export_dir).name, "-p", "models"]
        full_env = isolation.isolated_env({"CUDA_VISIBLE_DEVICES": "", **(env or {})})
        return subprocess.run(
            [*cmd, "-m", mode],
            cwd=root,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )


def lint_python() -> str:
    """The Python whose black/isort/flake8 check the format (``$ZOO_LINT_PYTHON``, else this one)."""
    return os.environ.get(LINT_ENV) or sys.executable


def format_tools(python: str | os.PathLike | None = None) -> dict[str, str] | None:
    """Versions of the zoo's format tools installed for ``python`` (:func:`lint_python`), None when one is missing."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for d in sys.argv[1:]:\n"
        "    try: out[d] = m.version(d)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))"
    )
    r = subprocess.run([str(python or lint_python()), "-c", code, *FORMAT_TOOLS], capture_output=True, text=True)
    found = json.loads(r.stdout) if r.returncode == 0 else {}
    return found if set(found) == set(FORMAT_TOOLS) else None


def format_check(
    export_dir: str | os.PathLike, zoo: str | os.PathLike | None = None, python: str | os.PathLike | None = None
) -> dict[str, subprocess.CompletedProcess]:
    """``black --skip-magic-trailing-comma --check``, ``isort --check`` and ``flake8`` (the zoo's
    ``runtests.sh --codeformat``) on an export, with the zoo's settings; ``{tool: finished process}``."""
    python = str(python or lint_python())
    with tempfile.TemporaryDirectory(prefix="model_zoo_format_") as tmp:
        root = Path(tmp)
        if zoo is not None:
            zoo_sources(zoo, root)
        else:
            (root / "setup.cfg").write_text(SETUP_CFG)
            (root / "pyproject.toml").write_text(PYPROJECT)
        bundle = Path("models") / Path(export_dir).name
        shutil.copytree(export_dir, root / bundle, ignore=shutil.ignore_patterns("eval", "__pycache__"))
        commands = {
            "black": ["-m", "black", "--skip-magic-trailing-comma", "--check", str(bundle)],
            "isort": ["-m", "isort", "--check", "--diff", str(bundle)],
            "flake8": ["-m", "flake8", str(bundle), "--count", "--statistics"],
        }
        return {
            tool: subprocess.run([python, *args], cwd=root, capture_output=True, text=True)
            for tool, args in commands.items()
        }
