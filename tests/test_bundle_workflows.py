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
