"""Train -> evaluate -> infer on 4 real hippocampus cases with the stock ``python -m monai.bundle run`` CLI."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest

from shared_components.bundle.runner import EVALUATE, INFER, TRAIN, output_overrides
from tests.helpers import HIPPO, run_cli

pytestmark = pytest.mark.slow


def test_train_evaluate_infer(tmp_path, hippo_dir, tiny_hippo):
    common = {"dataset_dir": str(hippo_dir), "datalist": str(tiny_hippo), **output_overrides(tmp_path)}
    log = tmp_path / "run.log"
    run_cli(HIPPO, TRAIN, {**common, "max_epochs": 2, "val_interval": 1, "batch_size": 2}, log)
    assert (tmp_path / "models" / "model.pt").is_file()
    with open(tmp_path / "logs" / "history.csv") as f:
        history = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in history] == [1, 2]
    assert all(0.0 <= float(r["val_mean_dice"]) <= 1.0 for r in history)
    assert list((tmp_path / "logs").glob("events.out.tfevents.*")), "no TensorBoard events written"

    run_cli(HIPPO, EVALUATE, common, log)
    per_case = list(csv.DictReader((tmp_path / "eval" / "metrics_per_case.csv").read_text().splitlines()))
    assert {r["case"] for r in per_case} == {"hippocampus_001"}  # the one fold-0 case
    assert {(r["class"], r["metric"]) for r in per_case} == {
        (c, m) for c in ("anterior", "posterior") for m in ("dice", "hd95", "msd", "nsd")
    }
    assert all(0.0 <= float(r["value"]) <= 1.0 for r in per_case if r["metric"] in ("dice", "nsd"))
    assert (tmp_path / "eval" / "metrics_summary.json").is_file()

    images = sorted((hippo_dir / "imagesTr").glob("hippocampus_00[13].nii.gz"))
    infer = {
        "dataset_dir": str(hippo_dir),
        "ckpt_path": str(tmp_path / "models" / "model.pt"),
        "input_data": [str(p) for p in images],
        "output_dir": str(tmp_path / "pred"),
    }
    run_cli(HIPPO, INFER, infer, log)
    for img in images:
        pred = tmp_path / "pred" / img.name.replace(".nii.gz", "_seg.nii.gz")
        assert pred.is_file(), f"missing prediction {pred}"
        src, out = nib.load(img), nib.load(pred)
        assert out.shape == src.shape
        np.testing.assert_allclose(out.affine, src.affine, atol=1e-4)
        assert set(np.unique(np.asarray(out.dataobj)).tolist()) <= {0, 1, 2}
