"""Helpers and constants shared by the test modules (fixtures live in ``tests/conftest.py``): the reference bundle,
the files of a complete bundle, tiny networks, tiny data in each dataset's layout, and running bundle workflows
in-process or through the stock CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai.bundle import ConfigWorkflow

from shared_components.bundle.runner import output_overrides, run_bundle
from shared_components.bundle.scaffold import BUNDLES_DIR

# the hand-tuned reference bundle, with shipped weights
HIPPO = "hippocampus_mri_unet"
# every file a complete bundle holds (configs, docs, licence)
BUNDLE_FILES = (
    "configs/metadata.json",
    "configs/train.yaml",
    "configs/evaluate.yaml",
    "configs/inference.yaml",
    "configs/multi_gpu_train.yaml",
    "configs/multi_gpu_evaluate.yaml",
    "configs/logging.conf",
    "docs/README.md",
    "docs/data_license.txt",
    "LICENSE",
)

# ---- tiny networks ----------------------------------------------------------------------------------------------

# tiny versions of each network, so a CPU runs every bundle in seconds; `tiny_patch` is what each accepts
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
TINY_PATCH_DEFAULT = [32, 32, 32]
# SwinUNETR's instance norm needs more than one voxel at 1/32 resolution
TINY_PATCH = {"swin_unetr": [64, 64, 64]}


def tiny_patch(model: str) -> list[int]:
    """The patch a model's tiny network accepts."""
    return list(TINY_PATCH.get(model, TINY_PATCH_DEFAULT))


def tiny_overrides(model: str) -> dict[str, Any]:
    """Bundle overrides for a model's tiny network and its patch."""
    return {"patch_size": tiny_patch(model), **TINY[model]}


# ---- tiny data in each dataset's layout -------------------------------------------------------------------------


@dataclass
class SmokeData:
    """A dataset folder, its datalist (fold 0 validates, the other cases train) and an image to infer on."""

    dataset_dir: Path
    datalist: Path
    infer_input: str | list[str]
    overrides: dict[str, Any] = field(default_factory=dict)


def first_image(datalist: Path, dataset_dir: Path) -> str | list[str]:
    """The (absolute) image file(s) of the datalist's first training entry."""
    entry = json.loads(datalist.read_text())["training"][0]["image"]
    files = [entry] if isinstance(entry, str) else entry
    paths = [str(dataset_dir / f) if not os.path.isabs(f) else f for f in files]
    return paths[0] if isinstance(entry, str) else paths


def hippocampus_smoke_data(root: Path, real: Path) -> SmokeData:
    """Two real hippocampus cases from ``real`` (the MSD Task04 folder): one validates (fold 0), one trains."""
    from shared_components.data.converters.msd import msd_datalist

    cases = msd_datalist(real, folds=5, seed=0)["training"][:2]
    for i, e in enumerate(cases):
        e["fold"] = i
    path = root / "datalist.json"
    path.write_text(json.dumps({"training": cases, "test": []}, indent=4))
    return SmokeData(real, path, first_image(path, real))


def synthetic_smoke_data(dataset: str, root: Path) -> SmokeData:
    """Two labelled synthetic cases written in the official layout by the dataset's writer, converted by its
    converter (2 folds)."""
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
    elif dataset == "aneurysm_mra":
        from shared_components.data.converters import adam
        from shared_components.data.synthetic import mra as synthetic_mra

        synthetic_mra.write_adam(src, n=2, seed=6, shape=(64, 64, 48))
        datalist = adam.convert_adam(src, src, folds=2, seed=0)
        coarse = {"preprocessing_args#pixdim": [0.8, 0.8, 1.2]}
    else:
        raise KeyError(f"no synthetic smoke data for dataset {dataset!r}: add it to tests/helpers.py")
    datalist = Path(datalist)
    return SmokeData(src, datalist, first_image(datalist, src), coarse)


# ---- running bundles --------------------------------------------------------------------------------------------


@contextmanager
def cwd(path: Path) -> Iterator[None]:
    """Run the block in ``path`` (the working directory is restored afterwards)."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_workflow(bundle: Path, configs: list[str], workflow_type: str, overrides: dict[str, Any]) -> ConfigWorkflow:
    """Run a bundle workflow in this process from the bundle folder, asserting ``check_properties()`` is empty."""
    with cwd(bundle):
        w = ConfigWorkflow(config_file=configs, workflow_type=workflow_type, **overrides)
        w.initialize()
        assert w.check_properties() == [], f"{bundle.name} {configs}: missing or mis-wired properties"
        w.run()
        w.finalize()
    return w


def one_epoch(dataset_dir: str | Path, datalist: str | Path) -> dict[str, Any]:
    """Overrides of a bundle run on ``datalist``: one epoch of batch 1, one sample per case, validation after it,
    no cache or worker processes."""
    return {
        "dataset_dir": str(dataset_dir),
        "datalist": str(datalist),
        "max_epochs": 1,
        "val_interval": 1,
        "batch_size": 1,
        "augmentation_args#num_samples": 1,
        "num_workers": 0,
        "cache": "none",
    }


def smoke_overrides(model: str, data: SmokeData, out: Path) -> dict[str, Any]:
    """One epoch of one iteration-sized batch, validation after it, outputs under ``out``."""
    return {
        **one_epoch(data.dataset_dir, data.datalist),
        "check_data": "quick",
        **output_overrides(out),
        **tiny_overrides(model),
        **data.overrides,
    }


def run_cli(bundle: str, configs: Sequence[str], overrides: dict[str, Any], log: Path) -> float:
    """Run a bundle of ``bundles/`` through the stock ``python -m monai.bundle run`` CLI, appending to ``log``
    (raises with the log tail on failure); returns the wall time in seconds."""
    return run_bundle(BUNDLES_DIR / bundle, configs, overrides, log_file=log)


def bundle_with_values(src: Path, dst: Path, values: dict[str, Any]) -> Path:
    """A copy of the bundle ``src`` (configs, docs, LICENSE; no run outputs) in ``dst`` with the top-level ``values``
    written into train.yaml and inference.yaml (overrides given on a command line reach one config; these are the
    bundle's own values in both)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("runs", "eval", "logs", "cache", "__pycache__"))
    for name in ("train.yaml", "inference.yaml"):
        path = dst / "configs" / name
        text = path.read_text()
        for key, value in values.items():
            text, n = re.subn(rf"^{key}:.*$", f"{key}: {json.dumps(value)}", text, count=1, flags=re.M)
            assert n == 1, (name, key)
        path.write_text(text)
    return dst


DETECTOR = BUNDLES_DIR / "aneurysm_mra_retinanet"
COARSE = [0.8, 0.8, 1.2]  # 64x64x48 synthetic voxels of 0.4x0.4x0.6 mm -> 32x32x24
# a CPU-sized detector for 32x32x24 images
TINY_DETECTOR = {
    "preprocessing_args#pixdim": COARSE,
    "patch_size": [32, 32, 16],
    "val_patch_size": [32, 32, 16],
    "anchor_shapes": [[4, 4, 3], [6, 6, 4], [8, 8, 6]],
    "backbone_depth": 10,
    "fpn_channels": 32,
}
