"""Shared fixtures: the real data in ``$SEG_DATA_DIR`` (default ``../shared/data``), tiny datalists of it, and tiny
data in each dataset's layout (helpers and constants: ``tests/helpers.py``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from shared_components.bundle.scaffold import BUNDLES_DIR
from shared_components.data.converters.msd import msd_datalist
from shared_components.paths import DATA_ENV, data_root
from tests.helpers import SmokeData, hippocampus_smoke_data, synthetic_smoke_data


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


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory: pytest.TempPathFactory, hippo_dir: Path) -> Callable[[str], SmokeData]:
    """``smoke_data(dataset)``: tiny data for a dataset (two real cases for hippocampus, two synthetic ones in the
    official layout otherwise), written once per session (and per xdist worker)."""
    cache: dict[str, SmokeData] = {}

    def get(dataset: str) -> SmokeData:
        if dataset not in cache:
            root = tmp_path_factory.mktemp(f"smoke_{dataset}")
            hippo = dataset == "hippocampus_mri"
            cache[dataset] = hippocampus_smoke_data(root, hippo_dir) if hippo else synthetic_smoke_data(dataset, root)
        return cache[dataset]

    return get


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
