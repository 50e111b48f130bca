"""Evaluation through the stock bundle CLI on real hippocampus cases: metrics in original geometry (also when the
preprocessing resamples and crops), per-centre summaries, saved predictions, and MLflow tracking."""

from __future__ import annotations

import copy
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from monai.bundle import ConfigParser
from monai.bundle.utils import DEFAULT_MLFLOW_SETTINGS
from monai.bundle.workflows import ConfigWorkflow

from shared_components.bundle import scaffold
from shared_components.bundle.runner import EVALUATE, TRAIN, output_overrides
from shared_components.data.converters.msd import msd_datalist
from tests.helpers import HIPPO, run_cli


@pytest.fixture(scope="module")
def centred(tmp_path_factory, hippo_dir):
    """4 real cases: 2 validation cases (fold 0) from two 'centres', 2 training cases."""
    cases = msd_datalist(hippo_dir, folds=5, seed=0)["training"][:4]
    for i, e in enumerate(cases):
        e["fold"] = 0 if i < 2 else i - 1
        e["center"] = "north" if i % 2 == 0 else "south"
    path = tmp_path_factory.mktemp("centred") / "datalist.json"
    path.write_text(json.dumps({"training": cases}, indent=4))
    return path


@pytest.mark.slow
def test_evaluate_in_original_geometry_with_centres(tmp_path, hippo_dir, bundles_dir, centred):
    out = tmp_path / "eval"
    overrides = {
        "dataset_dir": str(hippo_dir),
        "datalist": str(centred),
        "ckpt_dir": str(bundles_dir / HIPPO / "models"),
        "output_dir": str(out),
        "save_predictions": True,
        # resample and crop in preprocessing: predictions must still come back on each file's own voxel grid
        "preprocessing_args#pixdim": [1.3, 0.8, 1.6],
        "preprocessing_args#crop_foreground": True,
    }
    run_cli(HIPPO, EVALUATE, overrides, tmp_path / "eval.log")
    per_case = pd.read_csv(out / "metrics_per_case.csv", dtype={"fold": str})
    assert list(per_case.columns) == ["case", "fold", "centre", "class", "metric", "value"]
    assert len(per_case) == 2 * 2 * 4  # cases x classes x metrics
    assert set(per_case["centre"]) == {"north", "south"} and set(per_case["fold"]) == {"0"}
    cases = pd.read_csv(out / "cases.csv")
    for r in cases.to_dict("records"):
        pred, img = nib.load(r["prediction"]), nib.load(r["image"])
        assert pred.shape == img.shape and r["shape"] == "x".join(map(str, img.shape))
        np.testing.assert_allclose(pred.affine, img.affine, atol=1e-4)
        assert set(np.unique(np.asarray(pred.dataobj)).tolist()) <= {0, 1, 2}
        assert r["inference_seconds"] > 0 and r["metrics_seconds"] > 0
        # the per-case Dice is that of the saved label map against the label file
        ref = np.asarray(nib.load(r["label"]).dataobj)
        seg = np.asarray(pred.dataobj)
        for value, cls in ((1, "anterior"), (2, "posterior")):
            a, b = seg == value, ref == value
            dice = 2 * (a & b).sum() / (a.sum() + b.sum())
            row = per_case[(per_case["case"] == r["case"]) & (per_case["class"] == cls) & (per_case.metric == "dice")]
            assert float(row["value"].iloc[0]) == pytest.approx(dice, abs=1e-6)
    summary = pd.read_csv(out / "metrics_summary.csv").set_index(["group", "class", "metric"])
    dice = per_case[per_case["metric"] == "dice"]
    assert summary.loc[("all", "mean", "dice"), "mean"] == pytest.approx(dice["value"].mean(), abs=1e-5)
    north = dice[dice["centre"] == "north"]["value"].mean()
    assert summary.loc[("centre=north", "mean", "dice"), "mean"] == pytest.approx(north, abs=1e-5)
    info = json.loads((out / "metrics_summary.json").read_text())
    assert info["classes"] == ["anterior", "posterior"] and info["nsd_tolerance_mm"] == 1.0
    assert info["timing"]["inference_seconds_per_case"] > 0 and info["peak_ram_mb"] > 0


@pytest.mark.slow
def test_mlflow_tracking_for_training_and_evaluation(tmp_path, hippo_dir, tiny_hippo):
    import mlflow

    db = tmp_path / "mlruns.db"
    common = {
        "dataset_dir": str(hippo_dir),
        "datalist": str(tiny_hippo),
        **output_overrides(tmp_path),
        "tracking": "mlflow",
        "tracking_uri": f"sqlite:///{db}",
        "experiment_name": "tracking_test",
    }
    log = tmp_path / "run.log"
    run_cli(HIPPO, TRAIN, {**common, "max_epochs": 1, "val_interval": 1, "batch_size": 2, "run_name": "t"}, log)
    run_cli(HIPPO, EVALUATE, {**common, "run_name": "e"}, log)
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    runs = mlflow.search_runs(experiment_names=["tracking_test"]).set_index("tags.mlflow.runName")
    assert runs.loc["t", "metrics.train_loss"] > 0 and 0 <= runs.loc["t", "metrics.val_mean_dice"] <= 1
    assert 0 <= runs.loc["e", "metrics.dice_mean"] <= 1 and runs.loc["e", "metrics.hd95_anterior"] >= 0
    assert list((tmp_path / "logs").glob("events.out.tfevents.*")), "TensorBoard is on by default"


@pytest.mark.parametrize("bundle", scaffold.all_bundles(), ids=lambda p: p.name)
def test_every_bundle_supports_evaluation_and_mlflow(bundle):
    """Evaluation needs the dataset's NSD tolerance; `--tracking mlflow` needs per-item trainer outputs (MONAI's
    MLflow handler reads the loss with ``from_engine(['loss'], first=True)``)."""
    header, _ = scaffold.split_standard((bundle / "configs" / "train.yaml").read_text())
    tol = yaml.safe_load(header).get("nsd_tolerance_mm")
    assert isinstance(tol, int | float) and tol > 0, (
        f"{bundle.name}: set nsd_tolerance_mm (mm) in its dataset spec / train.yaml header"
    )
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / f) for f in ("train.yaml", "evaluate.yaml")])
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    assert parser.get("train#trainer#decollate", True) is not False
    settings = copy.deepcopy(DEFAULT_MLFLOW_SETTINGS)
    settings["configs"]["save_execute_config"] = False  # parse only: write nothing
    ConfigWorkflow.patch_bundle_tracking(parser, settings)
    handlers = [h["_target_"] for h in parser.get("validate#handlers") if isinstance(h, dict)]
    assert handlers.count("MLFlowHandler") == 1 and "shared_components.evaluation.SegmentationMetrics" in handlers
    assert parser.get("train#handlers")[-1]["_target_"] == "MLFlowHandler"
