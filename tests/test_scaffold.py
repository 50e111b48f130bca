"""Every bundle's derived configs match the shared template (edit the template, then `new_bundle.py sync`)."""

from __future__ import annotations

import json

import pytest
import yaml

from shared_components.bundle import scaffold


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


def test_an_interrupted_ship_is_listed_and_completed_by_sync(tmp_path):
    import shutil

    from shared_components.files import JOURNAL, StagedFiles

    src = scaffold.all_bundles()[0]
    dst = tmp_path / src.name
    shutil.copytree(src / "configs", dst / "configs")
    shutil.copy(src / "LICENSE", dst / "LICENSE")
    stage = StagedFiles(dst)
    stage.write_text(dst / "models" / "model.pt", "new weights")
    # killed after the journal was written, before its renames: the bundle still has its old (no) weights
    (dst / JOURNAL).write_text(json.dumps({"moves": [[str(t), str(p)] for t, p in stage._moves], "removals": []}))
    assert scaffold.check(dst) == [str(dst / JOURNAL)] and not (dst / "models" / "model.pt").exists()
    scaffold.sync(dst)
    assert scaffold.check(dst) == [] and (dst / "models" / "model.pt").read_text() == "new weights"


def test_marker_required():
    with pytest.raises(ValueError, match="marker"):
        scaffold.split_standard("a: 1\n")


def _copy_bundle(src, dst):
    """The configs and LICENSE of bundle ``src`` in folder ``dst`` (all that ``check`` and ``sync`` look at)."""
    import shutil

    shutil.copytree(src / "configs", dst / "configs")
    shutil.copy(src / "LICENSE", dst / "LICENSE")
    return dst


def _spec_dir(tmp_path, monkeypatch, bundles_section: str):
    """A copy of the specs with ``bundles_section`` appended to the spleen_ct dataset spec, used by the scaffold."""
    import shutil

    specs = tmp_path / "specs"
    shutil.copytree(scaffold.SPECS_DIR, specs)
    path = specs / "datasets" / "spleen_ct.yaml"
    path.write_text(path.read_text() + bundles_section)
    monkeypatch.setattr(scaffold, "SPECS_DIR", specs)
    return specs


def test_hand_edited_header_is_detected_and_repaired(tmp_path):
    dst = _copy_bundle(scaffold.BUNDLES_DIR / "spleen_ct_unet", tmp_path / "spleen_ct_unet")
    train = dst / "configs" / "train.yaml"
    train.write_text(train.read_text().replace("\nfold: 0\n", "\nfold: 1\n"))
    assert scaffold.check(dst) == [str(train)]
    assert scaffold.sync(dst) == [str(train)]
    assert scaffold.check(dst) == []
    assert yaml.safe_load(train.read_text())["fold"] == 0


def test_cli_check_names_a_hand_edited_header(tmp_path):
    import subprocess
    import sys

    dst = _copy_bundle(scaffold.BUNDLES_DIR / "spleen_ct_unet", tmp_path / "spleen_ct_unet")
    train = dst / "configs" / "train.yaml"
    train.write_text(train.read_text().replace("\nfold: 0\n", "\nfold: 1\n"))
    cmd = [sys.executable, "scripts/new_bundle.py", "check", str(dst)]
    r = subprocess.run(cmd, cwd=scaffold.REPO_ROOT, capture_output=True, text=True)
    assert r.returncode == 1 and str(train) in r.stderr and "bundles:" in r.stderr


def test_own_bundle_folder_keeps_its_header(tmp_path):
    """A folder not named after a dataset/model pair is not tied to the specs: its header is its own."""
    dst = _copy_bundle(scaffold.BUNDLES_DIR / "spleen_ct_unet", tmp_path / "my_spleen")
    train = dst / "configs" / "train.yaml"
    train.write_text(train.read_text().replace("\nfold: 0\n", "\nfold: 1\n"))
    assert scaffold.bundle_pair(dst) is None
    assert scaffold.check(dst) == []
    assert scaffold.bundle_pair(tmp_path / "hippocampus_mri_swin_unetr") == ("hippocampus_mri", "swin_unetr")


def test_declared_override_with_reason_goes_into_the_header(tmp_path, monkeypatch):
    _spec_dir(
        tmp_path,
        monkeypatch,
        "bundles:\n  unet:\n    reason: trained on fold 1 to compare with a published split\n"
        "    config:\n      fold: 1\n      augmentation_args: {num_samples: 4}\n",
    )
    header = scaffold.train_header("spleen_ct", "unet")
    note = "# Overrides fold, augmentation_args (bundles.unet of specs/datasets/spleen_ct.yaml): trained on fold 1"
    assert note in header.splitlines()[1]
    config = yaml.safe_load(header)
    assert config["fold"] == 1
    assert config["augmentation_args"]["num_samples"] == 4 and config["augmentation_args"]["sampling"] == "label"
    assert "Overrides" not in scaffold.train_header("spleen_ct", "segresnet")  # only the declared bundle differs
    dst = _copy_bundle(scaffold.BUNDLES_DIR / "spleen_ct_unet", tmp_path / "spleen_ct_unet")
    assert scaffold.check(dst) == [str(dst / "configs" / "train.yaml")]  # the bundle now drifts from its spec
    scaffold.sync(dst)
    assert yaml.safe_load((dst / "configs" / "train.yaml").read_text())["fold"] == 1


@pytest.mark.parametrize(
    "section, match",
    [
        ("bundles:\n  unet:\n    config:\n      fold: 1\n", "without a reason"),
        ("bundles:\n  unet:\n    reason: ' '\n    config:\n      fold: 1\n", "without a reason"),
        ("bundles:\n  unet:\n    reason: why\n", "non-empty mapping"),
        ("bundles:\n  vnet:\n    reason: why\n    config:\n      fold: 1\n", "no model spec 'vnet'"),
        ("bundles:\n  unet:\n    reason: why\n    fold: 1\n", "only 'config'"),
    ],
)
def test_bad_override_is_refused(tmp_path, monkeypatch, section, match):
    _spec_dir(tmp_path, monkeypatch, section)
    with pytest.raises(ValueError, match=match):
        scaffold.train_header("spleen_ct", "segresnet")


def test_overrides_belong_in_the_dataset_spec(tmp_path, monkeypatch):
    specs = _spec_dir(tmp_path, monkeypatch, "")
    path = specs / "models" / "unet.yaml"
    path.write_text(path.read_text() + "bundles:\n  spleen_ct:\n    reason: why\n    config:\n      fold: 1\n")
    with pytest.raises(ValueError, match="belong in the dataset spec"):
        scaffold.train_header("spleen_ct", "unet")


def test_model_card_does_not_import_the_scaffold():
    import subprocess
    import sys

    code = (
        "import sys, shared_components.bundle.model_card; assert 'shared_components.bundle.scaffold' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=scaffold.REPO_ROOT, check=True)
