"""The ADAM and Lausanne aneurysm converters and their synthetic TOF-MRA: layout, datalist (labels, label map,
negatives, every aneurysm's location for the FROC), the checks, and every problem reported at once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from shared_components.data.checks import check_datalist
from shared_components.data.converters.adam import (
    adam_datalist,
    convert_adam,
    mask_locations,
    object_location,
    read_locations,
    write_locations,
)
from shared_components.data.converters.lausanne import convert_lausanne
from shared_components.data.errors import DataValidationError
from shared_components.data.synthetic.mra import SPACING, tof_mra_phantom, write_adam, write_lausanne
from shared_components.paths import REPO_ROOT

SHAPE = (64, 64, 48)


@pytest.fixture(scope="module")
def adam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four labelled synthetic ADAM cases (the 2nd with a treated aneurysm, the 4th without any) and one test case."""
    return write_adam(tmp_path_factory.mktemp("adam") / "ADAM", n=4, seed=0, shape=SHAPE, n_test=1)


def test_synthetic_adam_layout_and_tof_contrast(adam: Path):
    case = adam / "10001"
    for rel in ("orig/TOF.nii.gz", "orig/struct.nii.gz", "pre/TOF.nii.gz", "pre/struct_aligned.nii.gz"):
        assert (case / rel).is_file(), rel
    assert not (adam / "10005" / "aneurysms.nii.gz").exists()  # the unlabelled test case
    img, lab = nib.load(case / "pre" / "TOF.nii.gz"), nib.load(case / "aneurysms.nii.gz")
    assert img.shape == lab.shape == SHAPE
    assert np.allclose(img.header.get_zooms(), SPACING)
    assert img.affine[0, 0] < 0 and img.affine[1, 1] < 0  # stored LPS-ordered, like scanner exports
    tof, label = np.asarray(img.dataobj), np.asarray(lab.dataobj)
    assert set(np.unique(label)) <= {0, 1}
    assert tof[label == 1].mean() > 2 * np.median(tof)  # the aneurysm lumen is bright, like the vessels
    assert np.percentile(tof, 99) > 2.5 * np.median(tof)  # a bright vessel tree in dark tissue
    assert 2 in np.unique(np.asarray(nib.load(adam / "10002" / "aneurysms.nii.gz").dataobj))  # treated
    assert read_locations(adam / "10004" / "location.txt") == []  # no aneurysm


def test_phantom_aneurysm_sizes_and_parent_vessel_excluded():
    rng = np.random.default_rng(3)
    diameters = []
    for _ in range(4):
        ph = tof_mra_phantom(rng, (80, 80, 56), n_aneurysms=2)
        diameters += ph["diameters_mm"]
        vessel = ph["tof"] > 0.7
        for mask in ph["aneurysms"]:
            assert mask.any() and (ph["label"][mask] == 1).all()
        assert (vessel & (ph["label"] == 0)).any()  # the parent vessels are not labelled
    assert min(diameters) >= 2.0 and max(diameters) <= 10.0


def test_convert_adam_datalist(adam: Path, tmp_path: Path):
    path = convert_adam(adam, tmp_path, folds=2, seed=0, check="full")
    data = json.loads(Path(path).read_text())
    assert data["source_layout"] == "adam" and data["labels"] == {"0": "background", "1": "aneurysm"}
    assert data["label_map"] == {"1": 1}  # raw 2 (treated) -> background for training
    assert data["evaluation"]["ignore_label"] == 2 and data["evaluation"]["froc"] is True
    assert "vs" in data["evaluation"]["metrics"]
    assert sorted(e["subject"] for e in data["training"]) == ["10001", "10002", "10003", "10004"]
    assert [e["image"] for e in data["test"]] == ["10005/pre/TOF.nii.gz"]
    assert {e["fold"] for e in data["training"]} == {0, 1}
    first = next(e for e in data["training"] if e["subject"] == "10001")
    assert first["image"] == "10001/pre/TOF.nii.gz" and first["label"] == "10001/aneurysms.nii.gz"
    for case, locs in data["aneurysms"].items():
        listed = read_locations(adam / case / "location.txt")
        untreated = [a for a in locs if not a["treated"]]
        assert [a["center"] for a in untreated] == [list(r[:3]) for r in listed]
        affine = nib.load(adam / case / "aneurysms.nii.gz").affine
        for a in untreated:
            assert np.allclose(a["center_mm"], affine[:3, :3] @ a["center"] + affine[:3, 3], atol=1e-3)
            assert 0.9 <= 2 * a["radius_mm"] <= 12.0
    assert any(a["treated"] for a in data["aneurysms"]["10002"])  # label 2 components become treated records
    assert not [a for a in data["aneurysms"]["10004"] if not a["treated"]]
    assert data["aneurysm_counts"]["cases_without_untreated_aneurysm"] == 1
    # the bundles' check: negatives are only accepted as intended
    with pytest.raises(DataValidationError, match="label is empty"):
        check_datalist(data, str(adam), preprocessing_args={"label_map": {1: 1}}, level="full")


def test_adam_two_channels_and_orig(adam: Path):
    data = adam_datalist(adam, folds=2, channels="TOF,struct")
    assert data["training"][0]["image"] == ["10001/pre/TOF.nii.gz", "10001/pre/struct_aligned.nii.gz"]
    assert data["num_channels"] == 2 and data["modality"] == {"0": "TOF", "1": "struct"}
    assert adam_datalist(adam, folds=2, image="orig")["training"][0]["image"] == "10001/orig/TOF.nii.gz"
    with pytest.raises(ValueError, match="aligned"):
        adam_datalist(adam, channels="TOF,struct", image="orig")


def test_adam_problems_listed_at_once(adam: Path, tmp_path: Path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(adam, bad)
    (bad / "10001" / "location.txt").write_text("200, 10, 10, 3.0\n")  # outside the 64x64x48 image
    (bad / "10002" / "location.txt").write_text("10, 10, 10, 0\n")  # radius 0
    (bad / "10003" / "location.txt").unlink()
    (bad / "10004" / "pre" / "TOF.nii.gz").unlink()
    with pytest.raises(DataValidationError) as err:
        adam_datalist(bad, folds=2)
    text = str(err.value)
    assert "4 problem(s)" in text
    assert "lies outside the image" in text and "radius 0" in text
    assert "location.txt is missing" in text and "image file is missing" in text


def test_locations_round_trip_and_mask_locations(tmp_path: Path):
    path = write_locations(tmp_path / "location.txt", [(10, 20, 30, 2.5), (1.4, 2.6, 3, 4)])
    assert path.read_text() == "10, 20, 30, 2.5\n1, 3, 3, 4\n"
    (tmp_path / "odd.txt").write_text("\n10 20 30 2.5\n 1,2 ,3,\t4\n\n")
    assert read_locations(tmp_path / "odd.txt") == [(10, 20, 30, 2.5), (1, 2, 3, 4)]
    (tmp_path / "broken.txt").write_text("1, 2, 3\n")
    with pytest.raises(ValueError, match="line 1"):
        read_locations(tmp_path / "broken.txt")
    mask = np.zeros((20, 20, 20), bool)
    x, y, z = np.ogrid[:20, :20, :20]
    mask[(x - 5) ** 2 + (y - 6) ** 2 + (z - 7) ** 2 <= 9] = True  # radius 3 voxels
    mask[15, 15, 15] = True  # a second, one-voxel component
    affine = np.diag([0.5, 0.5, 1.0, 1.0])
    affine[:3, 3] = [10.0, 0.0, -5.0]
    locs = mask_locations(mask, affine)
    assert len(locs) == 2
    assert locs[0]["center"] == [5.0, 6.0, 7.0] and locs[0]["center_mm"] == [12.5, 3.0, 2.0]
    assert locs[0]["radius_mm"] == pytest.approx(3.0)  # the farthest voxel centre: 3 voxels along z (1 mm)
    assert locs[1]["radius_mm"] == 0.5  # at least half the largest voxel size
    assert object_location(mask, affine)["center"] != locs[0]["center"]  # one object: both components
    assert object_location(np.zeros((3, 3, 3)), affine) is None


def test_cli_synthetic_and_prepare_data(tmp_path: Path):
    """``scripts/synthetic.py adam`` and ``scripts/prepare_data.py adam`` through their command lines."""
    dst = tmp_path / "ADAM"
    cmd = [sys.executable, "scripts/synthetic.py", "adam", str(dst), "--n", "3", "--shape", "[48,48,40]"]
    r = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cmd = [sys.executable, "scripts/prepare_data.py", "adam", "--src", str(dst), "--dst", str(dst), "--folds", "2"]
    r = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and "aneurysms:" in r.stdout and "treated (ignored)" in r.stdout
    assert (dst / "datalist.json").is_file()


def test_lausanne_bids_layout(tmp_path: Path):
    """ds003949: sessions are cases, the lesion masks of a session merge into one label map, folds keep a
    person's sessions together, controls are negatives."""
    src = write_lausanne(tmp_path / "ds003949", n_patients=3, n_controls=2, seed=1, shape=SHAPE)
    path = convert_lausanne(src, tmp_path / "out", folds=2, seed=0, check="full")
    data = json.loads(Path(path).read_text())
    assert data["source_layout"] == "lausanne" and "label_map" not in data
    cases = {e["subject"]: e for e in data["training"]}
    assert len(cases) == 6  # 5 subjects, the first with a follow-up session
    first = [e for e in data["training"] if e["patient"] == "sub-003"]
    assert len(first) == 2 and len({e["fold"] for e in first}) == 1
    for case, entry in cases.items():
        sub, ses = case.split("_")
        masks = sorted(src.glob(f"derivatives/manual_masks/{sub}/{ses}/anat/*_desc-Lesion_*_mask.nii.gz"))
        assert len(data["aneurysms"][case]) == len(masks)
        label = np.asarray(nib.load(entry["label"]).dataobj)
        union = np.zeros(label.shape, bool)
        for m in masks:
            union |= np.asarray(nib.load(m).dataobj) > 0
        assert np.array_equal(label > 0, union)
        assert entry["image"].startswith("derivatives/N4_bias_field_corrected/")
        assert (entry["group"] == "control") == (not masks)
