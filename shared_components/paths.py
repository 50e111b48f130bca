"""Where data and the repository live, resolved the same way by bundles, scripts and tests."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "SEG_DATA_DIR"
PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent


def data_root() -> Path:
    """Root folder of the datasets: ``$SEG_DATA_DIR``, else ``../shared/data`` next to the repository checkout."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return (REPO_ROOT.parent / "shared" / "data").resolve()


def dataset_dir(name: str) -> str:
    """Folder of one dataset below :func:`data_root` (e.g. ``Task04_Hippocampus``), as a string for bundle configs."""
    return str(data_root() / name)


def shipped_datalist(name: str) -> str:
    """Path of a datalist shipped with the package (fixed folds that every bundle of a dataset shares)."""
    path = PACKAGE_DIR / "datalists" / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"No shipped datalist '{name}' ({path}); create one with scripts/prepare_data.py.")
    return str(path)
