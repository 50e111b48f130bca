"""Model Zoo export: vendored code, rewritten configs, the zoo's offline checks and a smoke run, all without
``shared_components`` importable; TorchScript and ONNX compared with the eager network; one bundle per network."""

from __future__ import annotations

import ast
import json
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from shared_components.bundle import scaffold
from shared_components.paths import REPO_ROOT, shipped_datalist
from shared_components.shipping import isolation, vendor
from shared_components.shipping.export import export_bundle, zoo_name
from tests.helpers import HIPPO

FAMILIES = sorted(p.stem for p in (scaffold.SPECS_DIR / "models").glob("*.yaml"))
DATASETS = sorted(p.stem for p in (scaffold.SPECS_DIR / "datasets").glob("*.yaml"))


def _bundle_of(model: str) -> Path | None:
    """One bundle of a network family, the hippocampus one when it exists (the smallest data)."""
    names = {b.name: b for b in scaffold.all_bundles()}
    for dataset in ["hippocampus_mri", *DATASETS]:
        if f"{dataset}_{model}" in names:
            return names[f"{dataset}_{model}"]
    return None


@pytest.fixture(scope="module")
def hippo_export(tmp_path_factory, bundles_dir):
    out = tmp_path_factory.mktemp("zoo")
    return export_bundle(bundles_dir / HIPPO, out, make_zip=True)


def test_zoo_name():
    assert zoo_name("hippocampus_mri_unet") == "hippocampus_mri_unet_segmentation"
    assert zoo_name("Spleen-CT seg") == "spleen_ct_seg_segmentation"
    assert zoo_name("spleen_ct_segmentation") == "spleen_ct_segmentation"


def test_vendor_copies_only_what_is_used_with_relative_imports(tmp_path):
    refs = {"training.prepare_network", "transforms.infer_transforms"}
    out = vendor.vendor(refs, tmp_path, bundle="x")
    files = {str(p.relative_to(tmp_path)) for p in out.files.values()}
    assert "scripts/training/presets.py" in files and "scripts/transforms/chains.py" in files
    assert "scripts/transforms/labels.py" in files  # imported by chains.py
    assert not any("/data/" in f or "/evaluation/" in f for f in files)  # not used: not copied
    for f in files:
        tree = ast.parse((tmp_path / f).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert not (node.module or "").startswith("shared_components"), f"{f}: {ast.unparse(node)}"
    assert "prepare_network" in (tmp_path / "scripts" / "training" / "__init__.py").read_text()


def test_isolated_environment_cannot_import_shared_components():
    assert "No module named 'shared_components'" in isolation.prove_isolated()


def test_export_refuses_untrained_and_existing(tmp_path, bundles_dir):
    fake = tmp_path / "b"
    shutil.copytree(bundles_dir / HIPPO, fake, ignore=shutil.ignore_patterns("models", "logs", "eval"))
    with pytest.raises(FileNotFoundError, match="--untrained"):
        export_bundle(fake, tmp_path / "out")
    (tmp_path / "out" / zoo_name("b")).mkdir(parents=True)
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_bundle(fake, tmp_path / "out", untrained=True)


@pytest.mark.slow
def test_hippocampus_export_passes_the_zoo_checks(hippo_export):
    r = hippo_export
    assert r.name == "hippocampus_mri_unet_segmentation" and r.path.name == r.name
    failed = isolation.failures(r.checks)
    assert not failed, "\n".join(map(str, failed))
    names = {c.check for c in r.checks if c.ok}
    expected = {"files", "version/changelog", "inference keys", "train keys", "inference properties"}
    expected |= {"verify_net_in_out", "ckpt_export", "models/model.ts vs eager", "models/model.onnx vs eager"}
    expected |= {"verify_metadata meta_schema_20220324.json", "verify_metadata meta_schema_20240725.json"}
    assert expected <= names
    assert r.torchscript and r.onnx and (r.path / "models" / "model.ts").is_file()
    # configs: self-contained, JSON with 4-space indent, zoo data location, the shipped split in the bundle
    for cfg in (r.path / "configs").glob("*.json"):
        text = cfg.read_text()
        assert "shared_components" not in text and str(REPO_ROOT) not in text, cfg
        assert text.startswith("{\n    "), cfg
    train = json.loads((r.path / "configs" / "train.json").read_text())
    assert "$import scripts" in train["imports"]
    assert train["dataset_dir"] == "/workspace/data/Task04_Hippocampus"
    assert json.loads((r.path / "configs" / "datalist.json").read_text()) == json.loads(
        Path(shipped_datalist("Task04_Hippocampus")).read_text()
    )
    for py in (r.path / "scripts").rglob("*.py"):  # (docstrings may still name where the code came from)
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, ast.ImportFrom | ast.Import | ast.Name):
                assert "shared_components" not in ast.unparse(node), f"{py}: {ast.unparse(node)}"
    meta = json.loads((r.path / "configs" / "metadata.json").read_text())
    assert {"pytorch-ignite", "nibabel"} <= set(meta["required_packages_version"])
    assert "## This Model Zoo bundle" in (r.path / "docs" / "README.md").read_text()
    with zipfile.ZipFile(r.zip) as zf:
        members = set(zf.namelist())
    for rel in ("configs/metadata.json", "configs/inference.json", "models/model.pt", "LICENSE", "docs/README.md"):
        assert f"{r.name}/{rel}" in members


@pytest.mark.slow
def test_broken_export_fails_the_zoo_checks(hippo_export, tmp_path):
    broken = tmp_path / hippo_export.name
    shutil.copytree(hippo_export.path, broken)
    (broken / "LICENSE").unlink()
    meta = json.loads((broken / "configs" / "metadata.json").read_text())
    meta["version"] = "9.9.9"  # not in the changelog
    meta["network_data_format"]["outputs"]["pred"]["num_channels"] = 5  # the network has 3
    (broken / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4))
    checks, _ = isolation.verify_export(broken)
    failed = {c.check for c in isolation.failures(checks)}
    assert {"files", "version/changelog", "verify_net_in_out"} <= failed


@pytest.mark.slow
def test_exported_copy_trains_evaluates_infers_without_shared_components(hippo_export, tmp_path, hippo_dir):
    datalist = isolation.smoke_datalist(hippo_export.path / "configs" / "datalist.json", tmp_path / "dl.json")
    images = sorted((hippo_dir / "imagesTr").glob("hippocampus_00[13].nii.gz"))
    res = isolation.smoke_run(hippo_export.path, tmp_path / "run", hippo_dir, datalist, images, {"batch_size": 2})
    log = res["log"].read_text()
    assert res["checkpoint"].is_file(), log[-2000:]
    assert list((tmp_path / "run" / "eval").glob("*.csv")), "evaluation wrote no metrics"
    assert len(res["predictions"]) == 2
    for img, pred in zip(images, res["predictions"], strict=True):
        src, out = nib.load(img), nib.load(pred)
        assert out.shape == src.shape and set(np.unique(np.asarray(out.dataobj)).tolist()) <= {0, 1, 2}
    assert "shared_components" not in log.replace("No module named 'shared_components'", "")


@pytest.mark.slow
@pytest.mark.parametrize("model", [m for m in FAMILIES if m != "unet"])
def test_export_one_bundle_per_network_family(model, tmp_path):
    bundle = _bundle_of(model)
    assert bundle is not None, f"no {model} bundle in bundles/"
    r = export_bundle(bundle, tmp_path, untrained=not (bundle / "models" / "model.pt").is_file())
    failed = isolation.failures(r.checks)
    assert not failed, "\n".join(map(str, failed))
    assert r.torchscript, r.exports.get("ts")  # scripted, or traced at the patch size when it does not script
    assert r.onnx, r.exports.get("onnx")  # every family exports to ONNX that onnxruntime runs like eager
