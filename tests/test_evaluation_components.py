"""Largest-component post-processing measured on a benchmark's saved predictions (evaluation/components.py)."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest

from shared_components.evaluation.components import component_effect, format_effect, keep_largest


def _reference() -> np.ndarray:
    ref = np.zeros((12, 12, 12), np.uint8)
    ref[2:6, 2:8, 2:8] = 1
    ref[6:10, 2:8, 2:8] = 2
    return ref


def test_keep_largest_drops_the_smaller_components_of_each_class_only():
    pred = _reference()
    pred[10:12, 10:12, 10:12] = 1  # a stray island of class 1
    pred[0, 11, 0] = 2  # and of class 2
    kept = keep_largest(pred, [1, 2])
    assert np.array_equal(kept, _reference())
    touching = _reference()
    touching[6, 8, 8] = 1  # diagonal contact (26-connected) with class 1's block counts as the same component
    touching[5, 7, 7] = 1
    assert np.array_equal(keep_largest(touching, [1, 2]), touching)


def test_component_effect_scores_saved_predictions_with_and_without_islands(tmp_path):
    fold = tmp_path / "runs" / "hippocampus_mri_unet" / "fold_0"
    (fold / "eval").mkdir(parents=True)
    rows = []
    for i, island in enumerate([True, False]):
        ref, pred = _reference(), _reference()
        if island:
            pred[10:12, 10:12, 10:12] = 1
        for name, data in (("label", ref), ("prediction", pred)):
            path = tmp_path / f"{name}_{i}.nii.gz"
            nib.save(nib.Nifti1Image(data, np.eye(4)), path)
            rows.append((i, name, str(path)))
    with (fold / "eval" / "cases.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, ["case", "label", "prediction"])
        w.writeheader()
        for i in range(2):
            w.writerow({"case": f"c{i}", **{name: p for j, name, p in rows if j == i}})
    result = component_effect(tmp_path)
    m = result["models"]["hippocampus_mri_unet"]
    dice_island = (1 + 2 * 144 / (144 + 152)) / 2  # class 1: 144 voxels, 8 more predicted; class 2 exact
    assert m["cases"] == 2 and m["cases_changed"] == 1
    assert m["dice"] == pytest.approx((dice_island + 1) / 2) and m["dice_largest"] == pytest.approx(1.0)
    assert m["difference"]["mean"] == pytest.approx((1 - dice_island) / 2)
    assert "hippocampus_mri_unet | 2 |" in format_effect(result)
    with pytest.raises(FileNotFoundError, match="benchmark run"):
        component_effect(tmp_path / "nothing")
