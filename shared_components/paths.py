"""Where data and the repository live, resolved the same way by bundles, scripts and tests."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "SEG_DATA_DIR"
SHARED_ENV = "SEG_SHARED_DIR"
PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
# how the commands this project prints for users (reproduce lines, reports) invoke its tools: the installed command
# of the README's set-up, run from the repository root
CLI = ".venv/bin/segbundles"


def shared_root() -> Path:
    """Reference material (data, schemas): ``$SEG_SHARED_DIR``, else ``../shared`` next to the repository."""
    env = os.environ.get(SHARED_ENV)
    return Path(env).expanduser().resolve() if env else (REPO_ROOT.parent / "shared").resolve()


def data_root() -> Path:
    """Root folder of the datasets: ``$SEG_DATA_DIR``, else ``data/`` of :func:`shared_root`."""
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser().resolve() if env else shared_root() / "data"


def schemas_dir() -> Path:
    """The Model Zoo metadata JSON schemas, for offline ``verify_metadata --filepath``."""
    return shared_root() / "schemas"


def named_schema(meta: dict) -> Path:
    """The local copy (in :func:`schemas_dir`) of the schema a metadata.json names under ``schema``, the one the
    zoo's ``verify_metadata`` downloads."""
    schema = schemas_dir() / str(meta["schema"]).rsplit("/", 1)[-1]
    if not schema.is_file():
        raise FileNotFoundError(f"{schema} (the schema {meta['schema']} names) is not in {schemas_dir()}.")
    return schema


def dataset_dir(name: str) -> str:
    """Folder of one dataset below :func:`data_root` (e.g. ``Task04_Hippocampus``), as a string for bundle configs."""
    return str(data_root() / name)


def shipped_datalist(name: str) -> str:
    """Path of a datalist shipped with the package (fixed folds that every bundle of a dataset shares)."""
    path = PACKAGE_DIR / "datalists" / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"No shipped datalist '{name}' ({path}); create one with `segbundles prepare`.")
    return str(path)
