"""Fingerprints through MONAI's DataAnalyzer: the real hippocampus data gives 1 mm and nnU-Net's 40x56x40 patch;
CT gets a Hounsfield window from the labelled organs; multi-channel MRI with a zero background gets cropping and
non-zero z-scoring; the planning rules handle anisotropic spacing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared_components.data import synthetic as S
from shared_components.data.converters.brats import convert_brats
from shared_components.data.converters.msd import convert_msd
from shared_components.data.fingerprint import fingerprint, plan, recommended


def test_hippocampus_fingerprint(hippo_dir, tmp_path):
    datalist = convert_msd(hippo_dir, tmp_path, check="off")
    fp = fingerprint(datalist)
    assert fp["n_cases"] == 208 and fp["spacing"]["median"] == [1.0, 1.0, 1.0]
    assert fp["shape"]["median"] == [35.0, 50.0, 36.0]
    rec = fp["recommended"]
    assert rec["pixdim"] == [1.0, 1.0, 1.0]
    assert rec["patch_size"] == [40, 56, 40]  # what nnU-Net plans for Task04: the median shape, divisible by 8
    assert rec["divisible_by"] == [8, 8, 8] and rec["strides"] == [[2, 2, 2]] * 3
    assert rec["intensity"]["kind"] == "zscore" and rec["sampling"] == "random" and 2 <= rec["batch_size"] <= 16
    assert rec["num_classes"] == 3 and rec["multilabel"] is False
    assert fp["labels"]["values"] == [0, 1, 2] and 1 < fp["labels"]["median_percentage"]["1"] < 5
    assert any("varies" in w and "normalise per case" in w for w in fp["warnings"])  # uint8 and float32 cases
    fg = fp["intensity"][0]["foreground"]
    assert fg["p00_5"] < fg["median"] < fg["p99_5"]
    written = json.loads((tmp_path / "fingerprint.json").read_text())
    assert written["recommended"] == rec and "image_stats" in written["datastats"]
    assert recommended(datalist) == rec and recommended(tmp_path) == rec


def test_ct_fingerprint_recommends_a_hounsfield_window(tmp_path):
    src = S.write_msd_spleen(tmp_path / "Task09_Spleen", n_train=4, n_test=0)
    fp = fingerprint(convert_msd(src, tmp_path / "dl", folds=2, check="off"))
    rec = fp["recommended"]
    assert fp["modality"] == "CT" and not fp["modality_guessed"]
    ct = rec["intensity"]
    assert ct["kind"] == "ct_zscore" and -150 < ct["a_min"] < 40 < ct["a_max"] < 300  # spleen HU, not air or bone
    assert ct["std"] > 5 and rec["intensity_alternatives"]["ct"]["a_min"] == ct["a_min"]
    assert rec["pixdim"][0] == pytest.approx(np.median(fp["spacing"]["median"][0]), abs=1e-3)
    assert fp["intensity"][0]["image"]["p00_5"] < -900  # air around the body


def test_multichannel_mri_fingerprint(tmp_path):
    src = S.write_brats(tmp_path / "brats", n=3)
    fp = fingerprint(convert_brats(src, tmp_path / "dl", folds=3, check="off"))
    rec = fp["recommended"]
    assert fp["channels"] == ["FLAIR", "T1", "T1CE", "T2"] and len(fp["intensity"]) == 4
    assert rec["intensity"] == {"kind": "zscore", "nonzero": True} and rec["crop_foreground"] is True
    assert rec["num_classes"] == 3 and rec["multilabel"] is True  # TC/WT/ET regions
    assert fp["labels"]["values"] == [0, 1, 2, 4]


def test_plan_for_anisotropic_ct():
    rng = np.random.default_rng(0)
    spacings = np.column_stack([rng.uniform(0.6, 0.9, 30)] * 2 + [rng.choice([2.5, 5.0], 30)])
    shapes = np.column_stack([np.full(30, 512), np.full(30, 512), rng.integers(60, 120, 30)])
    p = plan(spacings, shapes)
    assert p["pixdim"][0] == pytest.approx(np.median(spacings[:, 0]), abs=1e-3)
    # thick slices and few of them: the slice axis gets the 10th percentile of its spacings, as in nnU-Net
    assert np.median(spacings[:, 2]) == 5.0 and p["pixdim"][2] == pytest.approx(2.5)
    assert p["strides"][0] == [2, 2, 1]  # fine in-plane axes pooled first
    assert np.prod(p["patch_size"]) <= 128**3 and p["sampling"] == "label"
    for size, div in zip(p["patch_size"], p["divisible_by"], strict=True):
        assert size % div == 0
    # anisotropic spacing but many slices: the median spacing stays
    many = plan(np.tile([1.0, 1.0, 4.0], (10, 1)), np.tile([200, 200, 200], (10, 1)))
    # z is pooled once the in-plane spacing reaches it (at exactly 2x the finest it is not, as in nnU-Net)
    assert many["pixdim"] == [1.0, 1.0, 4.0] and many["strides"][:3] == [[2, 2, 1], [2, 2, 1], [2, 2, 2]]


def test_recommended_without_fingerprint(tmp_path):
    with pytest.raises(FileNotFoundError, match="segbundles prepare fingerprint"):
        recommended(tmp_path / "datalist.json")
