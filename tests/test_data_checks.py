"""Datalist validation: one test per kind of bad input, each message naming the case, the file and the fix, and a
datalist with several bad cases reporting all of them at once."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from shared_components.data.checks import check_datalist, check_datalist_file, find_problems, label_rules
from shared_components.data.datalist import save_datalist
from shared_components.data.errors import DataValidationError

SHAPE = (12, 10, 8)


def _save(path, data, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), path)
    return path.name


def _label(values=(1, 2)):
    lbl = np.zeros(SHAPE, np.uint8)
    for i, v in enumerate(values):
        lbl[2 + 3 * i : 4 + 3 * i, 3:6, 2:5] = v
    return lbl


def _image():
    return np.random.default_rng(0).normal(100, 20, SHAPE).astype(np.float32)


def _case(tmp_path, name, image=None, label=None, image_affine=None, label_affine=None, label_name=None):
    img = _save(tmp_path / f"{name}_img.nii.gz", _image() if image is None else image, image_affine)
    lbl = _save(tmp_path / (label_name or f"{name}_lbl.nii.gz"), _label() if label is None else label, label_affine)
    return {"image": img, "label": lbl, "subject": name, "fold": 0}


def _problems(tmp_path, entries, level="quick", **kwargs):
    with pytest.raises(DataValidationError) as err:
        check_datalist({"training": entries}, str(tmp_path), level=level, **kwargs)
    return err.value.problems, str(err.value)


def test_good_cases_pass_both_levels(tmp_path):
    entries = [_case(tmp_path, f"c{i}") for i in range(3)]
    for e, f in zip(entries, (0, 1, 2), strict=True):
        e["fold"] = f
    assert check_datalist({"training": entries}, str(tmp_path), 1, 3, level="quick") == 3
    assert check_datalist({"training": entries}, str(tmp_path), 1, 3, level="full") == 3
    assert check_datalist({"training": entries}, str(tmp_path), level="off") == 0
    with pytest.raises(ValueError, match="check level"):
        check_datalist({"training": entries}, str(tmp_path), level="thorough")


def test_missing_file(tmp_path):
    e = _case(tmp_path, "c1")
    (tmp_path / e["label"]).unlink()
    problems, msg = _problems(tmp_path, [e])
    assert len(problems) == 1 and problems[0].case == "c1"
    assert str(tmp_path / e["label"]) in msg and "label file is missing" in msg and "--dataset_dir" in msg


def test_unreadable_file(tmp_path):
    e = _case(tmp_path, "c1")
    (tmp_path / e["image"]).write_bytes(b"this is not a NIfTI file at all" * 20)
    problems, msg = _problems(tmp_path, [e])
    assert "image file is unreadable" in msg and "re-copy or re-export" in msg
    assert problems[0].file == str(tmp_path / e["image"])


def test_truncated_files(tmp_path):
    """A truncated .nii is caught from its size (quick); a truncated .nii.gz when its voxels are read (full)."""
    e1 = _case(tmp_path, "c1")
    raw = gzip.decompress((tmp_path / e1["image"]).read_bytes())
    (tmp_path / e1["image"]).write_bytes(gzip.compress(raw)[:-300])
    e2 = _case(tmp_path, "c2")
    nii = tmp_path / "c2_img.nii"
    nii.write_bytes(gzip.decompress((tmp_path / e2["image"]).read_bytes())[:-100])
    e2["image"] = nii.name
    problems, msg = _problems(tmp_path, [e1, e2], level="quick")
    assert [p.case for p in problems] == ["c2"] and "truncated" in msg
    problems, msg = _problems(tmp_path, [e1, e2], level="full")
    assert [p.case for p in problems] == ["c1", "c2"]
    assert "voxel data cannot be read" in problems[0].issue


def test_image_label_shape_mismatch(tmp_path):
    e = _case(tmp_path, "c1", label=np.zeros((12, 10, 9), np.uint8))
    problems, msg = _problems(tmp_path, [e])
    assert "label shape [12, 10, 9] differs from the image's [12, 10, 8]" in msg and "resample" in msg


def test_affine_mismatch(tmp_path):
    shifted = np.eye(4)
    shifted[0, 3] = 2.0
    e = _case(tmp_path, "c1", label_affine=shifted)
    problems, msg = _problems(tmp_path, [e])
    assert len(problems) == 1 and "label affine differs" in msg and "up to 2" in msg and "nib.Nifti1Image" in msg
    tiny = np.eye(4)
    tiny[0, 3] = 1e-5  # header round-off is accepted
    ok = _case(tmp_path, "c2", label_affine=tiny)
    assert check_datalist({"training": [ok]}, str(tmp_path)) == 1


def test_channel_count_mismatch(tmp_path):
    e = _case(tmp_path, "c1")
    problems, msg = _problems(tmp_path, [e], num_channels=2)
    assert "image has 1 channel(s), the model expects 2" in msg
    four_d = _save(tmp_path / "c2_4d.nii.gz", np.zeros(SHAPE + (2,), np.float32) + _image()[..., None])
    e2 = {**_case(tmp_path, "c2"), "image": four_d}
    assert check_datalist({"training": [e2]}, str(tmp_path), num_channels=2) == 1  # one 4D file, 2 channels
    e3 = {**_case(tmp_path, "c3"), "image": [e["image"], _save(tmp_path / "c3_t2.nii.gz", np.ones((12, 10, 7)))]}
    problems, msg = _problems(tmp_path, [e3], num_channels=2)
    assert "channel file shape [12, 10, 7] differs" in msg


def test_unexpected_label_values(tmp_path):
    e = _case(tmp_path, "c1", label=_label((1, 5)))
    problems, msg = _problems(tmp_path, [e], level="full", num_classes=3)
    assert "label values [5] are outside the declared classes [0, 1, 2] (num_classes=3)" in msg
    assert "label_map" in problems[0].fix
    # a label_map allows any raw value (unlisted ones become background); regions allow 0 + their values
    assert check_datalist(
        {"training": [e]}, str(tmp_path), num_classes=2, preprocessing_args={"label_map": {5: 1}}, level="full"
    )
    regions = {"TC": [1, 3, 4], "WT": [1, 2, 3, 4], "ET": [4]}
    problems, msg = _problems(tmp_path, [e], level="full", num_classes=3, preprocessing_args={"regions": regions})
    assert "[5] are outside the declared classes [0, 1, 2, 3, 4] (0 plus the region values)" in msg
    e4 = _case(tmp_path, "c4", label=_label((1, 4)))
    assert check_datalist(
        {"training": [e4]}, str(tmp_path), num_classes=3, preprocessing_args={"regions": regions}, level="full"
    )


def test_label_rules_from_datalist_names():
    rules = label_rules(labels={"0": "background", "1": "liver", "2": "tumour"})
    assert rules.allowed == {0, 1, 2} and rules.foreground == {1, 2}
    assert label_rules().allowed is None


def test_empty_label(tmp_path):
    e = _case(tmp_path, "c1", label=np.zeros(SHAPE, np.uint8))
    problems, msg = _problems(tmp_path, [e], level="full", num_classes=3)
    assert "label is empty: no foreground voxels" in msg and "allow_empty" in problems[0].fix
    assert check_datalist({"training": [e]}, str(tmp_path), num_classes=3, level="full", allow_empty=True) == 1
    # with a label_map, a label holding none of the mapped classes is empty for training
    e2 = _case(tmp_path, "c2", label=_label((7,)))
    problems, msg = _problems(tmp_path, [e2], level="full", preprocessing_args={"label_map": {1: 1, 5: 2}})
    assert "none of the mapped classes (label_map)" in msg


def test_nan_inf_intensities(tmp_path):
    img = _image()
    img[1, 1, 1], img[2, 2, 2] = np.nan, np.inf
    e = _case(tmp_path, "c1", image=img)
    assert check_datalist({"training": [e]}, str(tmp_path)) == 1  # headers are fine
    problems, msg = _problems(tmp_path, [e], level="full")
    assert "image has 2 NaN/Inf voxels" in msg and "nan_to_num" in msg


def test_non_integer_label(tmp_path):
    lbl = _label().astype(np.float32)
    lbl[5, 5, 5] = 0.5  # what linear interpolation of a label map leaves behind
    problems, msg = _problems(tmp_path, [_case(tmp_path, "c1", label=lbl)], level="full", num_classes=3)
    assert "non-integer values" in msg and "nearest-neighbour" in msg


def test_subject_in_two_folds_is_leakage(tmp_path):
    a, b = _case(tmp_path, "c1"), _case(tmp_path, "c2")
    b["subject"], b["fold"] = "c1", 1
    problems, msg = _problems(tmp_path, [a, b])
    assert "subject is in several folds [0, 1] (data leakage)" in msg
    # as the bundles call it: the cases of one split, training and validation
    with pytest.raises(DataValidationError, match=r"several sections \['training', 'validation'\]"):
        check_datalist({"training": [a], "validation": [b]}, str(tmp_path))


def test_several_bad_cases_all_reported(tmp_path):
    good = _case(tmp_path, "good")
    missing = _case(tmp_path, "missing")
    (tmp_path / missing["image"]).unlink()
    shape = _case(tmp_path, "shape", label=np.zeros((5, 5, 5), np.uint8))
    values = _case(tmp_path, "values", label=_label((1, 9)))
    nan = _image()
    nan[0, 0, 0] = np.nan
    nans = _case(tmp_path, "nans", image=nan)
    empty = _case(tmp_path, "empty", label=np.zeros(SHAPE, np.uint8))
    no_label = {"image": good["image"], "subject": "nolabel"}
    entries = [good, missing, shape, values, nans, empty, no_label]
    n, problems = find_problems({"training": entries}, str(tmp_path), num_classes=3, level="full")
    assert n == 7
    assert [p.case for p in problems] == ["missing", "shape", "values", "nans", "empty", "nolabel"]
    with pytest.raises(DataValidationError, match=r"6 problem\(s\)") as err:
        check_datalist({"training": entries}, str(tmp_path), num_classes=3, level="full")
    assert len(err.value.problems) == 6
    for p in err.value.problems:  # every problem says which case, which file, and what to do
        assert p.case and p.file and p.fix and str(p).startswith(f"[{p.case}]")


def test_check_datalist_file_uses_the_datalists_metadata(tmp_path):
    e = _case(tmp_path, "c1", label=_label((1, 5)))
    data = {"dataset_dir": str(tmp_path), "labels": {"0": "bg", "1": "a", "2": "b"}, "training": [e]}
    path = save_datalist(data, tmp_path / "dl" / "datalist.json")
    with pytest.raises(DataValidationError, match=r"\[5\] are outside"):
        check_datalist_file(path, level="full")
    save_datalist({**data, "label_map": {"5": 1}}, path)
    assert check_datalist_file(path, level="full") == 1
