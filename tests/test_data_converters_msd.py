"""The MSD converter: deterministic balanced folds on the real task, and errors that name the missing file."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from shared_components.data.converters.msd import convert_msd, msd_datalist
from shared_components.data.errors import DataValidationError


def test_real_task_folds_deterministic_and_balanced(hippo_dir):
    a = msd_datalist(hippo_dir, folds=5, seed=3)
    b = msd_datalist(hippo_dir, folds=5, seed=3)
    c = msd_datalist(hippo_dir, folds=5, seed=4)
    assert a == b
    assert [e["fold"] for e in a["training"]] != [e["fold"] for e in c["training"]]
    sizes = Counter(e["fold"] for e in a["training"])
    assert sorted(sizes) == [0, 1, 2, 3, 4]
    assert max(sizes.values()) - min(sizes.values()) <= 1
    assert len(a["training"]) == 208 and a["num_channels"] == 1
    assert a["labels"] == {"0": "background", "1": "Anterior", "2": "Posterior"}
    first = a["training"][0]
    assert (hippo_dir / first["image"]).is_file() and (hippo_dir / first["label"]).is_file()
    assert first["subject"] == "hippocampus_001"


def test_shipped_datalist_is_the_converter_output(hippo_dir):
    from shared_components.paths import shipped_datalist

    shipped = json.loads(Path(shipped_datalist("Task04_Hippocampus")).read_text())
    assert shipped == msd_datalist(hippo_dir, folds=5, seed=0)


def test_missing_image_is_named(tmp_path, hippo_dir):
    src = tmp_path / "Task04_Hippocampus"
    (src / "imagesTr").mkdir(parents=True)
    (src / "labelsTr").mkdir()
    meta = json.loads((hippo_dir / "dataset.json").read_text())
    meta["training"] = meta["training"][:3]
    (src / "dataset.json").write_text(json.dumps(meta))
    for e in meta["training"]:
        for k in ("image", "label"):
            shutil.copy(hippo_dir / e[k], src / e[k])
    missing = src / meta["training"][1]["image"]
    missing.unlink()
    (src / meta["training"][2]["label"]).unlink()
    with pytest.raises(DataValidationError) as err:
        convert_msd(src, tmp_path / "out", folds=2)
    msg = str(err.value)
    assert str(missing) in msg and "image listed in dataset.json is missing" in msg
    assert "label listed in dataset.json is missing" in msg and "2 problem(s)" in msg
    assert not (tmp_path / "out" / "datalist.json").exists()


def test_not_an_msd_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        convert_msd(tmp_path, tmp_path / "out")
