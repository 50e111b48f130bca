"""Shared fixtures: the real data in ``$SEG_DATA_DIR`` (default ``../shared/data``) and tiny datalists of it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from shared_components.bundle.runner import run_bundle
from shared_components.bundle.scaffold import BUNDLES_DIR
from shared_components.data.converters.msd import msd_datalist
from shared_components.paths import DATA_ENV, data_root

HIPPO = "hippocampus_mri_unet"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = data_root()
    if not (root / "Task04_Hippocampus" / "dataset.json").is_file():
        pytest.fail(f"real test data not found in {root}: set {DATA_ENV} to the folder holding Task04_Hippocampus")
    return root


@pytest.fixture(scope="session")
def hippo_dir(data_dir: Path) -> Path:
    return data_dir / "Task04_Hippocampus"


@pytest.fixture(scope="session")
def tiny_hippo(tmp_path_factory: pytest.TempPathFactory, hippo_dir: Path) -> Path:
    """A datalist of 4 real hippocampus cases: 3 to train on (folds 1-2), 1 to validate on (fold 0)."""
    full = msd_datalist(hippo_dir, folds=5, seed=0)
    cases = full["training"][:4]
    for i, e in enumerate(cases):
        e["fold"] = 0 if i == 0 else 1 + i % 2
    path = tmp_path_factory.mktemp("tiny_hippo") / "datalist.json"
    path.write_text(json.dumps({"training": cases, "test": []}, indent=4))
    return path


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread per test process, for tests of many small models: the suite runs under ``pytest -n 2`` on
    2 cores, where more threads only spin against each other (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def bundles_dir() -> Path:
    return BUNDLES_DIR


def run_cli(bundle: str, configs, overrides: dict, log: Path) -> float:
    """Run a bundle through the stock ``python -m monai.bundle run`` CLI (raises with the log tail on failure)."""
    return run_bundle(BUNDLES_DIR / bundle, configs, overrides, log_file=log)
