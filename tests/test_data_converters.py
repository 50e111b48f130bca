"""Every converter on synthetic data written in its official layout, and on the real data where it applies
(BraTS 2015 two-channel export via the BraTS and the CSV converters, the abdominal CT via the folder converter);
pairing problems are all listed at once; conversions are deterministic; the command line works end to end."""

from __future__ import annotations

import csv
import inspect
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from shared_components.data import synthetic as S
from shared_components.data.checks import check_datalist
from shared_components.data.converters.abdomenct1k import abdomenct1k_datalist, convert_abdomenct1k
from shared_components.data.converters.brats import brats_datalist, convert_brats
from shared_components.data.converters.csv_table import convert_table, table_datalist
from shared_components.data.converters.folders import convert_folder, folder_datalist
from shared_components.data.converters.lits import convert_lits, lits_datalist
from shared_components.data.converters.msd import convert_msd
from shared_components.data.datalist import load_datalist, split
from shared_components.data.errors import DataValidationError
from shared_components.paths import REPO_ROOT

BRATS_REGIONS_2015 = {"TC": [1, 3, 4], "WT": [1, 2, 3, 4], "ET": [4]}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    S.write_msd_spleen(root / "Task09_Spleen", n_train=4, n_test=1)
    S.write_msd_liver(root / "Task03_Liver", n_train=4, n_test=1)
    S.write_msd_brain_tumour(root / "Task01_BrainTumour", n_train=4, n_test=1)
    S.write_lits(root / "LiTS", n=5, n_test=2)
    S.write_abdomenct1k(root / "AbdomenCT-1K", n=5, n_unlabelled=1)
    S.write_brats(root / "BraTS2021", n=5, n_unlabelled=1)
    S.write_amygdala_folders(root / "amygdala", n_per_centre=3)
    S.write_gandlf_csv(root / "gandlf", n=4)
    return root


def _full_check(path: Path, **kwargs) -> int:
    data = load_datalist(path)
    args = {k: data[k] for k in ("label_map", "regions") if data.get(k)}
    return check_datalist(data, data["dataset_dir"], preprocessing_args=args or None, level="full", **kwargs)


def _files(root: Path, folder: str) -> list[str]:
    return sorted(p.relative_to(root / folder).as_posix() for p in (root / folder).rglob("*") if p.is_file())


def test_msd_ct_and_brain_tumour(synth, tmp_path):
    assert _files(synth, "Task09_Spleen") == [
        "dataset.json",
        *[f"imagesTr/spleen_{i}.nii.gz" for i in range(1, 5)],
        "imagesTs/spleen_5.nii.gz",
        *[f"labelsTr/spleen_{i}.nii.gz" for i in range(1, 5)],
    ]
    spleen = load_datalist(convert_msd(synth / "Task09_Spleen", tmp_path / "spleen", folds=2, check="full"))
    assert spleen["labels"] == {"0": "background", "1": "spleen"} and spleen["modality"] == {"0": "CT"}
    assert len(spleen["training"]) == 4 and spleen["test"][0]["image"] == "imagesTs/spleen_5.nii.gz"
    liver = load_datalist(convert_msd(synth / "Task03_Liver", tmp_path / "liver", folds=2, check="full"))
    assert liver["labels"]["2"] == "cancer" and liver["training"][0]["image"] == "imagesTr/liver_1.nii.gz"
    bt = load_datalist(convert_msd(synth / "Task01_BrainTumour", tmp_path / "bt", folds=2, check="full"))
    assert bt["num_channels"] == 4 and bt["modality"] == {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
    assert bt["regions"] == {"TC": [2, 3], "WT": [1, 2, 3], "ET": [3]}
    assert bt["training"][0]["image"] == "imagesTr/BRATS_001.nii.gz"  # the 4D file stays one image
    assert nib.load(synth / "Task01_BrainTumour" / "imagesTr" / "BRATS_001.nii.gz").shape[3] == 4
    with pytest.raises(DataValidationError, match="image has 4 channel.s., the model expects 3"):
        check_datalist(bt, bt["dataset_dir"], num_channels=3)


def test_lits(synth, tmp_path):
    files = _files(synth, "LiTS")
    assert "Training Batch 1/volume-0.nii" in files and "Training Batch 1/segmentation-4.nii" in files
    assert "Test Data/test-volume-1.nii" in files and len(files) == 12
    path = convert_lits(synth / "LiTS", tmp_path, folds=5, check="full")
    data = load_datalist(path)
    assert path == tmp_path / "datalist.json" and data["source_layout"] == "lits"
    assert data["labels"] == {"0": "background", "1": "liver", "2": "tumor"} and data["modality"] == {"0": "CT"}
    assert [e["subject"] for e in data["training"]] == [f"volume-{i}" for i in range(5)]
    assert data["training"][0]["label"] == "Training Batch 1/segmentation-0.nii"
    assert [e["subject"] for e in data["test"]] == ["test-volume-0", "test-volume-1"]
    assert sorted(e["fold"] for e in data["training"]) == [0, 1, 2, 3, 4]


def test_converters_take_the_options_of_their_datalist_function(synth, tmp_path):
    """``convert_<layout>`` is derived from ``<layout>_datalist``: same options (plus ``dst``, ``check``), by name or
    by position as ``fire`` passes them, and a typo in an option name is refused."""
    for convert, make in [
        (convert_lits, lits_datalist),
        (convert_abdomenct1k, abdomenct1k_datalist),
        (convert_brats, brats_datalist),
        (convert_table, table_datalist),
        (convert_folder, folder_datalist),
    ]:
        names = list(inspect.signature(make).parameters)
        assert list(inspect.signature(convert).parameters) == [names[0], "dst", *names[1:], "check"]
        assert convert.__name__ == "convert_" + make.__name__.removesuffix("_datalist")
    path = convert_lits(synth / "LiTS", tmp_path / "pos.json", 2, 3, "kfold", None, "off")
    data = load_datalist(path)
    assert path == tmp_path / "pos.json" and (data["num_folds"], data["seed"]) == (2, 3)
    assert data == load_datalist(convert_lits(synth / "LiTS", tmp_path / "kw.json", seed=3, folds=2, check="off"))
    with pytest.raises(TypeError, match="fold_mod"):
        convert_lits(synth / "LiTS", tmp_path, fold_mod="loco")


def test_lits_pairing_problems_all_listed(synth, tmp_path):
    src = tmp_path / "LiTS"
    shutil.copytree(synth / "LiTS", src)
    (src / "Training Batch 1" / "segmentation-1.nii").unlink()
    (src / "Training Batch 1" / "volume-3.nii").unlink()
    with pytest.raises(DataValidationError, match=r"2 problem\(s\)") as err:
        lits_datalist(src)
    msg = str(err.value)
    assert "[volume-1]" in msg and "no segmentation-1.nii next to the volume" in msg
    assert "[volume-3]" in msg and "segmentation without volume-3.nii" in msg


def test_abdomenct1k(synth, tmp_path):
    files = _files(synth, "AbdomenCT-1K")
    assert files[0] == "AbdomenCT-1K-ImagePart1/Case_00001_0000.nii.gz" and "Mask/Case_00005.nii.gz" in files
    data = load_datalist(convert_abdomenct1k(synth / "AbdomenCT-1K", tmp_path / "o", folds=5, check="full"))
    assert data["labels"] == {"0": "background", "1": "liver", "2": "kidney", "3": "spleen", "4": "pancreas"}
    assert len(data["training"]) == 5 and [e["subject"] for e in data["test"]] == ["Case_00006"]
    assert data["training"][2] | {"fold": 0} == {
        "image": "AbdomenCT-1K-ImagePart1/Case_00003_0000.nii.gz",
        "label": "Mask/Case_00003.nii.gz",
        "subject": "Case_00003",
        "fold": 0,
    }
    with pytest.raises(DataValidationError, match="image has no mask"):
        abdomenct1k_datalist(synth / "AbdomenCT-1K", unlabelled="error")
    centres = {f"Case_{i:05d}": "nanjing" if i < 4 else "nih" for i in range(1, 7)}
    loco = abdomenct1k_datalist(synth / "AbdomenCT-1K", fold_mode="loco", center_map=centres)
    assert {e["subject"]: e["fold"] for e in loco["training"]}["Case_00005"] == 1


def test_brats2021(synth, tmp_path):
    assert _files(synth, "BraTS2021")[:5] == [
        f"BraTS2021_00000/BraTS2021_00000_{m}.nii.gz" for m in ("flair", "seg", "t1", "t1ce", "t2")
    ]
    data = load_datalist(convert_brats(synth / "BraTS2021", tmp_path, folds=5, check="full"))
    assert data["source_layout"] == "brats:brats2021" and data["convention"] == "brats2021"
    assert data["modality"] == {"0": "FLAIR", "1": "T1", "2": "T1CE", "3": "T2"} and data["num_channels"] == 4
    assert data["regions"] == BRATS_REGIONS_2015 and data["labels"]["4"] == "enhancing tumor"
    first = data["training"][0]
    assert first["image"] == [f"BraTS2021_00000/BraTS2021_00000_{m}.nii.gz" for m in ("flair", "t1", "t1ce", "t2")]
    assert first["label"] == "BraTS2021_00000/BraTS2021_00000_seg.nii.gz"
    assert len(data["training"]) == 5 and len(data["test"]) == 1 and "label" not in data["test"][0]
    # the datalist loads through the bundles' split() with absolute paths
    train = split(data, fold=0, part="train", base_dir=data["dataset_dir"])
    assert len(train) == 4 and all(Path(f).is_file() for e in train for f in e["image"])


def test_brats2023_layout_is_detected(tmp_path):
    src = S.write_brats(tmp_path / "BraTS2023", n=3, release="2023")
    data = load_datalist(convert_brats(src, tmp_path / "out", folds=3, check="full"))
    assert data["source_layout"] == "brats:brats2023" and data["convention"] == "brats2023"
    assert data["regions"] == {"TC": [1, 3], "WT": [1, 2, 3], "ET": [3]} and data["labels"]["3"] == "enhancing tumor"
    assert data["training"][0]["image"][0] == "BraTS-GLI-00000-000/BraTS-GLI-00000-000-t2f.nii.gz"
    # 2021 label values (4 = enhancing) read with the 2023 convention are caught before training
    with pytest.raises(DataValidationError, match=r"label values \[4\] are outside"):
        brats = load_datalist(convert_brats(S.write_brats(tmp_path / "b21", n=3), tmp_path / "o21", folds=3))
        check_datalist(brats, brats["dataset_dir"], preprocessing_args={"regions": data["regions"]}, level="full")


def test_brats_missing_channel_reported(synth, tmp_path):
    src = tmp_path / "BraTS2021"
    shutil.copytree(synth / "BraTS2021", src)
    (src / "BraTS2021_00000" / "BraTS2021_00000_t1ce.nii.gz").unlink()
    (src / "BraTS2021_00001" / "BraTS2021_00001_flair.nii.gz").unlink()
    with pytest.raises(DataValidationError, match=r"2 problem\(s\)") as err:
        brats_datalist(src)
    msg = str(err.value)
    assert "[BraTS2021_00000]" in msg and "T1CE channel is missing" in msg and "FLAIR channel is missing" in msg


def test_brats2015_two_channel_real(data_dir, tmp_path):
    src = data_dir / "brats2015_examples"
    data = load_datalist(convert_brats(src, tmp_path, folds=3, center_regex=r"brats_(\w+?)_pat"))
    assert data["source_layout"] == "brats:brats2015_examples" and data["num_channels"] == 2
    assert data["modality"] == {"0": "FLAIR", "1": "T1c"} and data["regions"] == BRATS_REGIONS_2015
    assert data["labels"]["3"] == "non-enhancing tumor" and len(data["training"]) == 6
    assert {e["center"] for e in data["training"]} == {"2013"}
    e = data["training"][0]
    assert e["image"] == [f"test/{e['subject']}/{n}_subtrMeanDivStd.nii.gz" for n in ("Flair", "T1c")]
    split_folders = brats_datalist(src, folds=1, use_split_folders=True)
    assert [len(split_folders[s]) for s in ("training", "validation", "test")] == [2, 2, 2]
    assert all("label" in e for e in split_folders["test"])
    # the same export with explicit patterns (channel-pattern option)
    custom = brats_datalist(src, folds=3, channels="Flair_*,T1c_*", label="OTMultiClass", convention="brats2015")
    assert [x["image"] for x in custom["training"]] == [x["image"] for x in data["training"]]


def test_gandlf_csv_synthetic(synth, tmp_path):
    with open(synth / "gandlf" / "train.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["SubjectID", "Channel_0", "Channel_1", "Channel_2", "Channel_3", "Label", "Center"]
    data = load_datalist(convert_table(synth / "gandlf" / "train.csv", tmp_path, folds=2, convention="brats2021"))
    assert data["num_channels"] == 4 and data["regions"] == BRATS_REGIONS_2015
    e = data["training"][0]
    assert e["image"][0] == "subject_001/t1.nii.gz" and e["label"] == "subject_001/seg.nii.gz"  # relative to the CSV
    assert {x["center"] for x in data["training"]} == {"site_1", "site_2"}
    per_fold = {(x["center"], x["fold"]) for x in data["training"]}
    assert len(per_fold) == 4  # folds stratified by centre: both centres in both folds
    assert _full_check(tmp_path / "datalist.json") == 4


def test_csv_of_the_real_brats2015_cases(data_dir, tmp_path):
    """BraTS 2-channel via a CSV: absolute paths outside the CSV folder stay absolute, a relative one resolves."""
    src = data_dir / "brats2015_examples"
    cases = sorted(p for p in src.glob("*/*") if p.is_dir())
    local = tmp_path / "local"
    shutil.copytree(cases[0], local / cases[0].name)
    csv_path = tmp_path / "brats.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["SubjectID", "Modality_0", "Modality_1", "Mask"])
        for i, c in enumerate(cases):
            base = Path("local") / c.name if i == 0 else c
            w.writerow([c.name, base / "Flair_subtrMeanDivStd.nii.gz", base / "T1c_subtrMeanDivStd.nii.gz",
                        base / "OTMultiClass.nii.gz"])  # fmt: skip
    data = load_datalist(
        convert_table(csv_path, tmp_path / "out", folds=3, modality="FLAIR,T1c", convention="brats2015")
    )
    assert data["modality"] == {"0": "FLAIR", "1": "T1c"} and data["regions"] == BRATS_REGIONS_2015
    assert data["training"][0]["image"][0] == f"local/{cases[0].name}/Flair_subtrMeanDivStd.nii.gz"
    assert data["training"][1]["image"][1] == str(cases[1] / "T1c_subtrMeanDivStd.nii.gz")
    assert len(data["training"]) == 6
    full = dict(data, training=data["training"][:2])  # voxel check of two real cases (240x240x155, 2 channels)
    assert check_datalist(full, data["dataset_dir"], 2, 3, {"regions": data["regions"]}, level="full") == 2


def test_csv_problems_all_listed(tmp_path):
    img = tmp_path / "a.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), img)
    (tmp_path / "t.csv").write_text(
        "SubjectID,Channel_0,Channel_1,Label\n"
        "s1,a.nii.gz,missing.nii.gz,a.nii.gz\n"
        "s1,a.nii.gz,a.nii.gz,a.nii.gz\n"
        ",a.nii.gz,a.nii.gz,\n"
        "s3,a.nii.gz,,\n"
    )
    with pytest.raises(DataValidationError, match=r"4 problem\(s\)") as err:
        table_datalist(tmp_path / "t.csv")
    msg = str(err.value)
    assert "Channel_1 file is missing" in msg and "subject also on line 2" in msg
    assert "empty SubjectID" in msg and "Channel_1 is empty" in msg
    (tmp_path / "u.csv").write_text("Patient,Scan\ns1,a.nii.gz\n")
    with pytest.raises(ValueError, match="no subject column"):
        table_datalist(tmp_path / "u.csv")


def test_amygdala_folders_multicentre(synth, tmp_path):
    assert _files(synth, "amygdala")[:2] == ["images/centre_a/sub-101.nii.gz", "images/centre_a/sub-102.nii.gz"]
    names = {"1": "left amygdala", "2": "right amygdala"}
    path = convert_folder(synth / "amygdala", tmp_path, folds=3, modality="T1", label_names=names, check="full")
    data = load_datalist(path)
    assert data["labels"] == {"0": "background", **names} and data["modality"] == {"0": "T1"}
    e = data["training"][0]
    assert e == {"image": "images/centre_a/sub-101.nii.gz", "subject": "centre_a_sub-101", "center": "centre_a",
                 "label": "labels/centre_a/sub-101.nii.gz", "fold": e["fold"]}  # fmt: skip
    assert {(x["center"], x["fold"]) for x in data["training"]} == {
        (c, f) for c in ("centre_a", "centre_b", "centre_c") for f in range(3)
    }
    again = convert_folder(synth / "amygdala", tmp_path / "again", folds=3, modality="T1", label_names=names)
    assert again.read_text() == path.read_text()  # deterministic
    loco = folder_datalist(synth / "amygdala", fold_mode="loco")
    assert {x["center"]: x["fold"] for x in loco["training"]} == {"centre_a": 0, "centre_b": 1, "centre_c": 2}
    assert loco["num_folds"] == 3 and loco["fold_mode"] == "loco"


def test_folder_multichannel_suffixes_and_problems(tmp_path):
    src = tmp_path / "mine"
    vol = nib.Nifti1Image(np.ones((6, 6, 6), np.float32), np.eye(4))
    lbl = nib.Nifti1Image(np.eye(6, dtype=np.uint8)[:, :, None].repeat(6, 2), np.eye(4))
    for case in ("p01", "p02", "p03"):
        for ch in range(2):
            (src / "imagesTr").mkdir(parents=True, exist_ok=True)
            nib.save(vol, src / "imagesTr" / f"{case}_{ch:04d}.nii.gz")
        (src / "labelsTr").mkdir(exist_ok=True)
        nib.save(lbl, src / "labelsTr" / f"{case}_seg.nii.gz")
    data = folder_datalist(src, images="imagesTr", labels="labelsTr", folds=3, modality="T2,ADC")
    assert data["num_channels"] == 2 and data["modality"] == {"0": "T2", "1": "ADC"}
    assert data["training"][0]["image"] == ["imagesTr/p01_0000.nii.gz", "imagesTr/p01_0001.nii.gz"]
    assert data["training"][0]["label"] == "labelsTr/p01_seg.nii.gz"
    (src / "imagesTr" / "p02_0001.nii.gz").unlink()
    nib.save(lbl, src / "labelsTr" / "p09_seg.nii.gz")
    with pytest.raises(DataValidationError, match=r"2 problem\(s\)") as err:
        folder_datalist(src, images="imagesTr", labels="labelsTr", folds=2)
    msg = str(err.value)
    assert "[p02]" in msg and "channels [0], expected 0..1" in msg and "[p09_seg]" in msg and "without an image" in msg


def test_real_abdominal_ct_via_folder_converter(data_dir, tmp_path):
    src = data_dir / "abdomen_ct_example"
    kw = {"images": "ct.nii.gz", "labels": "labels_total.nii.gz", "folds": 1, "modality": "CT"}
    whole = load_datalist(convert_folder(src, tmp_path / "all", **kw, check="full"))
    assert len(whole["labels"]) == 118 and whole["labels"]["1"] == "spleen" and whole["labels"]["5"] == "liver"
    assert whole["training"] == [
        {"image": "ct.nii.gz", "subject": "abdomen_ct_example", "label": "labels_total.nii.gz", "fold": 0}
    ]
    two = load_datalist(convert_folder(src, tmp_path / "two", **kw, select="spleen,liver", check="full"))
    assert two["label_map"] == {"1": 1, "5": 2} and two["labels"] == {"0": "background", "1": "spleen", "2": "liver"}
    with pytest.raises(ValueError, match="'aorta_x' is not among the label names"):
        folder_datalist(src, **kw, select="aorta_x")


@pytest.mark.slow
def test_command_line(tmp_path):
    """The documented commands: write a layout, convert it, check it (and a broken copy exits 2 with the list)."""
    run = lambda *a: subprocess.run([sys.executable, *a], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)  # noqa: E731
    r = run("scripts/synthetic.py", "lits", str(tmp_path / "LiTS"), "--n", "3")
    assert r.returncode == 0, r.stderr
    r = run(
        "scripts/prepare_data.py",
        "lits",
        "--src",
        str(tmp_path / "LiTS"),
        "--dst",
        str(tmp_path / "LiTS"),
        "--folds",
        "3",
    )
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and "training: 3 cases | per fold 0: 1, 1: 1, 2: 1" in r.stdout
    (tmp_path / "LiTS" / "Training Batch 1" / "segmentation-2.nii").write_bytes(b"garbage")
    r = run("scripts/prepare_data.py", "check", str(tmp_path / "LiTS" / "datalist.json"), "--level", "full")
    assert r.returncode == 2 and "[volume-2]" in r.stderr and "label file is unreadable" in r.stderr
    assert json.loads((tmp_path / "LiTS" / "datalist.json").read_text())["num_folds"] == 3


def test_datalists_load_through_the_bundle_chain(synth, data_dir, tmp_path):
    """Each converter's output goes through the bundles' preprocessing (MONAI LoadImaged stacking channel files,
    4D MSD files, LPS-stored CT reoriented to RAS, regions and label_map applied)."""
    from shared_components.transforms.chains import val_transforms

    cases = {
        "spleen": (convert_msd(synth / "Task09_Spleen", tmp_path / "a", folds=2), {"intensity": {"kind": "ct", "a_min": -100, "a_max": 250}}),
        "bt": (convert_msd(synth / "Task01_BrainTumour", tmp_path / "b", folds=2), {}),
        "brats": (convert_brats(synth / "BraTS2021", tmp_path / "c", folds=2), {}),
        "amygdala": (convert_folder(synth / "amygdala", tmp_path / "d", folds=2), {"pixdim": (1.0, 1.0, 1.0)}),
        "abdomen": (convert_folder(data_dir / "abdomen_ct_example", tmp_path / "e", images="ct.nii.gz",
                                   labels="labels_total.nii.gz", folds=1, select="spleen,liver"), {}),
    }  # fmt: skip
    for name, (path, args) in cases.items():
        data = load_datalist(path)
        args = {**args, **{k: data[k] for k in ("regions", "label_map") if data.get(k)}}
        out = val_transforms(**args)(split(data, fold=None, part="all", base_dir=data["dataset_dir"])[0])
        assert out["image"].shape[0] == data["num_channels"], name
        assert out["image"].shape[1:] == out["label"].shape[1:], name
        assert out["label"].shape[0] == (3 if data.get("regions") else 1), name
        if data.get("label_map"):
            assert set(out["label"].unique().tolist()) == {0, 1, 2}, name
        assert nib.aff2axcodes(out["image"].affine.numpy()) == ("R", "A", "S"), name  # LPS-stored CT reoriented
