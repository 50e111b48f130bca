"""The shipped weights, evaluated for real on the fold-0 validation cases of the real hippocampus data."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from shared_components.bundle.runner import EVALUATE
from tests.conftest import HIPPO, run_cli

pytestmark = pytest.mark.slow


def test_shipped_model_dice(tmp_path, hippo_dir, bundles_dir):
    overrides = {
        "dataset_dir": str(hippo_dir),
        "ckpt_dir": str(bundles_dir / HIPPO / "models"),
        "output_dir": str(tmp_path / "eval"),
        "check_data": "off",
    }
    run_cli(HIPPO, EVALUATE, overrides, tmp_path / "eval.log")
    rows = list(csv.reader((tmp_path / "eval" / "val_mean_dice_raw.csv").read_text().splitlines()))
    assert rows[0] == ["filename", "class0", "class1", "mean"]
    cases = rows[1:]
    assert len(cases) == 42  # fold 0 of the shipped 5-fold split of the 208 cases
    per_class = np.array([[float(v) for v in r[1:3]] for r in cases])
    assert per_class.shape == (42, 2)
    mean_fg = float(np.nanmean(per_class))
    assert mean_fg >= 0.85, f"mean foreground Dice {mean_fg:.4f} < 0.85"
