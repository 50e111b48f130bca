"""Create bundles from a dataset spec and a model spec, and keep their shared parts in sync with the template.

A bundle's only hand-owned config is the header of ``configs/train.yaml`` (what is specific to its dataset and
model), plus ``metadata.json`` and ``docs/``. Everything else is derived:

* ``train.yaml`` below the marker line is the template's standard workflow;
* ``inference.yaml`` is the header keys inference needs, followed by the template's inference workflow;
* ``evaluate.yaml``, ``multi_gpu_*.yaml``, ``logging.conf`` and ``LICENSE`` are copies of the template.

``sync`` rewrites the derived parts; ``check`` lists the files that drifted (a test keeps them in sync).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from shared_components.paths import PACKAGE_DIR, REPO_ROOT

TEMPLATE_DIR = PACKAGE_DIR / "bundle" / "template"
SPECS_DIR = PACKAGE_DIR / "bundle" / "specs"
BUNDLES_DIR = REPO_ROOT / "bundles"
MARKER = "# ---- standard "
COPIED = (
    "configs/evaluate.yaml",
    "configs/multi_gpu_train.yaml",
    "configs/multi_gpu_evaluate.yaml",
    "configs/logging.conf",
    "LICENSE",
)
# top-level ids the inference workflow reads; ids they reference (e.g. ``@num_classes``) are added automatically
INFERENCE_KEYS = (
    "imports",
    "bundle_root",
    "device",
    "dataset_dir",
    "amp",
    "num_channels",
    "num_classes",
    "multilabel",
    "preprocessing_args",
    "patch_size",
    "sw_batch_size",
    "sw_overlap",
    "network_def",
)
REF = re.compile(r"@([A-Za-z_]\w*)")


def split_standard(text: str, path: str = "train.yaml") -> tuple[str, str]:
    """Split a config into its bundle-specific header and the standard part starting at the marker line."""
    i = text.find("\n" + MARKER)
    if i < 0:
        raise ValueError(f"{path} has no '{MARKER}...' marker line separating the bundle header from the template.")
    return text[: i + 1], text[i + 1 :]


def _template(rel: str) -> str:
    return (TEMPLATE_DIR / rel).read_text()


class _Dumper(yaml.SafeDumper):
    """Block style, except lists of numbers (``[40, 56, 40]``) which read best inline."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    inline = all(isinstance(v, int | float) and not isinstance(v, bool) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=inline)


_Dumper.add_representer(list, _represent_list)


def _dump(data: dict[str, Any]) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120, allow_unicode=True)


def inference_header(header: str) -> str:
    """The part of a train.yaml header that inference needs, with every id it references."""
    config = yaml.safe_load(header) or {}
    keys = [k for k in INFERENCE_KEYS if k in config]
    i = 0
    while i < len(keys):
        for ref in REF.findall(json.dumps(config[keys[i]])):
            if ref in config and ref not in keys:
                keys.append(ref)
        i += 1
    selected = {k: config[k] for k in config if k in keys}
    intro = "# Generated from configs/train.yaml by `python scripts/new_bundle.py sync`: edit train.yaml, not this.\n"
    return intro + _dump(selected)


def expected_files(bundle_dir: Path) -> dict[str, str]:
    """Derived files of a bundle and the content they must have."""
    train = (bundle_dir / "configs" / "train.yaml").read_text()
    header, _ = split_standard(train, str(bundle_dir / "configs" / "train.yaml"))
    files = {rel: _template(rel) for rel in COPIED}
    files["configs/train.yaml"] = header + _template("configs/train.yaml")
    files["configs/inference.yaml"] = inference_header(header) + _template("configs/inference.yaml")
    return files


def check(bundle_dir: str | Path) -> list[str]:
    """Derived files of ``bundle_dir`` that differ from what ``sync`` would write."""
    bundle_dir = Path(bundle_dir)
    out = []
    for rel, text in expected_files(bundle_dir).items():
        path = bundle_dir / rel
        if not path.is_file() or path.read_text() != text:
            out.append(str(path))
    return out


def sync(bundle_dir: str | Path) -> list[str]:
    """Rewrite the derived files of ``bundle_dir``; returns the files that changed."""
    bundle_dir = Path(bundle_dir)
    changed = []
    for rel, text in expected_files(bundle_dir).items():
        path = bundle_dir / rel
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            changed.append(str(path))
    return changed


def all_bundles(root: str | Path = BUNDLES_DIR) -> list[Path]:
    """Bundle folders below ``root`` (those with a configs/train.yaml)."""
    return sorted(p.parent.parent for p in Path(root).glob("*/configs/train.yaml"))


def _merge(base: Any, over: Any) -> Any:
    """Deep merge of spec dictionaries: ``over`` wins, nested dictionaries merge, lists are replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base.get(k), v) if k in base else v
        return out
    return over


def load_spec(kind: str, name: str, size: str | None = None) -> dict[str, Any]:
    """A dataset or model spec: ``config`` (header values), ``info`` (text for metadata and docs) and, for models,
    ``patch_multiple`` (what every patch axis must be divisible by). ``size='small'`` merges a model spec's
    ``small`` section (the CPU-sized variant) over the rest."""
    path = SPECS_DIR / f"{kind}s" / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(spec_names(kind))
        raise ValueError(f"Unknown {kind} {name!r}; known {kind}s: {known}. Add {path} to define it.")
    spec = yaml.safe_load(path.read_text()) or {}
    if size and size in spec:
        spec = _merge(spec, spec[size])
    return {
        "name": name,
        "config": spec.get("config", {}),
        "info": spec.get("info", {}),
        "comments": spec.get("comments", {}),
        "patch_multiple": int(spec.get("patch_multiple", 1)),
    }


def spec_names(kind: str) -> list[str]:
    """Names of the dataset or model specs."""
    return sorted(p.stem for p in (SPECS_DIR / f"{kind}s").glob("*.yaml"))


def pair_specs(dataset: str, model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The dataset spec and the model spec sized for it (``info.model_size`` of the dataset, e.g. ``small``)."""
    ds = load_spec("dataset", dataset)
    return ds, load_spec("model", model, ds["info"].get("model_size"))


def fit_patch(patch_size: list[int], multiple: int) -> list[int]:
    """Round each patch axis up to a multiple of ``multiple`` (UNETR needs 16, SwinUNETR 32)."""
    return [-(-int(p) // multiple) * multiple for p in patch_size]


def header_config(dataset: str, model: str) -> dict[str, Any]:
    """The header values of a dataset/model pair: dataset values, then the model's merged over them (the model
    wins; nested dictionaries such as ``augmentation_args`` merge), with the patch fitted to the model."""
    ds, md = pair_specs(dataset, model)
    config = _merge(ds["config"], md["config"])
    if "patch_size" in config:
        config["patch_size"] = fit_patch(config["patch_size"], md["patch_multiple"])
    return config


def train_header(dataset: str, model: str) -> str:
    """The bundle-specific header of ``train.yaml`` for a dataset/model pair."""
    ds, md = pair_specs(dataset, model)
    config = header_config(dataset, model)
    base = {
        "imports": ["$import torch", "$import monai", "$import shared_components"],
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
    }
    data = {k: v for k, v in config.items() if k in ds["config"]}  # dataset order, model values merged in
    model_part = {k: v for k, v in config.items() if k not in data}
    title = f"# {dataset}_{model}: {md['info'].get('title', model)} for {ds['info'].get('title', dataset)}.\n"
    text = title + _dump(base) + "# data\n" + _dump(data) + "# model and optimisation\n" + _dump(model_part)
    comments = {**ds["comments"], **md["comments"]}
    lines = [
        f"{line}  # {comments[line.split(':')[0]]}"
        if line.split(":")[0] in comments and line[:1] not in " -#"
        else line
        for line in text.splitlines()
    ]
    return "\n".join(lines) + "\n"


def create(dataset: str, model: str, root: str | Path = BUNDLES_DIR, overwrite: bool = False) -> Path:
    """A new bundle ``<root>/<dataset>_<model>/`` from the two specs: the train.yaml header, the derived configs
    (:func:`sync`), ``metadata.json``, ``docs/README.md``, ``docs/data_license.txt`` and an empty ``models/``.

    ``overwrite`` regenerates the hand-owned files of an existing bundle from the specs; a bundle with trained
    weights (``models/model.pt``) is never overwritten, since its docs and metadata hold measured results.
    """
    from shared_components.bundle import model_card

    ds, md = pair_specs(dataset, model)
    bundle = Path(root) / f"{dataset}_{model}"
    if (bundle / "configs" / "train.yaml").exists():
        if not overwrite:
            raise FileExistsError(f"{bundle} already exists; pass overwrite=True to regenerate it from the specs.")
        if (bundle / "models" / "model.pt").exists():
            raise FileExistsError(f"{bundle} has trained weights (models/model.pt); edit its files by hand instead.")
    header = train_header(dataset, model)
    (bundle / "configs").mkdir(parents=True, exist_ok=True)
    (bundle / "docs").mkdir(exist_ok=True)
    (bundle / "models").mkdir(exist_ok=True)
    (bundle / "models" / ".gitkeep").touch()
    (bundle / "configs" / "train.yaml").write_text(header + _template("configs/train.yaml"))
    sync(bundle)
    card = model_card.ModelCard(bundle, ds, md)
    (bundle / "configs" / "metadata.json").write_text(json.dumps(card.metadata(), indent=4) + "\n")
    (bundle / "docs" / "README.md").write_text(card.readme())
    (bundle / "docs" / "data_license.txt").write_text(ds["info"].get("data_license", "").rstrip() + "\n")
    return bundle
