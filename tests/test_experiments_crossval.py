"""Cross-validation of the hippocampus bundle on 4 real cases (2 folds, 1 epoch), resumability, fold ensemble."""

from __future__ import annotations

import json

import nibabel as nib
import pandas as pd
import pytest
import torch

from shared_components.data.converters.msd import msd_datalist
from shared_components.evaluation.ensemble import FoldEnsemble
from shared_components.experiments.crossval import cross_validate
from tests.helpers import HIPPO


def test_fold_ensemble_averages_probabilities(tmp_path):
    net = torch.nn.Conv3d(1, 3, 1)
    paths = []
    for i in range(2):
        torch.manual_seed(i)
        m = torch.nn.Conv3d(1, 3, 1)
        paths.append(tmp_path / f"m{i}.pt")
        torch.save(m.state_dict(), paths[-1])
    x = torch.randn(1, 1, 4, 4, 4)
    logits = []
    for p in paths:
        m = torch.nn.Conv3d(1, 3, 1)
        m.load_state_dict(torch.load(p))
        logits.append(m(x).detach())
    soft = FoldEnsemble(net, paths)
    expected = (torch.softmax(logits[0], 1) + torch.softmax(logits[1], 1)) / 2
    torch.testing.assert_close(torch.softmax(soft(x), 1), expected, atol=1e-5, rtol=1e-4)
    sig = FoldEnsemble(net, paths, multilabel=True)
    expected = (torch.sigmoid(logits[0]) + torch.sigmoid(logits[1])) / 2
    torch.testing.assert_close(torch.sigmoid(sig(x)), expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FoldEnsemble(net, [tmp_path / "missing.pt"])


@pytest.fixture(scope="module")
def two_folds(tmp_path_factory, hippo_dir):
    cases = msd_datalist(hippo_dir, folds=5, seed=0)["training"][:4]
    for i, e in enumerate(cases):
        e["fold"] = i // 2
    path = tmp_path_factory.mktemp("cv") / "datalist.json"
    path.write_text(json.dumps({"training": cases}, indent=4))
    return path


@pytest.mark.slow
def test_two_fold_cross_validation(tmp_path, hippo_dir, two_folds):
    image = hippo_dir / "imagesTr" / "hippocampus_001.nii.gz"
    kwargs = {
        "folds": "0,1",
        "out": str(tmp_path / "cv"),
        "max_epochs": 1,
        "dataset_dir": str(hippo_dir),
        "datalist": str(two_folds),
        "overrides": {"batch_size": 2, "val_interval": 1},
    }
    out = cross_validate(HIPPO, ensemble_input=str(image), **kwargs)
    table = pd.read_csv(out / "cross_validation.csv", dtype={"fold": str})
    assert list(table["fold"]) == ["0", "1", "pooled"]
    assert list(table["status"].fillna("")) == ["done", "done", ""]
    assert list(table["cases"]) == [2, 2, 4] and list(table["epochs"].iloc[:2]) == [1, 1]
    pooled = pd.read_csv(out / "metrics_per_case.csv", dtype={"fold": str})
    assert set(pooled["fold"]) == {"0", "1"} and pooled["case"].nunique() == 4
    for fold in ("0", "1"):
        per_fold = pd.read_csv(out / f"fold_{fold}" / "eval" / "metrics_per_case.csv", dtype={"fold": str})
        dice = per_fold[(per_fold["metric"] == "dice") & (per_fold["class"] == "anterior")]["value"].mean()
        assert table.set_index("fold").loc[fold, "dice_anterior"] == pytest.approx(dice, abs=1e-5)
    d = pooled[pooled["metric"] == "dice"]
    assert table.set_index("fold").loc["pooled", "dice_mean"] == pytest.approx(d["value"].mean(), abs=1e-5)
    md = (out / "cross_validation.md").read_text()
    assert "| 0 | done | 2 | 1 |" in md and "Pooled over all folds" in md and "anterior" in md
    seg = out / "ensemble" / "hippocampus_001_seg.nii.gz"
    assert nib.load(seg).shape == nib.load(image).shape

    # resumable: finished folds are not trained again
    finished = [json.loads((out / f"fold_{f}" / "run.json").read_text())["finished"] for f in (0, 1)]
    cross_validate(HIPPO, **kwargs)
    assert [json.loads((out / f"fold_{f}" / "run.json").read_text())["finished"] for f in (0, 1)] == finished

    with pytest.raises(ValueError, match=r"fold\(s\) \[3\] not in"):
        cross_validate(HIPPO, **{**kwargs, "folds": "0,3"})
