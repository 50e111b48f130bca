"""Every bundle's derived configs match the shared template (edit the template, then `new_bundle.py sync`)."""

from __future__ import annotations

import pytest
import yaml

from shared_components.bundle import scaffold


def test_bundles_exist():
    assert scaffold.all_bundles(), "no bundles found"


@pytest.mark.parametrize("bundle", scaffold.all_bundles(), ids=lambda p: p.name)
def test_bundle_in_sync_with_template(bundle):
    assert scaffold.check(bundle) == []


@pytest.mark.parametrize("bundle", scaffold.all_bundles(), ids=lambda p: p.name)
def test_inference_uses_the_same_network_and_preprocessing(bundle):
    train = yaml.safe_load((bundle / "configs" / "train.yaml").read_text())
    infer = yaml.safe_load((bundle / "configs" / "inference.yaml").read_text())
    for key in ("network_def", "preprocessing_args", "patch_size", "num_classes", "num_channels"):
        assert infer[key] == train[key], key


def test_drift_is_detected_and_repaired(tmp_path):
    import shutil

    src = scaffold.all_bundles()[0]
    dst = tmp_path / src.name
    shutil.copytree(src / "configs", dst / "configs")
    shutil.copy(src / "LICENSE", dst / "LICENSE")
    (dst / "configs" / "evaluate.yaml").write_text("run: []\n")
    text = (dst / "configs" / "train.yaml").read_text()
    (dst / "configs" / "train.yaml").write_text(text.replace("mode: gaussian", "mode: constant"))
    assert sorted(scaffold.check(dst)) == sorted(
        [str(dst / "configs" / "evaluate.yaml"), str(dst / "configs" / "train.yaml")]
    )
    scaffold.sync(dst)
    assert scaffold.check(dst) == []
    assert "mode: gaussian" in (dst / "configs" / "train.yaml").read_text()


def test_marker_required():
    with pytest.raises(ValueError, match="marker"):
        scaffold.split_standard("a: 1\n")
