"""Bundle configs follow the MONAI bundle specification: every required property present, wired by reference."""

from __future__ import annotations

import pytest
from monai.bundle import ConfigWorkflow
from monai.bundle.utils import ID_SEP_KEY

from tests.helpers import HIPPO


@pytest.mark.parametrize(
    "configs,workflow_type",
    [
        (["configs/train.yaml"], "train"),
        (["configs/train.yaml", "configs/evaluate.yaml"], "train"),
        (["configs/inference.yaml"], "infer"),
    ],
    ids=["train", "train+evaluate", "inference"],
)
def test_check_properties_empty(bundles_dir, hippo_dir, tiny_hippo, monkeypatch, configs, workflow_type):
    bundle = bundles_dir / HIPPO
    monkeypatch.chdir(bundle)
    overrides = {"dataset_dir": str(hippo_dir), "datalist": str(tiny_hippo)}
    if workflow_type == "infer":
        overrides["input_data"] = str(hippo_dir / "imagesTr" / "hippocampus_001.nii.gz")
    w = ConfigWorkflow(config_file=configs, workflow_type=workflow_type, **overrides)
    w.initialize()
    assert w.check_properties() == []
    if workflow_type == "train":
        assert w.parser["train#trainer#train_handlers"] == f"@train{ID_SEP_KEY}handlers"  # wired by reference
        assert isinstance(w.parser["train#handlers"], list)
        assert w.parser.get_parsed_content("train#dataset#data")[0]["image"].startswith(str(hippo_dir))


def test_selection_fold_trains_on_neither_and_evaluate_scores_the_fold(bundles_dir, hippo_dir, monkeypatch, tmp_path):
    """--selection_fold k: training leaves out `fold` and k, validation (checkpoint choice) is k, evaluate.yaml scores
    `fold`; the run folder says so (runs/fold0_seed0_select1)."""
    import json

    from shared_components.paths import PACKAGE_DIR

    monkeypatch.chdir(bundles_dir / HIPPO)
    datalist = json.loads((PACKAGE_DIR / "datalists" / "Task04_Hippocampus.json").read_text())
    overrides = {"dataset_dir": str(hippo_dir), "datalist": datalist, "selection_fold": 1, "check_data": "off"}
    train = ConfigWorkflow(config_file=["configs/train.yaml"], workflow_type="train", **overrides)
    train.initialize()
    folds = lambda key: {e["fold"] for e in train.parser.get_parsed_content(key)}  # noqa: E731
    assert folds("train#dataset#data") == {2, 3, 4} and folds("validate#dataset#data") == {1}
    assert train.parser.get_parsed_content("run_dir").endswith("runs/fold0_seed0_select1")
    evaluate = ConfigWorkflow(
        config_file=["configs/train.yaml", "configs/evaluate.yaml"], workflow_type="train", **overrides
    )
    evaluate.initialize()
    assert {e["fold"] for e in evaluate.parser.get_parsed_content("validate#dataset#data")} == {0}
