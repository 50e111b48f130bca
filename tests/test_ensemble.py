"""Cross-model ensembles (``segbundles ensemble``): several trained bundles' probabilities averaged, through the
first bundle's stock configs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shared_components.evaluation.ensemble import BundleEnsemble, bundle_parser, check_same_preprocessing
from shared_components.paths import REPO_ROOT
from tests.helpers import HIPPO


def test_members_must_share_preprocessing_and_classes(bundles_dir):
    check_same_preprocessing([bundles_dir / HIPPO, bundles_dir / "hippocampus_mri_segresnet"])
    with pytest.raises(ValueError, match="spleen_ct_unet cannot join an ensemble with hippocampus_mri_unet"):
        check_same_preprocessing([bundles_dir / HIPPO, bundles_dir / "spleen_ct_unet"])


@torch.no_grad()
def test_an_ensemble_of_one_model_twice_is_that_model(bundles_dir):
    bundle = bundles_dir / HIPPO
    ens = BundleEnsemble([bundle, bundle])
    net, inferer = ens.members[0]
    x = torch.randn(1, 1, 40, 56, 40, generator=torch.Generator().manual_seed(0))
    single = torch.softmax(inferer(x, net), 1)
    torch.testing.assert_close(torch.softmax(ens(x), 1), single, atol=1e-5, rtol=1e-4)
    assert ens.members[0][0] is not ens.members[1][0]  # each member its own network and weights
    assert bundle_parser(bundle)["bundle_root"] == str(bundle.resolve())


@torch.no_grad()
def test_members_are_built_with_the_overrides_their_weights_were_trained_with(bundles_dir, tmp_path):
    """A benchmark run trained with ``--overrides '{"network_def#init_filters": 16}'`` is ensembled with that width
    (its weights do not fit the bundle's own network); training-only settings are left out of inference."""
    bundle = bundles_dir / "hippocampus_mri_segresnet"
    wide = {"network_def#init_filters": 16, "augmentation_args#mode": "sample", "checkpoint": "final"}
    parser = bundle_parser(bundle, wide)
    assert parser["network_def"]["init_filters"] == 16 and "augmentation_args" not in parser
    assert "checkpoint" not in parser
    torch.save(parser.get_parsed_content("network_def").state_dict(), tmp_path / "wide.pt")
    with pytest.raises(RuntimeError, match="size mismatch"):  # the bundle's own width refuses these weights
        BundleEnsemble([bundle, bundle], checkpoints=[tmp_path / "wide.pt", None])
    ens = BundleEnsemble([bundle, bundle], checkpoints=[tmp_path / "wide.pt", None], overrides=[wide, None])
    assert ens.members[0][0].convInit.conv.out_channels == 16 and ens.members[1][0].convInit.conv.out_channels == 8
    with pytest.raises(ValueError, match="2 bundles but 2 checkpoints, 1 overrides"):
        BundleEnsemble([bundle, bundle], overrides=[wide])


def test_the_command_refuses_what_it_cannot_run(bundles_dir, tmp_path):
    from shared_components.experiments.ensemble import ensemble

    with pytest.raises(ValueError, match="at least two bundles"):
        ensemble(HIPPO, fold=0, out=str(tmp_path))
    with pytest.raises(ValueError, match="either --input_data"):
        ensemble(f"{HIPPO},{HIPPO}", out=str(tmp_path))
    untrained = tmp_path / "hippocampus_mri_segresnet"  # the bundle's configs without its shipped weights
    shutil.copytree(bundles_dir / "hippocampus_mri_segresnet" / "configs", untrained / "configs")
    with pytest.raises(FileNotFoundError, match="train hippocampus_mri_segresnet first"):
        ensemble(f"{HIPPO},{untrained}", fold=0, out=str(tmp_path / "out"))


@pytest.mark.slow
def test_ensemble_scores_a_fold_and_segments_images_through_the_stock_cli(hippo_dir, tmp_path):
    """On 3 real cases: the ensemble of the shipped UNet with itself scores exactly what the UNet scores, and
    segments new images."""
    cases = json.loads((REPO_ROOT / "shared_components" / "datalists" / "Task04_Hippocampus.json").read_text())
    few = {**cases, "training": [e for e in cases["training"] if e["fold"] == 0][:3], "dataset_dir": str(hippo_dir)}
    (tmp_path / "datalist.json").write_text(json.dumps(few))
    common = ["--datalist", str(tmp_path / "datalist.json"), "--dataset_dir", str(hippo_dir)]
    cmd = [sys.executable, "scripts/ensemble.py", f"{HIPPO},{HIPPO}", "--fold", "0", "--out", str(tmp_path / "e")]
    r = subprocess.run(cmd + common, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"evaluation tables: {tmp_path / 'e' / 'eval'}" in r.stdout
    cmd = [sys.executable, "scripts/evaluate.py", HIPPO, "--data", str(tmp_path / "datalist.json"), "--out"]
    r = subprocess.run([*cmd, str(tmp_path / "single")], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]

    def dice(folder: Path) -> float:
        return json.loads((folder / "metrics_summary.json").read_text())["summary"]["all"]["mean"]["dice"]["mean"]

    assert dice(tmp_path / "e" / "eval") == pytest.approx(dice(tmp_path / "single" / "eval"), abs=1e-6)
    images = tmp_path / "images"
    images.mkdir()
    for e in few["training"][:2]:
        (images / Path(e["image"]).name).symlink_to(hippo_dir / e["image"])
    cmd = [sys.executable, "scripts/ensemble.py", f"{HIPPO},{HIPPO}", "--input_data", str(images), "--out"]
    r = subprocess.run([*cmd, str(tmp_path / "p")], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list((tmp_path / "p" / "predictions").glob("*_seg.nii.gz"))) == 2
