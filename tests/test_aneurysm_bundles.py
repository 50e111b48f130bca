"""The aneurysm bundles on synthetic ADAM data: a segmentation bundle trains, evaluates (segmentation metrics with
volumetric similarity, the treated label ignored, and the FROC files) and infers; the RetinaNet detector does the same
through the stock ``python -m monai.bundle run`` CLI, passes ``check_properties``, exports, and shares one benchmark
leaderboard with a segmentation bundle; the scaffold leaves the hand-written detector alone."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import nibabel as nib
import pandas as pd
import pytest
import torch
import yaml
from monai.bundle import ConfigWorkflow

from shared_components.bundle import scaffold
from shared_components.bundle.layout import STANDALONE_BUNDLES
from shared_components.bundle.runner import EVALUATE, INFER, OUTPUT_KEYS, TRAIN, output_overrides, run_bundle
from shared_components.bundle.scaffold import BUNDLES_DIR, TEMPLATE_DIR
from shared_components.data.converters.adam import convert_adam
from shared_components.data.datalist import split
from shared_components.data.synthetic.mra import write_adam
from shared_components.evaluation import froc
from shared_components.evaluation.report import PER_CASE
from tests.helpers import (
    COARSE,
    DETECTOR,
    TINY_DETECTOR,
    SmokeData,
    bundle_with_values,
    cwd,
    first_image,
    one_epoch,
    run_workflow,
    smoke_overrides,
)

SEGMENTATION = sorted(p for p in BUNDLES_DIR.glob("aneurysm_mra_*") if p.name not in STANDALONE_BUNDLES)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def adam(tmp_path_factory: pytest.TempPathFactory) -> SmokeData:
    """Four synthetic ADAM cases in two folds (a treated aneurysm and a negative case among them)."""
    src = write_adam(tmp_path_factory.mktemp("adam_bundles") / "ADAM", n=4, seed=0, shape=(64, 64, 48))
    datalist = Path(convert_adam(src, src, folds=2, seed=0))
    return SmokeData(src, datalist, first_image(datalist, src), {"preprocessing_args#pixdim": COARSE})


def _check_froc(eval_dir: Path, data: SmokeData, fold: int = 0) -> dict[str, Any]:
    """The FROC files of an evaluation of fold ``fold``: every file, counts matching the datalist, numbers in range."""
    for name in (froc.SUMMARY, froc.CURVE, froc.PER_CASE, froc.CANDIDATES, froc.ANEURYSMS, froc.BY_SIZE, froc.PLOT):
        assert (eval_dir / name).is_file(), name
    datalist = json.loads(data.datalist.read_text())
    val = [e["subject"] for e in split(datalist, fold, "val")]
    expected = sum(not a["treated"] for c in val for a in datalist["aneurysms"][c])
    s = json.loads((eval_dir / froc.SUMMARY).read_text())
    assert s["scans"] == len(val) and s["aneurysms"] == expected
    assert 0.0 <= s["cpm"] <= 1.0 and [r["fp_per_scan"] for r in s["sensitivity"]] == list(froc.RATES)
    assert all(0.0 <= r["sensitivity"] <= 1.0 for r in s["sensitivity"])
    assert 0.0 <= s["all_candidates"]["sensitivity"] <= 1.0 and s["all_candidates"]["false_positives_per_scan"] >= 0
    per_case = pd.read_csv(eval_dir / froc.PER_CASE, dtype={"case": str})
    assert sorted(per_case["case"]) == sorted(val)
    return s


def _datalist_override(overrides: dict[str, Any]) -> dict[str, Any]:
    """Pass the datalist to the evaluation handler when the shared evaluate.yaml does not (yet) do it."""
    handlers = yaml.safe_load((TEMPLATE_DIR / "configs" / "evaluate.yaml").read_text())["validate#handlers"]
    i = next(k for k, h in enumerate(handlers) if h.get("_target_", "").endswith("SegmentationMetrics"))
    return overrides if "datalist" in handlers[i] else {**overrides, f"validate#handlers#{i}#datalist": "@datalist"}


def test_aneurysm_bundles_follow_their_specs():
    """Seven segmentation bundles, in sync, with the ADAM label handling; the detector is exempt from the scaffold."""
    assert [b.name for b in SEGMENTATION] == [f"aneurysm_mra_{m}" for m in scaffold.spec_names("model")]
    for bundle in SEGMENTATION:
        assert scaffold.check(bundle) == [], bundle.name
        header = yaml.safe_load(scaffold.split_standard((bundle / "configs" / "train.yaml").read_text())[0])
        assert header["preprocessing_args"]["label_map"] == {1: 1} and header["num_classes"] == 2
        assert header["augmentation_args"]["sampling"] == "label" and header["augmentation_args"]["pos_neg"] == [2, 1]
    assert "aneurysm_mra_retinanet" in STANDALONE_BUNDLES and scaffold.bundle_pair(DETECTOR) is None
    assert DETECTOR not in scaffold.all_bundles() and DETECTOR in scaffold.all_bundles(standalone=True)
    assert scaffold.expected_files(DETECTOR) == {} and scaffold.check(DETECTOR) == []
    assert scaffold.sync(DETECTOR) == []  # nothing of the hand-written detector is rewritten


def test_detector_inference_matches_training():
    """Inference builds the network, anchors, detector and preprocessing of training (MONAI Label reads them)."""
    train = yaml.safe_load((DETECTOR / "configs" / "train.yaml").read_text())
    infer = yaml.safe_load((DETECTOR / "configs" / "inference.yaml").read_text())
    keys = ("network_def", "feature_extractor", "anchor_generator", "detector", "preprocessing_args", "patch_size")
    keys += ("num_channels", "num_classes", "returned_layers", "size_divisible", "anchor_shapes", "val_patch_size")
    keys += ("backbone_depth", "fpn_channels", "score_thresh", "nms_thresh", "detections_per_img")
    assert {k: infer[k] for k in keys} == {k: train[k] for k in keys}
    assert [op for op in train["detector_ops"] if "set_atss" not in op and "hard_negative" not in op] == infer[
        "detector_ops"
    ]


def test_detector_takes_the_overrides_the_benchmark_passes(monkeypatch: pytest.MonkeyPatch):
    """The run-folder, resume, budget and evaluation overrides ``train_and_evaluate`` passes are ids of the detector's
    configs, as of every segmentation bundle; a typo is answered with the closest id (the search walks the whole
    config, the label map's integer keys included)."""
    from shared_components.workflow.invocation import load_config, unknown_overrides

    monkeypatch.chdir(DETECTOR)
    parser = load_config(list(EVALUATE))
    ids = [*OUTPUT_KEYS, "resume", "overwrite", "promote", "time_budget_minutes", "save_predictions", "progress"]
    ids += ["max_epochs", "val_interval", "seed", "fold", "selection_fold", "eval_checkpoint"]
    assert unknown_overrides(parser, ids) == []
    assert unknown_overrides(parser, ["resum"]) == ["unknown override --resum: did you mean --resume?"]


@pytest.mark.slow
def test_segmentation_bundle_train_evaluate_infer(adam: SmokeData, tmp_path: Path):
    bundle = BUNDLES_DIR / "aneurysm_mra_unet"
    ov = smoke_overrides("unet", adam, tmp_path)
    run_workflow(bundle, ["configs/train.yaml"], "train", ov)
    assert (tmp_path / "models" / "model.pt").is_file()
    run_workflow(bundle, ["configs/train.yaml", "configs/evaluate.yaml"], "train", _datalist_override(ov))
    per_case = pd.read_csv(tmp_path / "eval" / PER_CASE, dtype={"case": str})
    assert set(per_case["metric"]) == {"dice", "hd95", "msd", "nsd", "vs"}
    bounded = per_case[per_case["metric"].isin(["dice", "nsd", "vs"])]["value"]
    assert bounded.between(0.0, 1.0).all() and (per_case["value"] >= 0).all()
    _check_froc(tmp_path / "eval", adam)
    iov = {
        "dataset_dir": str(adam.dataset_dir),
        "num_workers": 0,
        "preprocessing_args#pixdim": COARSE,
        "patch_size": ov["patch_size"],
        **{k: v for k, v in ov.items() if k.startswith("network_def")},
        "input_data": adam.infer_input,
        "ckpt_path": str(tmp_path / "models" / "model.pt"),
        "output_dir": str(tmp_path / "pred"),
    }
    run_workflow(bundle, ["configs/inference.yaml"], "infer", iov)
    (pred,) = sorted((tmp_path / "pred").glob("*.nii.gz"))
    source = nib.load(adam.infer_input)
    assert nib.load(pred).shape == source.shape
    assert torch.allclose(torch.as_tensor(nib.load(pred).affine), torch.as_tensor(source.affine), atol=1e-3)


def _detector_overrides(data: SmokeData, out: Path) -> dict[str, Any]:
    """One epoch of the tiny detector, its run folder ``out`` (``models/``, ``logs/``, ``eval/``)."""
    return {**one_epoch(data.dataset_dir, data.datalist), **output_overrides(out), **TINY_DETECTOR}


@pytest.mark.slow
def test_detector_stock_cli_train_evaluate_infer(adam: SmokeData, tmp_path: Path):
    """Train one epoch into a run folder, evaluate (FROC files and the evaluation tables) and detect with
    ``python -m monai.bundle run``."""
    ov = _detector_overrides(adam, tmp_path)
    log = tmp_path / "cli.log"
    run_bundle(DETECTOR, TRAIN, ov, log_file=log)
    assert (tmp_path / "models" / "model.pt").is_file(), "the validation did not save the best weights"
    assert json.loads((tmp_path / "best_model.json").read_text())["metric_name"] == "froc_cpm"
    assert (tmp_path / "logs" / "history.csv").is_file() and (tmp_path / "train_state.pt").is_file()
    run_bundle(DETECTOR, EVALUATE, {**ov, "save_predictions": True}, log_file=log)
    _check_froc(tmp_path / "eval", adam)
    summary = json.loads((tmp_path / "eval" / "metrics_summary.json").read_text())
    assert summary["cases"] == 2 and summary["timing"]["inference_seconds_median"] > 0
    assert len(list((tmp_path / "eval" / "predictions").glob("*_detections.json"))) == 2
    keep = ("dataset_dir", "num_workers", "preprocessing_args#pixdim", "val_patch_size", "anchor_shapes")
    iov = {k: v for k, v in ov.items() if k in keep or k in ("backbone_depth", "fpn_channels")}
    iov |= {"input_data": adam.infer_input, "ckpt_path": str(tmp_path / "models" / "model.pt")}
    iov["output_dir"] = str(tmp_path / "pred")
    run_bundle(DETECTOR, INFER, iov, log_file=log)
    (found,) = sorted((tmp_path / "pred").glob("*_detections.json"))
    detections = json.loads(found.read_text())["detections"]
    assert detections and all(0.0 <= d["score"] <= 1.0 and len(d["box"]) == 6 for d in detections)
    shape = nib.load(adam.infer_input).shape
    assert all(-1 <= v <= n for d in detections for v, n in zip(d["center_voxel"], shape, strict=True))


@pytest.mark.slow
def test_detector_workflows_have_their_properties(adam: SmokeData, tmp_path: Path):
    ov = _detector_overrides(adam, tmp_path)
    with cwd(DETECTOR):
        for configs, kind, extra in (
            (["configs/train.yaml"], "train", ov),
            (["configs/train.yaml", "configs/evaluate.yaml"], "train", ov),
            (["configs/inference.yaml"], "infer", {"input_data": adam.infer_input, "dataset_dir": ov["dataset_dir"]}),
        ):
            w = ConfigWorkflow(config_file=configs, workflow_type=kind, meta_file="configs/metadata.json", **extra)
            w.initialize()
            assert w.check_properties() == [], configs


@pytest.mark.slow
def test_detector_exports(tmp_path: Path):
    """The export vendors what the detector's configs use (the torchvision-free feature pyramid, the box transforms,
    the FROC handler), is named for its task, and passes the zoo's checks; ``verify_net_in_out`` does not apply to a
    detector (its output is an object: the zoo's CI skips it for its own detection bundle)."""
    from shared_components.shipping.export import export_bundle

    result = export_bundle(DETECTOR, tmp_path, untrained=True, onnx=False)
    assert result.path.name == "aneurysm_mra_retinanet_detection"
    vendored = set(result.vendored)
    for rel in ("scripts/networks/detection.py", "scripts/transforms/boxes.py", "scripts/evaluation/froc.py"):
        assert rel in vendored, sorted(vendored)
    failed = [str(c) for c in result.checks if not c.ok and c.level == "error"]
    assert not failed, failed
    assert any(c.check == "verify_net_in_out" and "not applicable" in str(c) for c in result.checks)
    assert json.loads((result.path / "configs" / "inference.json").read_text())["detector"]


@pytest.mark.slow
def test_benchmark_ranks_segmentation_and_detector(adam: SmokeData, tmp_path: Path):
    """``benchmark.py run`` drives the detector as it drives a segmentation bundle (run folder and its state, history,
    CPM as the key metric, evaluation tables, the stock inference timed) and writes one leaderboard: CPM and
    sensitivity at 1 FP/scan with CIs for both, Dice and rank for the segmentation model only."""
    from shared_components.experiments.benchmark import run_benchmark

    small = {k: TINY_DETECTOR[k] for k in ("val_patch_size", "anchor_shapes", "backbone_depth", "fpn_channels")}
    detector = bundle_with_values(DETECTOR, tmp_path / "aneurysm_mra_retinanet", small)
    unet = bundle_with_values(BUNDLES_DIR / "aneurysm_mra_unet", tmp_path / "aneurysm_mra_unet", {})
    common = {
        "preprocessing_args#pixdim": COARSE,
        "patch_size": [32, 32, 32],
        "batch_size": 1,
        "augmentation_args#num_samples": 1,
        "num_workers": 0,
        "cache": "none",
        "check_data": "quick",
    }
    results = run_benchmark(
        f"{unet},{detector}",
        folds="0",
        max_epochs=1,
        val_interval=1,
        dataset_dir=str(adam.dataset_dir),
        datalist=str(adam.datalist),
        overrides=common,
        out=str(tmp_path / "results"),
        infer_cases=1,
    )
    assert results.name == "aneurysm_mra"
    t = pd.read_csv(results / "leaderboard.csv").set_index("model")
    assert sorted(t.index) == ["retinanet", "unet"] and set(t["status"]) == {"done"}, t.get("failed")
    for model in ("unet", "retinanet"):
        for key in ("froc_cpm", "froc_sensitivity_1fp"):
            low, value, high = (float(t.loc[model, k]) for k in (f"{key}_ci_low", key, f"{key}_ci_high"))
            assert 0.0 <= low <= value + 1e-9 and value <= high + 1e-9 and high <= 1.0, (model, key)
        assert t.loc[model, "epochs"] == 1 and t.loc[model, "cli_seconds_per_volume"] > 0, model
        assert t.loc[model, "inference_seconds_per_volume"] > 0 and t.loc[model, "cases"] == 2, model
    assert t.loc["unet", "rank"] == 1 and 0.0 <= t.loc["unet", "dice_mean"] <= 1.0
    assert math.isnan(t.loc["retinanet", "rank"]) and math.isnan(t.loc["retinanet", "dice_mean"])
    md = (results / "leaderboard.md").read_text()
    table = md.split("## Detection")[1].split("\n## ")[0]
    assert all(re.search(rf"^\| {m} \| \d\.\d{{3}} \[", table, re.M) for m in ("unet", "retinanet")), table
    # the detector's run folder is the template's: state, best weights picked by CPM, history, evaluation tables
    run = results / "runs" / "aneurysm_mra_retinanet" / "fold_0"
    assert json.loads((run / "train_state.json").read_text())["status"] == "finished"
    assert json.loads((run / "best_model.json").read_text())["metric_name"] == "froc_cpm"
    assert "froc_cpm" in pd.read_csv(run / "logs" / "history.csv").columns
    per_case = pd.read_csv(run / "eval" / PER_CASE, dtype={"case": str})
    assert set(per_case["metric"]) == {"sensitivity", "false_positives"} and per_case["value"].ge(0).all()
    assert sorted((run / "predictions").glob("*_detections.json"))  # the timed stock inference
