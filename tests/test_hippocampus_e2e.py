"""Train -> evaluate -> infer on 4 real hippocampus cases with the stock ``python -m monai.bundle run`` CLI."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest

from shared_components.bundle.runner import EVALUATE, INFER, TRAIN
from tests.conftest import HIPPO, run_cli

pytestmark = pytest.mark.slow


def test_train_evaluate_infer(tmp_path, hippo_dir, tiny_hippo):
    common = {
        "dataset_dir": str(hippo_dir),
        "datalist": str(tiny_hippo),
        "ckpt_dir": str(tmp_path / "models"),
        "log_dir": str(tmp_path / "logs"),
        "output_dir": str(tmp_path / "eval"),
    }
    log = tmp_path / "run.log"
    run_cli(HIPPO, TRAIN, {**common, "max_epochs": 2, "val_interval": 1, "batch_size": 2}, log)
    assert (tmp_path / "models" / "model.pt").is_file()
    with open(tmp_path / "logs" / "history.csv") as f:
        history = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in history] == [1, 2]
    assert all(0.0 <= float(r["val_mean_dice"]) <= 1.0 for r in history)
    assert list((tmp_path / "logs").glob("events.out.tfevents.*")), "no TensorBoard events written"

    run_cli(HIPPO, EVALUATE, common, log)
    raw = tmp_path / "eval" / "val_mean_dice_raw.csv"
    assert raw.is_file() and (tmp_path / "eval" / "metrics.csv").is_file()
    rows = list(csv.reader(raw.read_text().splitlines()))
    assert rows[0] == ["filename", "class0", "class1", "mean"]  # two foreground classes and their per-case mean
    assert len(rows) == 2 and rows[1][0].endswith(".nii.gz")  # the one fold-0 case
    assert all(0.0 <= float(v) <= 1.0 for v in rows[1][1:])

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
