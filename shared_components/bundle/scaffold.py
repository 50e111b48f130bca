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


def load_spec(kind: str, name: str) -> dict[str, Any]:
    """A dataset or model spec: ``config`` (header values) and ``info`` (text for metadata and docs)."""
    path = SPECS_DIR / f"{kind}s" / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in (SPECS_DIR / f"{kind}s").glob("*.yaml")))
        raise ValueError(f"Unknown {kind} {name!r}; known {kind}s: {known}. Add {path} to define it.")
    spec = yaml.safe_load(path.read_text())
    return {"config": spec.get("config", {}), "info": spec.get("info", {})}


def train_header(dataset: str, model: str) -> str:
    """The bundle-specific header of ``train.yaml`` for a dataset/model pair (model values win over dataset ones)."""
    ds, md = load_spec("dataset", dataset), load_spec("model", model)
    base = {
        "imports": ["$import torch", "$import monai", "$import shared_components"],
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
    }
    data = {k: v for k, v in ds["config"].items() if k not in md["config"]}
    title = f"# {dataset}_{model}: {md['info'].get('title', model)} for {ds['info'].get('title', dataset)}.\n"
    return title + _dump(base) + "# data\n" + _dump(data) + "# model and optimisation\n" + _dump(md["config"])
