"""The shipped weights, evaluated for real on the fold-0 validation cases of the real hippocampus data."""

from __future__ import annotations

import pandas as pd
import pytest

from shared_components.bundle.runner import EVALUATE
from tests.helpers import HIPPO, run_cli

pytestmark = pytest.mark.slow


def test_shipped_model_dice(tmp_path, hippo_dir, bundles_dir):
    overrides = {
        "dataset_dir": str(hippo_dir),
        "ckpt_dir": str(bundles_dir / HIPPO / "models"),
        "output_dir": str(tmp_path / "eval"),
        "check_data": "off",
    }
    run_cli(HIPPO, EVALUATE, overrides, tmp_path / "eval.log")
    per_case = pd.read_csv(tmp_path / "eval" / "metrics_per_case.csv")
    dice = per_case[per_case["metric"] == "dice"].pivot(index="case", columns="class", values="value")
    assert list(dice.columns) == ["anterior", "posterior"]
    assert len(dice) == 42  # fold 0 of the shipped 5-fold split of the 208 cases
    mean_fg = float(dice.to_numpy().mean())
    assert mean_fg >= 0.85, f"mean foreground Dice {mean_fg:.4f} < 0.85"
    summary = pd.read_csv(tmp_path / "eval" / "metrics_summary.csv").set_index(["group", "class", "metric"])
    assert summary.loc[("all", "mean", "dice"), "mean"] == pytest.approx(mean_fg, abs=1e-5)
    assert summary.loc[("all", "mean", "hd95"), "mean"] < 3.0  # mm, 1 mm voxels
    assert summary.loc[("all", "mean", "nsd"), "mean"] > 0.85
