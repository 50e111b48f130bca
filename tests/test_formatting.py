"""The number formatters of the Markdown reports: a missing value is ``-``, everything else keeps its digits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shared_components.evaluation.formatting import fmt_ci, fmt_num, fmt_p, is_number
from shared_components.experiments.leaderboard import _markdown

MISSING_VALUES = [None, float("nan"), "0.5", pd.NA]


@pytest.mark.parametrize("v", MISSING_VALUES)
def test_missing_values_are_a_dash(v):
    assert not is_number(v)
    assert fmt_num(v) == fmt_num(v, 0) == fmt_p(v) == fmt_ci(v, 0.1, 0.2) == "-"


def test_numbers():
    assert is_number(0) and is_number(np.float32(0.5)) and is_number(float("inf"))
    assert fmt_num(0.88149) == "0.881" and fmt_num(1187766 / 1e6, 2) == "1.19" and fmt_num(150, 0) == "150"
    assert fmt_num(6.85, 1) == "6.8"  # binary rounding, as f-strings do
    assert fmt_num(float("inf"), 1) == "inf"
    assert fmt_p(0.2255) == "0.226" and fmt_p(0.001) == "0.001" and fmt_p(0.00099) == "<0.001" and fmt_p(0) == "<0.001"


def test_confidence_intervals():
    assert fmt_ci(0.88123, 0.87, 0.89) == "0.881 [0.870, 0.890]"
    assert fmt_ci(1.4949, 1.3051, 1.74, 2) == "1.49 [1.31, 1.74]"
    assert fmt_ci(0.5) == fmt_ci(0.5, float("nan"), 0.6) == fmt_ci(0.5, 0.4, None) == "0.500"  # no interval
    assert fmt_ci(0.5, float("-inf"), float("inf")) == "0.500"
    assert fmt_ci(float("inf"), 0, 1) == fmt_ci(None, 0, 1) == "-"


def test_leaderboard_cells(tmp_path):
    settings = {
        "name": "ds",
        "bundles": ["ds_unet", "ds_broken"],
        "folds": [0],
        "datalist": "/x/list.json",
        "seed": 0,
        "max_epochs": 2,
        "machine": {"cpu_cores": 2, "torch_threads": 2, "gpu": None},
        "command": "python scripts/benchmark.py run",
        "finished": "today",
    }
    row = {"model": "unet", "bundle": "ds_unet", "status": "done", "failed": "", "cases": 3, "rank": 1.0}
    row |= {"dice_mean": 0.88123, "dice_mean_ci_low": 0.87, "dice_mean_ci_high": 0.89, "dice_a": 0.9}
    row |= {"hd95_mean": 1.4949, "hd95_mean_ci_low": 1.3051, "hd95_mean_ci_high": 1.74, "p_holm": None}
    row |= {"parameters": 1187766, "seconds_per_epoch": 6.85, "epochs": 2.0, "train_minutes": None}
    broken = {"model": "broken", "bundle": "ds_broken", "status": "failed", "failed": "fold 0: train", "rank": None}
    broken |= {"parameters": float("nan")}
    md = _markdown(settings, pd.DataFrame([row, broken]), {}, tmp_path)
    assert "| 1 | unet | 0.881 [0.870, 0.890] | 0.900 | - |" in md
    assert "| - | broken (failed) | - | - | - |" in md
    assert "| unet | - | 1.49 [1.31, 1.74] |" in md  # HD95 of class a missing, of the mean with its CI
    assert "| unet | 1.19 | 6.8 | 2 | - | - | - |" in md and "| broken | - | - | - | - | - | - |" in md
