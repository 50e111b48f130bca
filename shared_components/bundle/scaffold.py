"""Create bundles from a dataset spec and a model spec, and keep every bundle equal to what the specs and the
template generate.

The configs of a bundle ``<dataset>_<model>/`` are derived, never hand-edited:

* the header of ``configs/train.yaml`` (above the marker line) is :func:`train_header` of the two specs in
  ``specs/{datasets,models}/``;
* ``train.yaml`` below the marker is the template's standard workflow;
* ``inference.yaml`` is the header keys inference needs, followed by the template's inference workflow;
* ``evaluate.yaml``, ``multi_gpu_*.yaml``, ``logging.conf`` and ``LICENSE`` are copies of the template.

``metadata.json`` and ``docs/`` are written by :func:`create` and hand-owned afterwards (they hold measured results).

A deliberate difference of one bundle is declared in its *dataset* spec (so model specs stay dataset-agnostic),
keyed by model name; ``config`` is merged last, over the dataset and model values (the patch is still fitted to the
model), and the required ``reason`` is written into the header as a comment::

    bundles:
      unet:
        reason: trained on fold 1 to compare with the published fold-1 result
        config:
          fold: 1

A folder whose name is not a known ``<dataset>_<model>`` pair (a bundle of one's own) keeps the header it has: for
it only the parts below the header are derived. A bundle listed in ``layout.STANDALONE_BUNDLES`` (the aneurysm
RetinaNet detector) has a whole workflow of its own: nothing of it is derived, :func:`all_bundles` leaves it out
(so ``sync``, ``check`` and the template's tests skip it by name, not silently), and ``check`` of it finds nothing to
compare. ``sync`` rewrites what drifted; ``check`` lists it (CI runs ``scripts/new_bundle.py
check``).
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import yaml

from shared_components.bundle import model_card
from shared_components.bundle.layout import (
    BUNDLES_DIR,
    COPIED,
    MARKER,
    SPECS_DIR,
    STANDALONE_BUNDLES,
    TEMPLATE_DIR,
    split_standard,
)
from shared_components.files import JOURNAL, complete_staged
from shared_components.paths import REPO_ROOT

__all__ = [
    "BUNDLES_DIR",
    "COPIED",
    "INFERENCE_KEYS",
    "MARKER",
    "REPO_ROOT",
    "SPECS_DIR",
    "STANDALONE_BUNDLES",
    "TEMPLATE_DIR",
    "all_bundles",
    "bundle_pair",
    "check",
    "create",
    "expected_files",
    "fit_patch",
    "header_config",
    "inference_header",
    "load_spec",
    "pair_specs",
    "spec_names",
    "split_standard",
    "sync",
    "train_header",
]

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


def with_references(config: dict[str, Any], keys: list[str]) -> list[str]:
    """``keys`` and every id of ``config`` they reference (``@id``), recursively."""
    keys, i = list(keys), 0
    while i < len(keys):
        for ref in REF.findall(json.dumps(config[keys[i]])):
            if ref in config and ref not in keys:
                keys.append(ref)
        i += 1
    return keys


def inference_header(header: str) -> str:
    """The part of a train.yaml header that inference needs, with every id it references."""
    config = yaml.safe_load(header) or {}
    keys = with_references(config, [k for k in INFERENCE_KEYS if k in config])
    selected = {k: config[k] for k in config if k in keys}
    intro = "# Generated from configs/train.yaml by `python scripts/new_bundle.py sync`: edit train.yaml, not this.\n"
    return intro + _dump(selected)


def bundle_pair(bundle_dir: str | Path) -> tuple[str, str] | None:
    """The ``(dataset, model)`` specs a bundle folder is named after, or None for a folder of one's own."""
    name = Path(bundle_dir).name
    pairs = [(d, m) for d in spec_names("dataset") for m in spec_names("model") if f"{d}_{m}" == name]
    if len(pairs) > 1:
        raise ValueError(f"Bundle name {name!r} is ambiguous: it splits into dataset/model as {pairs}.")
    return pairs[0] if pairs else None


def expected_files(bundle_dir: str | Path) -> dict[str, str]:
    """Every derived file of a bundle and the content it must have (the train.yaml header from the specs when the
    folder is named after a dataset/model pair, else the header the file has); none for a standalone bundle."""
    bundle_dir = Path(bundle_dir)
    if bundle_dir.name in STANDALONE_BUNDLES:
        return {}
    pair = bundle_pair(bundle_dir)
    if pair:
        header = train_header(*pair)
    else:
        train = bundle_dir / "configs" / "train.yaml"
        header, _ = split_standard(train.read_text(), str(train))
    files = {rel: _template(rel) for rel in COPIED}
    files["configs/train.yaml"] = header + _template("configs/train.yaml")
    files["configs/inference.yaml"] = inference_header(header) + _template("configs/inference.yaml")
    return files


def _reconcile(bundle_dir: str | Path, write: bool) -> list[str]:
    """The derived files of ``bundle_dir`` that differ from :func:`expected_files`, rewritten when ``write``."""
    bundle_dir = Path(bundle_dir)
    drifted = []
    for rel, text in expected_files(bundle_dir).items():
        path = bundle_dir / rel
        if not path.is_file() or path.read_text() != text:
            if write:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
            drifted.append(str(path))
    card, pair = bundle_dir / "docs" / "README.md", bundle_pair(bundle_dir)
    if pair and card.is_file() and stale_card(bundle_dir, pair, write):
        drifted.append(str(card))
    if (bundle_dir / JOURNAL).is_file():  # a ship killed while renaming its files into place: completed by sync
        drifted.append(str(bundle_dir / JOURNAL))
        if write:
            complete_staged(bundle_dir)
    return drifted


def stale_card(bundle_dir: Path, pair: tuple[str, str], write: bool = False) -> bool:
    """Whether ``docs/README.md`` of the ``pair`` bundle lacks a fact its configs give
    (:meth:`ModelCard.readme_facts`); rewritten from the specs when ``write``, keeping the Performance section of a
    bundle with shipped weights."""
    card, path = model_card.ModelCard(bundle_dir, *pair_specs(*pair)), bundle_dir / "docs" / "README.md"
    text = path.read_text()
    flat = " ".join(text.split())
    if all(" ".join(fact.split()) in flat for fact in card.readme_facts()):
        return False
    if write:
        path.write_text(card.refreshed_readme(text, trained=(bundle_dir / "models" / "model.pt").is_file()))
    return True


def check(bundle_dir: str | Path) -> list[str]:
    """Derived files of ``bundle_dir`` that differ from what ``sync`` would write."""
    return _reconcile(bundle_dir, write=False)


def sync(bundle_dir: str | Path) -> list[str]:
    """Rewrite the derived files of ``bundle_dir``; returns the files that changed."""
    return _reconcile(bundle_dir, write=True)


def all_bundles(root: str | Path = BUNDLES_DIR, standalone: bool = False) -> list[Path]:
    """Bundle folders below ``root`` (those with a configs/train.yaml) that follow the template: the standalone
    bundles of ``layout.STANDALONE_BUNDLES`` (own workflow, nothing derived) only with ``standalone=True``."""
    found = sorted(p.parent.parent for p in Path(root).glob("*/configs/train.yaml"))
    return [p for p in found if standalone or p.name not in STANDALONE_BUNDLES]


def _merge(base: Any, over: Any) -> Any:
    """Deep merge of spec dictionaries: ``over`` wins, nested dictionaries merge, lists are replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base.get(k), v) if k in base else v
        return out
    return over


def _bundle_overrides(spec: dict[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    """The validated ``bundles:`` section of a dataset spec: ``{model: {"config": {...}, "reason": str}}``."""
    section = spec.get("bundles") or {}
    if not isinstance(section, dict):
        raise ValueError(f"{path}: 'bundles' must map model names to {{reason, config}}.")
    models = spec_names("model")
    for model, entry in section.items():
        where = f"{path}: bundles.{model}"
        if model not in models:
            raise ValueError(f"{where}: no model spec {model!r}; known models: {', '.join(models)}.")
        if not isinstance(entry, dict) or set(entry) - {"config", "reason"}:
            raise ValueError(f"{where} must hold only 'config' (the overrides) and 'reason'.")
        if not isinstance(entry.get("config"), dict) or not entry["config"]:
            raise ValueError(f"{where}.config must be a non-empty mapping of header values.")
        reason = entry.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError(
                f"{where} overrides {', '.join(entry['config'])} without a reason: add 'reason: <why this bundle "
                "differs>' (it is written into the bundle's train.yaml header)."
            )
    return section


def load_spec(kind: str, name: str, size: str | None = None) -> dict[str, Any]:
    """A dataset or model spec: ``config`` (header values), ``info`` (text for metadata and docs), ``comments``
    (end-of-line comments for header keys) and, for models, ``patch_multiple`` (what every patch axis must be
    divisible by), for datasets ``bundles`` (per-bundle overrides). ``size='small'`` merges a model spec's
    ``small`` section (the CPU-sized variant) over the rest."""
    path = SPECS_DIR / f"{kind}s" / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(spec_names(kind))
        raise ValueError(f"Unknown {kind} {name!r}; known {kind}s: {known}. Add {path} to define it.")
    spec = yaml.safe_load(path.read_text()) or {}
    if kind == "model" and "bundles" in spec:
        raise ValueError(f"{path}: per-bundle overrides ('bundles:') belong in the dataset spec, keyed by model name.")
    if size and size in spec:
        spec = _merge(spec, spec[size])
    out = {
        "name": name,
        "config": spec.get("config", {}),
        "info": spec.get("info", {}),
        "comments": spec.get("comments", {}),
        "patch_multiple": int(spec.get("patch_multiple", 1)),
    }
    if kind == "dataset":
        out["bundles"] = _bundle_overrides(spec, path)
    return out


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
    wins; nested dictionaries such as ``augmentation_args`` merge), then the pair's declared ``bundles`` override,
    with the patch fitted to the model."""
    ds, md = pair_specs(dataset, model)
    config = _merge(ds["config"], md["config"])
    if model in ds["bundles"]:
        config = _merge(config, ds["bundles"][model]["config"])
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
    override = ds["bundles"].get(model)
    if override:
        note = (
            f"Overrides {', '.join(override['config'])} (bundles.{model} of specs/datasets/{dataset}.yaml): "
            + " ".join(override["reason"].split())
        )
        title += "".join(f"# {line}\n" for line in textwrap.wrap(note, 118))
    text = title + _dump(base) + "# data\n" + _dump(data) + "# model and optimisation\n" + _dump(model_part)
    comments = {**ds["comments"], **md["comments"]}
    lines = [
        (
            f"{line}  # {comments[line.split(':')[0]]}"
            if line.split(":")[0] in comments and line[:1] not in " -#"
            else line
        )
        for line in text.splitlines()
    ]
    return "\n".join(lines) + "\n"


def create(dataset: str, model: str, root: str | Path = BUNDLES_DIR, overwrite: bool = False) -> Path:
    """A new bundle ``<root>/<dataset>_<model>/`` from the two specs: the derived configs (:func:`sync`, header
    included), ``metadata.json``, ``docs/README.md``, ``docs/data_license.txt`` and an empty ``models/``.

    ``overwrite`` regenerates the hand-owned files (metadata and docs) of an existing bundle from the specs; a
    bundle with trained weights (``models/model.pt``) is never overwritten, since its docs and metadata hold
    measured results.
    """
    ds, md = pair_specs(dataset, model)
    bundle = Path(root) / f"{dataset}_{model}"
    if (bundle / "configs" / "train.yaml").exists():
        if not overwrite:
            raise FileExistsError(f"{bundle} already exists; pass overwrite=True to regenerate it from the specs.")
        if (bundle / "models" / "model.pt").exists():
            raise FileExistsError(f"{bundle} has trained weights (models/model.pt); edit its files by hand instead.")
    (bundle / "configs").mkdir(parents=True, exist_ok=True)
    (bundle / "docs").mkdir(exist_ok=True)
    (bundle / "models").mkdir(exist_ok=True)
    (bundle / "models" / ".gitkeep").touch()
    sync(bundle)
    card = model_card.ModelCard(bundle, ds, md)
    (bundle / "configs" / "metadata.json").write_text(json.dumps(card.metadata(), indent=4) + "\n")
    (bundle / "docs" / "README.md").write_text(card.readme())
    (bundle / "docs" / "data_license.txt").write_text(ds["info"].get("data_license", "").rstrip() + "\n")
    return bundle
