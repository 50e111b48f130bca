"""Every model on every dataset: each bundle of the matrix is complete, valid for the Model Zoo, and trains,
evaluates and infers end to end (one epoch, in-process through ``monai.bundle.ConfigWorkflow``) on tiny data in its
dataset's official layout: synthetic phantoms from ``shared_components.data`` through the dataset's converter, real
data for hippocampus (here) and for BraTS 2015 and the abdominal CT (slow tests)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import pytest
import torch
import yaml
from monai.bundle import ConfigWorkflow, verify_metadata, verify_net_in_out

from shared_components.bundle import scaffold
from shared_components.bundle.runner import EVALUATE, INFER, TRAIN, output_overrides, run_bundle
from shared_components.bundle.scaffold import BUNDLES_DIR
from shared_components.paths import schemas_dir

BUNDLES = scaffold.all_bundles()
DATASETS = scaffold.spec_names("dataset")
MODELS = scaffold.spec_names("model")
SCHEMAS = sorted(schemas_dir().glob("meta_schema_*.json"))
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
# tiny versions of each network, so a CPU runs every bundle in seconds; `patch_size` is what each accepts
TINY: dict[str, dict[str, Any]] = {
    "unet": {"network_def#channels": [8, 16, 32], "network_def#strides": [2, 2], "network_def#num_res_units": 1},
    "dynunet": {"network_def#base_filters": 8, "network_def#max_filters": 32},
    "attention_unet": {"network_def#channels": [8, 16, 32], "network_def#strides": [2, 2]},
    "unetr": {
        "network_def#feature_size": 8,
        "network_def#hidden_size": 96,
        "network_def#mlp_dim": 192,
        "network_def#num_heads": 4,
    },
    "swin_unetr": {"network_def#feature_size": 12, "network_def#depths": [1, 1, 1, 1], "network_def#window_size": 4},
    "segresnet": {"network_def#init_filters": 8, "network_def#blocks_down": [1, 1, 1], "network_def#blocks_up": [1, 1]},
    "medformer": {
        "network_def#channels": [8, 16, 32, 64],
        "network_def#encoder_blocks": [1, 1, 1, 1],
        "network_def#decoder_blocks": [1, 1, 1],
        "network_def#heads": [1, 2, 2, 4],
        "network_def#map_size": [2, 2, 2],
    },
}
# SwinUNETR's instance norm needs more than one voxel at 1/32 resolution
TINY_PATCH = {"swin_unetr": [64, 64, 64]}


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


def tiny_overrides(model: str) -> dict[str, Any]:
    return {"patch_size": TINY_PATCH.get(model, [32, 32, 32]), **TINY[model]}


# ---- tiny data in each dataset's layout ------------------------------------------------------------------------


@dataclass
class SmokeData:
    """A dataset folder, its datalist (fold 0 validates, the other cases train) and an image to infer on."""

    dataset_dir: Path
    datalist: Path
    infer_input: str | list[str]
    overrides: dict[str, Any] = field(default_factory=dict)


def _first_image(datalist: Path, dataset_dir: Path) -> str | list[str]:
    entry = json.loads(datalist.read_text())["training"][0]["image"]
    files = [entry] if isinstance(entry, str) else entry
    paths = [str(dataset_dir / f) if not os.path.isabs(f) else f for f in files]
    return paths[0] if isinstance(entry, str) else paths


def hippocampus_smoke_data(root: Path, real: Path) -> SmokeData:
    from shared_components.data.converters.msd import msd_datalist

    cases = msd_datalist(real, folds=5, seed=0)["training"][:2]
    for i, e in enumerate(cases):
        e["fold"] = i
    path = root / "datalist.json"
    path.write_text(json.dumps({"training": cases, "test": []}, indent=4))
    return SmokeData(real, path, _first_image(path, real))


def _synthetic(dataset: str, root: Path) -> SmokeData:
    """Two labelled cases written in the official layout by the dataset's writer, converted by its converter."""
    from shared_components.data.converters import abdomenct1k, brats, folders, lits, msd
    from shared_components.data.synthetic import ct as synthetic_ct
    from shared_components.data.synthetic import mri as synthetic_mri

    src = root / dataset
    coarse = {"preprocessing_args#pixdim": [6.0, 6.0, 6.0]}  # the CT phantoms span a whole abdomen
    if dataset == "spleen_ct":
        synthetic_ct.write_msd_spleen(src, n_train=2, n_test=0, seed=1)
        datalist = msd.convert_msd(src, src, folds=2, seed=0)
    elif dataset == "liver_ct":
        synthetic_ct.write_lits(src, n=2, seed=2)
        datalist = lits.convert_lits(src, src, folds=2, seed=0)
    elif dataset == "abdomen_ct":
        synthetic_ct.write_abdomenct1k(src, n=2, seed=3)
        datalist = abdomenct1k.convert_abdomenct1k(src, src, folds=2, seed=0)
    elif dataset == "brats_mri":
        synthetic_mri.write_brats(src, n=2, seed=4)
        datalist = brats.convert_brats(src, src, folds=2, seed=0)
        coarse = {"preprocessing_args#pixdim": [2.0, 2.0, 2.0]}
    elif dataset == "amygdala_mri":
        synthetic_mri.write_amygdala_folders(src, centres=("centre_a", "centre_b"), n_per_centre=1, seed=5)
        datalist = folders.convert_folder(src, src, folds=2, seed=0)
        coarse = {"preprocessing_args#pixdim": [2.0, 2.0, 2.0]}
    else:
        raise KeyError(f"no synthetic smoke data for dataset {dataset!r}: add it to tests/test_bundle_matrix.py")
    datalist = Path(datalist)
    return SmokeData(src, datalist, _first_image(datalist, src), coarse)


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory: pytest.TempPathFactory, hippo_dir: Path) -> Callable[[str], SmokeData]:
    """``smoke_data(dataset)``: tiny data for a dataset, written once per session (and per xdist worker)."""
    cache: dict[str, SmokeData] = {}

    def get(dataset: str) -> SmokeData:
        if dataset not in cache:
            root = tmp_path_factory.mktemp(f"smoke_{dataset}")
            cache[dataset] = (
                hippocampus_smoke_data(root, hippo_dir) if dataset == "hippocampus_mri" else _synthetic(dataset, root)
            )
        return cache[dataset]

    return get


# ---- in-process workflows --------------------------------------------------------------------------------------


@contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_workflow(bundle: Path, configs: list[str], workflow_type: str, overrides: dict[str, Any]) -> ConfigWorkflow:
    """Run a bundle workflow in this process from the bundle folder, asserting ``check_properties()`` is empty."""
    with _cwd(bundle):
        w = ConfigWorkflow(config_file=configs, workflow_type=workflow_type, **overrides)
        w.initialize()
        assert w.check_properties() == [], f"{bundle.name} {configs}: missing or mis-wired properties"
        w.run()
        w.finalize()
    return w


def smoke_overrides(model: str, data: SmokeData, out: Path) -> dict[str, Any]:
    """One epoch of one iteration-sized batch, validation after it, outputs under ``out``."""
    return {
        "dataset_dir": str(data.dataset_dir),
        "datalist": str(data.datalist),
        "max_epochs": 1,
        "val_interval": 1,
        "batch_size": 1,
        "augmentation_args#num_samples": 1,
        "num_workers": 0,
        "cache": "none",
        "check_data": "quick",
        **output_overrides(out),
        **tiny_overrides(model),
        **data.overrides,
    }


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
    evaluated = sorted(p.name for p in (out / "eval").iterdir())
    assert any(n.endswith(".csv") for n in evaluated), f"evaluation wrote no metrics: {evaluated}"

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
    names = {b.name for b in BUNDLES}
    missing = [f"{d}_{m}" for d in DATASETS for m in MODELS if f"{d}_{m}" not in names]
    assert not missing, f"bundles missing from the matrix (create them with scripts/new_bundle.py): {missing}"
    assert len(DATASETS) >= 6 and len(MODELS) >= 7


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_bundle_files_and_overrides(bundle: Path):
    """The full config set and docs; the top-level overrides; a patch the network accepts."""
    for rel in (
        "configs/train.yaml",
        "configs/evaluate.yaml",
        "configs/inference.yaml",
        "configs/multi_gpu_train.yaml",
        "configs/multi_gpu_evaluate.yaml",
        "configs/logging.conf",
        "configs/metadata.json",
        "docs/README.md",
        "docs/data_license.txt",
        "LICENSE",
    ):
        assert (bundle / rel).is_file() and (bundle / rel).stat().st_size > 0, f"{bundle.name}: {rel} missing"
    config = header(bundle)
    missing = [k for k in TOP_LEVEL_OVERRIDES if k not in config]
    assert not missing, f"{bundle.name}: top-level overrides missing from the train.yaml header: {missing}"
    dataset, model = split_name(bundle.name)
    _, md = scaffold.pair_specs(dataset, model)
    assert all(p % md["patch_multiple"] == 0 for p in config["patch_size"]), "patch not divisible for the network"
    readme = (bundle / "docs" / "README.md").read_text()
    if not (bundle / "models" / "model.pt").exists():
        assert "No trained weights are shipped" in readme
        assert json.loads((bundle / "configs" / "metadata.json").read_text())["eval_metrics"] == {}


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda p: p.stem)
@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_metadata_valid(bundle: Path, schema: Path):
    assert len(SCHEMAS) == 2, f"expected the two shared schemas, found {SCHEMAS}"
    verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(schema))  # raises if invalid
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    for key in ("changelog", "eval_metrics", "required_packages_version", "optional_packages_version"):
        assert key in meta, key
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
    with _cwd(bundle):
        verify_net_in_out(
            net_id="network_def",
            meta_file="configs/metadata.json",
            config_file="configs/inference.yaml",
            device="cpu",
            **TINY[model],
        )
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config("configs/inference.yaml")
        for k, v in {**TINY[model], "patch_size": TINY_PATCH.get(model, [32, 32, 32])}.items():
            parser[k] = v
        net = parser.get_parsed_content("network_def").eval()
    x = torch.rand(1, header(bundle)["num_channels"], *TINY_PATCH.get(model, [32, 32, 32]))
    with torch.no_grad():
        y = net(x)
    assert isinstance(y, torch.Tensor) and y.shape == (1, header(bundle)["num_classes"], *x.shape[2:])


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_train_evaluate_infer(bundle: Path, smoke_data, tmp_path: Path):
    dataset, _ = split_name(bundle.name)
    train_evaluate_infer(bundle, smoke_data(dataset), tmp_path)


@pytest.mark.parametrize("bundle", [b for b in BUNDLES if b.name.startswith("hippocampus_mri_")], ids=lambda p: p.name)
def test_verify_net_in_out_full_size(bundle: Path):
    """The CPU-sized hippocampus networks exactly as shipped, on the metadata's input shape."""
    with _cwd(bundle):
        verify_net_in_out(
            net_id="network_def", meta_file="configs/metadata.json", config_file="configs/inference.yaml", device="cpu"
        )


@pytest.mark.slow
def test_verify_net_in_out_stock_cli(bundles_dir: Path):
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
    assert (out / "eval" / "metrics_per_case.csv").is_file()
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
    data = SmokeData(src, datalist, _first_image(datalist, src), {"preprocessing_args#pixdim": [3.0, 3.0, 3.0]})
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
    text = (BUNDLES_DIR / "hippocampus_mri_unet" / "configs" / "train.yaml").read_text()
    assert scaffold.split_standard(text)[0] == scaffold.train_header("hippocampus_mri", "unet")


def test_create_makes_a_complete_valid_bundle(tmp_path: Path):
    bundle = scaffold.create("spleen_ct", "segresnet", root=tmp_path)
    assert scaffold.check(bundle) == []
    test_bundle_files_and_overrides(bundle)
    for schema in SCHEMAS:
        verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(schema))
    config = header(bundle)
    assert config["preprocessing_args"]["intensity"] == {"kind": "ct", "a_min": -57, "a_max": 164}
    assert config["network_def"]["_target_"] == "SegResNet"
    with pytest.raises(FileExistsError, match="overwrite"):
        scaffold.create("spleen_ct", "segresnet", root=tmp_path)
    (bundle / "models" / "model.pt").write_bytes(b"weights")
    with pytest.raises(FileExistsError, match="trained weights"):
        scaffold.create("spleen_ct", "segresnet", root=tmp_path, overwrite=True)


def test_model_specs_fit_the_patch_to_the_network():
    assert header(BUNDLES_DIR / "hippocampus_mri_unetr")["patch_size"] == [48, 64, 48]  # 40x56x40 up to x16
    assert header(BUNDLES_DIR / "hippocampus_mri_swin_unetr")["patch_size"] == [64, 64, 64]  # up to x32
    augmentation = header(BUNDLES_DIR / "abdomen_ct_dynunet")["augmentation_args"]
    assert augmentation["augmentation"] == "strong" and augmentation["flip_axes"] == [1, 2]  # model merged over data
    small = header(BUNDLES_DIR / "hippocampus_mri_dynunet")  # CPU-sized variant
    assert small["network_def"]["base_filters"] == 16 and small["optimizer_name"] == "adamw"
    with pytest.raises(ValueError, match="known models: attention_unet, dynunet"):
        scaffold.load_spec("model", "vnet")


def test_new_bundle_cli_create(tmp_path: Path, monkeypatch):
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "scripts/new_bundle.py", "create", "spleen_ct", "vnet"],
        cwd=scaffold.REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "Unknown model 'vnet'" in r.stderr and "Traceback" not in r.stderr
