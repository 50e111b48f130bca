"""Every model on every dataset: each bundle of the matrix is complete, valid for the Model Zoo, and trains,
evaluates and infers end to end (one epoch, in-process through ``monai.bundle.ConfigWorkflow``) on tiny data in its
dataset's official layout: synthetic phantoms from ``shared_components.data`` through the dataset's converter, real
data for hippocampus (here) and for BraTS 2015 and the abdominal CT (slow tests)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import nibabel as nib
import pandas as pd
import pytest
import torch
import yaml
from monai.bundle import ConfigParser, verify_metadata, verify_net_in_out

from shared_components.bundle import scaffold
from shared_components.bundle.layout import STANDALONE_BUNDLES
from shared_components.bundle.runner import EVALUATE, INFER, TRAIN, run_bundle
from shared_components.bundle.scaffold import BUNDLES_DIR
from shared_components.data.datalist import split
from shared_components.evaluation.metrics import METRICS
from shared_components.evaluation.report import CASES, MEAN_CLASS, PER_CASE, PER_CASE_COLUMNS, SUMMARY_CSV, SUMMARY_JSON
from shared_components.paths import named_schema
from tests.helpers import (
    BUNDLE_FILES,
    HIPPO,
    TINY,
    SmokeData,
    cwd,
    first_image,
    run_workflow,
    smoke_overrides,
    tiny_overrides,
    tiny_patch,
)

BUNDLES = scaffold.all_bundles()
DATASETS = scaffold.spec_names("dataset")
MODELS = scaffold.spec_names("model")
# verify_metadata(filepath=<schema>) warns "No hash value provided for <schema>" when it reads a schema without a
# hash: these are the repository's own copies (shared/schemas), read from disk, never downloaded
LOCAL_SCHEMAS = pytest.mark.filterwarnings("ignore:No hash value provided for .*meta_schema_.*json:UserWarning")
TOP_LEVEL_OVERRIDES = (
    "amp",
    "seed",
    "fold",
    "max_epochs",
    "dataset_dir",
    "datalist",
    "loss_name",
    "optimizer_name",
    "scheduler_name",
    "learning_rate",
)
BOUNDED_METRICS = ("dice", "nsd", "vs")  # in [0, 1]; the surface distances are finite millimetres >= 0


pytestmark = pytest.mark.usefixtures("one_thread")


def split_name(bundle: str) -> tuple[str, str]:
    """``abdomen_ct_swin_unetr`` -> ``('abdomen_ct', 'swin_unetr')`` (longest matching dataset spec)."""
    for ds in sorted(DATASETS, key=len, reverse=True):
        if bundle.startswith(ds + "_") and bundle[len(ds) + 1 :] in MODELS:
            return ds, bundle[len(ds) + 1 :]
    raise ValueError(f"{bundle} is not named <dataset>_<model> after the specs")


def header(bundle: Path) -> dict[str, Any]:
    head, _ = scaffold.split_standard((bundle / "configs" / "train.yaml").read_text())
    return yaml.safe_load(head)


# ---- what a run writes -------------------------------------------------------------------------------------------


def check_evaluation(bundle: Path, data: SmokeData, eval_dir: Path) -> None:
    """The evaluation files of one run: a per-case row for each validation case, evaluated class and metric, with
    Dice and NSD in [0, 1] and the distances finite and >= 0; summaries over exactly those cases and classes."""
    config = header(bundle)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    channel_def = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    classes = [channel_def[str(c)] for c in range(0 if config["multilabel"] else 1, config["num_classes"])]
    content = json.loads(data.datalist.read_text())
    metrics = (*METRICS, *(content.get("evaluation") or {}).get("metrics", []))  # e.g. ADAM's volumetric similarity
    val = split(content, config["fold"], "val")
    cases = sorted((e["subject"], str(e["fold"]), e.get("center", "")) for e in val)
    assert cases, f"{bundle.name}: the smoke datalist has no validation case"
    written = sorted(p.name for p in eval_dir.iterdir())
    assert {PER_CASE, SUMMARY_CSV, SUMMARY_JSON, CASES} <= set(written), f"evaluation files missing: {written}"

    per_case = pd.read_csv(eval_dir / PER_CASE, dtype=str, keep_default_na=False)
    assert list(per_case.columns) == PER_CASE_COLUMNS
    values = pd.to_numeric(per_case["value"])  # raises on anything but numbers
    assert values.map(math.isfinite).all(), per_case[~values.map(math.isfinite)]
    rows = sorted(zip(*(per_case[c] for c in ("case", "fold", "centre", "class", "metric")), strict=True))
    assert rows == sorted((*c, cls, m) for c in cases for cls in classes for m in metrics), "per-case rows"
    bounded = per_case["metric"].isin(BOUNDED_METRICS)
    assert values[bounded].between(0.0, 1.0).all(), per_case[bounded]
    assert (values[~bounded] >= 0).all(), per_case[~bounded]
    assert sorted(pd.read_csv(eval_dir / CASES, dtype=str)["case"]) == [c[0] for c in cases]

    summary = pd.read_csv(eval_dir / SUMMARY_CSV, dtype={"group": str, "class": str, "metric": str})
    overall = summary[summary["group"] == "all"]
    assert sorted(zip(overall["class"], overall["metric"], strict=True)) == sorted(
        (cls, m) for cls in [*classes, MEAN_CLASS] for m in metrics
    )
    assert (overall["n"] == len(cases)).all()
    dice = overall[overall["metric"] == "dice"].set_index("class")["mean"]
    is_dice = per_case["metric"] == "dice"
    for cls in classes:
        assert dice[cls] == pytest.approx(values[is_dice & (per_case["class"] == cls)].mean(), abs=1e-5), cls
    assert dice.between(0.0, 1.0).all(), dice

    report = json.loads((eval_dir / SUMMARY_JSON).read_text())
    assert report["cases"] == len(cases) and report["classes"] == classes
    assert report["summary"]["all"][MEAN_CLASS]["dice"]["mean"] == pytest.approx(dice[MEAN_CLASS], abs=1e-5)


# ---- in-process workflows --------------------------------------------------------------------------------------


def train_evaluate_infer(bundle: Path, data: SmokeData, out: Path, extra: dict[str, Any] | None = None) -> Path:
    """Train one epoch, evaluate the checkpoint, infer one image; returns the prediction file."""
    _, model = split_name(bundle.name)
    ov = {**smoke_overrides(model, data, out), **(extra or {})}
    trained = run_workflow(bundle, ["configs/train.yaml"], "train", ov)
    assert trained.parser.get_parsed_content("train#trainer").state.epoch == 1
    assert (out / "models" / "model.pt").is_file(), "the validation checkpoint was not saved"
    history = (out / "logs" / "history.csv").read_text()
    assert "val_mean_dice" in history.splitlines()[0]

    run_workflow(bundle, ["configs/train.yaml", "configs/evaluate.yaml"], "train", ov)
    check_evaluation(bundle, data, out / "eval")

    infer_keys = ("dataset_dir", "num_workers", "patch_size", "preprocessing_args#pixdim", "num_channels")
    iov = {k: v for k, v in ov.items() if k in infer_keys or k.startswith("network_def")}
    iov |= {
        "input_data": data.infer_input if isinstance(data.infer_input, str) else [data.infer_input],
        "ckpt_path": str(out / "models" / "model.pt"),
        "output_dir": str(out / "pred"),
    }
    run_workflow(bundle, ["configs/inference.yaml"], "infer", iov)
    preds = sorted((out / "pred").glob("*.nii.gz"))
    assert len(preds) == 1, f"expected one prediction, got {preds}"
    first = data.infer_input if isinstance(data.infer_input, str) else data.infer_input[0]
    source, pred = nib.load(first), nib.load(preds[0])
    assert pred.shape[:3] == source.shape[:3], "the prediction is not in the input's original geometry"
    assert torch.allclose(torch.as_tensor(pred.affine), torch.as_tensor(source.affine), atol=1e-3)
    return preds[0]


# ---- tests -----------------------------------------------------------------------------------------------------


def test_matrix_is_complete():
    """``bundles/`` holds exactly one folder per dataset spec x model spec, each with every file of a bundle."""
    assert len(DATASETS) >= 6 and len(MODELS) >= 7, (DATASETS, MODELS)
    expected = {f"{d}_{m}" for d in DATASETS for m in MODELS}
    folders = {p.name for p in BUNDLES_DIR.iterdir() if p.is_dir() and not p.name.startswith(".")}
    standalone = set(STANDALONE_BUNDLES)  # hand-written bundles outside the template (e.g. the detector)
    assert folders - expected - standalone == set(), "folders in bundles/ that no dataset x model spec pair names"
    assert expected - folders == set(), "bundles missing from the matrix (create them with scripts/new_bundle.py)"
    assert [b.name for b in BUNDLES] == sorted(expected)
    missing = {b: rel for b in sorted(expected) for rel in BUNDLE_FILES if not (BUNDLES_DIR / b / rel).is_file()}
    assert not missing, f"bundle files missing: {missing}"


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_bundle_files_header_and_docs(bundle: Path):
    """Every bundle file, non-empty; the top-level overrides in the train.yaml header; a patch the network
    accepts; and, without shipped weights, docs and metadata that say so."""
    for rel in BUNDLE_FILES:
        assert (bundle / rel).is_file() and (bundle / rel).stat().st_size > 0, f"{bundle.name}: {rel} missing"
    config = header(bundle)
    missing = [k for k in TOP_LEVEL_OVERRIDES if k not in config]
    assert not missing, f"{bundle.name}: top-level overrides missing from the train.yaml header: {missing}"
    dataset, model = split_name(bundle.name)
    _, md = scaffold.pair_specs(dataset, model)
    assert all(p % md["patch_multiple"] == 0 for p in config["patch_size"]), "patch not divisible for the network"
    readme = (bundle / "docs" / "README.md").read_text()
    mode = config.get("augmentation_args", {}).get("mode", "sample")
    assert f"(`augmentation_args#mode` `{mode}`" in readme, "the model card does not say where augmentation runs"
    metrics = json.loads((bundle / "configs" / "metadata.json").read_text())["eval_metrics"]
    if not (bundle / "models" / "model.pt").exists():
        assert "No trained weights are shipped" in readme
        assert metrics == {}
    else:  # shipped weights come with their own measured numbers, in the card as in the metadata
        assert "No trained weights are shipped" not in readme and "mean_dice" in metrics
        assert f"{metrics['mean_dice']:.4f}" in readme, "the card does not give the metadata's mean Dice"


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
@LOCAL_SCHEMAS
def test_metadata_valid_and_matches_header(bundle: Path):
    """The metadata passes the schema it names, has the zoo's keys (not the deprecated one MONAI warns about on every
    run), and its input/output formats match the train.yaml header."""
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(named_schema(meta)))  # raises
    for key in ("changelog", "eval_metrics", "required_packages_version", "supported_apps"):
        assert key in meta, key
    assert "optional_packages_version" not in meta
    config = header(bundle)
    image, pred = meta["network_data_format"]["inputs"]["image"], meta["network_data_format"]["outputs"]["pred"]
    assert image["num_channels"] == config["num_channels"] == len(image["channel_def"])
    assert pred["num_channels"] == config["num_classes"] == len(pred["channel_def"])
    assert image["spatial_shape"] == config["patch_size"]


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_verify_net_in_out(bundle: Path):
    """MONAI's ``verify_net_in_out`` on the metadata's input (a tiny network of the same kind), plus the output
    keeping the input's spatial shape and the network giving one tensor in eval mode."""
    _, model = split_name(bundle.name)
    with cwd(bundle):
        verify_net_in_out(
            net_id="network_def",
            meta_file="configs/metadata.json",
            config_file="configs/inference.yaml",
            device="cpu",
            **TINY[model],
        )
        parser = ConfigParser()
        parser.read_config("configs/inference.yaml")
        for k, v in tiny_overrides(model).items():
            parser[k] = v
        net = parser.get_parsed_content("network_def").eval()
    x = torch.rand(1, header(bundle)["num_channels"], *tiny_patch(model))
    with torch.no_grad():
        y = net(x)
    assert isinstance(y, torch.Tensor) and y.shape == (1, header(bundle)["num_classes"], *x.shape[2:])


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_train_evaluate_infer(bundle: Path, smoke_data, tmp_path: Path):
    dataset, _ = split_name(bundle.name)
    train_evaluate_infer(bundle, smoke_data(dataset), tmp_path)


@pytest.mark.parametrize("bundle", [b for b in BUNDLES if b.name.startswith("hippocampus_mri_")], ids=lambda p: p.name)
def test_verify_net_in_out_full_size_hippocampus(bundle: Path):
    """The CPU-sized hippocampus networks exactly as shipped, on the metadata's input shape."""
    with cwd(bundle):
        verify_net_in_out(
            net_id="network_def", meta_file="configs/metadata.json", config_file="configs/inference.yaml", device="cpu"
        )


@pytest.mark.slow
def test_verify_net_in_out_stock_cli(bundles_dir: Path):
    """``python -m monai.bundle verify_net_in_out`` passes on a shipped-size bundle (the hippocampus MedFormer)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def", "--meta_file"]
    cmd += ["configs/metadata.json", "--config_file", "configs/inference.yaml", "--device", "cpu"]
    r = subprocess.run(cmd, cwd=bundles_dir / "hippocampus_mri_medformer", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "data shape of network is verified with no error" in r.stdout + r.stderr


# ---- real data through the stock CLI -----------------------------------------------------------------------------


def _cli_train_evaluate_infer(bundle: Path, data: SmokeData, out: Path, extra: dict[str, Any]) -> Path:
    """As :func:`train_evaluate_infer`, through ``python -m monai.bundle run`` in subprocesses."""
    _, model = split_name(bundle.name)
    ov = {**smoke_overrides(model, data, out), **extra}
    log = out / "cli.log"
    run_bundle(bundle, TRAIN, ov, log_file=log)
    assert (out / "models" / "model.pt").is_file()
    run_bundle(bundle, EVALUATE, ov, log_file=log)
    check_evaluation(bundle, data, out / "eval")
    keep = ("dataset_dir", "num_workers", "patch_size", "num_channels", "preprocessing_args#pixdim")
    iov = {k: v for k, v in ov.items() if k in keep or k.startswith(("network_def", "preprocessing_args#label_map"))}
    iov |= {
        "input_data": data.infer_input if isinstance(data.infer_input, str) else [data.infer_input],  # one case
        "ckpt_path": str(out / "models" / "model.pt"),
        "output_dir": str(out / "pred"),
    }
    run_bundle(bundle, INFER, iov, log_file=log)
    preds = sorted((out / "pred").glob("*.nii.gz"))
    assert len(preds) == 1, preds
    first = data.infer_input if isinstance(data.infer_input, str) else data.infer_input[0]
    assert nib.load(preds[0]).shape[:3] == nib.load(first).shape[:3]
    return preds[0]


@pytest.mark.slow
def test_brats2015_two_channel_real_data(data_dir: Path, tmp_path: Path):
    """Two real BraTS 2015 cases (FLAIR, T1-Gd) through the four-channel BraTS bundle with `--num_channels 2`."""
    from shared_components.data.converters.brats import convert_brats

    src = data_dir / "brats2015_examples"
    full = json.loads(Path(convert_brats(src, tmp_path / "full", folds=2, seed=0)).read_text())
    cases = [next(e for e in full["training"] if e["fold"] == f) for f in (0, 1)]
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": cases, "test": []}, indent=4))
    data = SmokeData(src, datalist, first_image(datalist, src), {"preprocessing_args#pixdim": [3.0, 3.0, 3.0]})
    pred = _cli_train_evaluate_infer(BUNDLES_DIR / "brats_mri_medformer", data, tmp_path, {"num_channels": 2})
    values = set(torch.unique(torch.as_tensor(nib.load(pred).get_fdata())).int().tolist())
    assert values <= {0, 1, 2, 4}, f"regions must paint back BraTS labels, got {values}"


@pytest.mark.slow
def test_real_abdominal_ct_with_label_map(data_dir: Path, tmp_path: Path):
    """The real abdominal CT (117 TotalSegmentator classes) through the AbdomenCT-1K bundle, its organs mapped to
    the bundle's classes by `preprocessing_args#label_map`. The one scan both trains and validates, so the
    datalist check (which flags that) is off; checks are tested with the converters."""
    src = data_dir / "abdomen_ct_example"
    names = {v: int(k) for k, v in json.loads((src / "label_map.json").read_text())["total"].items()}
    organs = {"liver": 1, "kidney_right": 2, "kidney_left": 2, "spleen": 3, "pancreas": 4}
    label_map = {names[n]: c for n, c in organs.items()}
    case = {"image": "ct.nii.gz", "label": "labels_total.nii.gz", "subject": "abdomen_ct_example"}
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [{**case, "fold": 0}, {**case, "fold": 1}], "test": []}, indent=4))
    data = SmokeData(src, datalist, str(src / "ct.nii.gz"), {"check_data": "off"})
    extra = {"preprocessing_args#label_map": label_map, "preprocessing_args#pixdim": [3.0, 3.0, 3.0]}
    pred = _cli_train_evaluate_infer(BUNDLES_DIR / "abdomen_ct_dynunet", data, tmp_path, extra)
    assert nib.load(pred).affine == pytest.approx(nib.load(src / "ct.nii.gz").affine, abs=1e-3)


# ---- the scaffold ------------------------------------------------------------------------------------------------


def test_scaffold_reproduces_the_reference_bundle_header():
    """The hand-tuned, trained hippocampus UNet bundle is exactly what its two specs generate."""
    text = (BUNDLES_DIR / HIPPO / "configs" / "train.yaml").read_text()
    assert scaffold.split_standard(text)[0] == scaffold.train_header("hippocampus_mri", "unet")


@LOCAL_SCHEMAS
def test_create_makes_a_complete_valid_bundle(tmp_path: Path):
    bundle = scaffold.create("spleen_ct", "segresnet", root=tmp_path)
    assert scaffold.check(bundle) == []
    test_bundle_files_header_and_docs(bundle)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(named_schema(meta)))
    config = header(bundle)
    assert config["preprocessing_args"]["intensity"] == {"kind": "ct", "a_min": -57, "a_max": 164}
    assert config["network_def"]["_target_"] == "SegResNet"
    with pytest.raises(FileExistsError, match="overwrite"):
        scaffold.create("spleen_ct", "segresnet", root=tmp_path)
    (bundle / "models" / "model.pt").write_bytes(b"weights")
    with pytest.raises(FileExistsError, match="trained weights"):
        scaffold.create("spleen_ct", "segresnet", root=tmp_path, overwrite=True)


def test_a_card_that_disagrees_with_its_configs_is_stale_and_sync_rewrites_it(tmp_path: Path):
    """A patch-size change in the specs makes the card's window and export shape stale (the traced SwinUNETR then
    accepts no sliding-window input): check lists the card, sync rewrites it and keeps the shipped Performance."""
    import shutil

    bundle = tmp_path / "hippocampus_mri_segresnet"
    shutil.copytree(BUNDLES_DIR / bundle.name / "configs", bundle / "configs")
    shutil.copytree(BUNDLES_DIR / bundle.name / "docs", bundle / "docs")
    shutil.copy(BUNDLES_DIR / bundle.name / "LICENSE", bundle / "LICENSE")
    (bundle / "models").mkdir()
    (bundle / "models" / "model.pt").write_bytes(b"weights")
    card = bundle / "docs" / "README.md"
    good = card.read_text()
    patch = "x".join(str(v) for v in header(bundle)["patch_size"])
    assert scaffold.check(bundle) == [] and f"window of {patch} voxels" in good
    card.write_text(good.replace(f"window of {patch} voxels", "window of 64x64x64 voxels"))
    assert scaffold.check(bundle) == [str(card)]
    assert scaffold.sync(bundle) == [str(card)]
    assert card.read_text() == good and scaffold.check(bundle) == []


def test_model_specs_fit_the_patch_to_the_network():
    assert header(BUNDLES_DIR / "hippocampus_mri_unetr")["patch_size"] == [48, 64, 48]  # 40x56x40 up to x16
    assert header(BUNDLES_DIR / "brats_mri_swin_unetr")["patch_size"] == [128, 128, 128]  # 128 is a multiple of 32
    # a declared per-bundle override (bundles.swin_unetr of the hippocampus spec) is still fitted: 32x64x32 stays
    assert header(BUNDLES_DIR / "hippocampus_mri_swin_unetr")["patch_size"] == [32, 64, 32]
    assert scaffold.fit_patch([40, 56, 40], 32) == [64, 64, 64]


def test_model_specs_merge_over_dataset_specs_at_the_dataset_size():
    augmentation = header(BUNDLES_DIR / "abdomen_ct_dynunet")["augmentation_args"]
    assert augmentation["augmentation"] == "strong" and augmentation["flip_axes"] == [1, 2]  # model merged over data
    small = header(BUNDLES_DIR / "hippocampus_mri_dynunet")  # CPU-sized variant
    assert small["network_def"]["base_filters"] == 16 and small["optimizer_name"] == "adamw"


def test_unknown_model_spec_names_the_known_ones():
    with pytest.raises(ValueError, match="known models: attention_unet, dynunet"):
        scaffold.load_spec("model", "vnet")


def test_new_bundle_cli_rejects_an_unknown_model():
    """``new_bundle.py create`` with an unknown model exits 2 with a message, not a traceback."""
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "scripts/new_bundle.py", "create", "spleen_ct", "vnet"],
        cwd=scaffold.REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "Unknown model 'vnet'" in r.stderr and "Traceback" not in r.stderr


TRAINED = [b for b in BUNDLES if (b / "models" / "model.pt").is_file()]


@pytest.mark.parametrize("bundle", TRAINED, ids=lambda p: p.name)
def test_shipped_weights_fit_the_bundles_network(bundle: Path):
    """Every shipped models/model.pt loads strictly into the network its inference.yaml builds (no stale weights of
    another architecture or width)."""
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.yaml"))
    parser["bundle_root"] = str(bundle)
    network = parser.get_parsed_content("network_def")
    state = torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
    network.load_state_dict(state, strict=True)
