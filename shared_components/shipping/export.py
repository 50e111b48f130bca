"""Export a bundle of this repository as a self-contained MONAI Model Zoo bundle (folder, optionally zipped).

The export needs nothing from this repository at run time:

* the ``shared_components`` code the configs use is vendored into the bundle's ``scripts/`` package
  (:mod:`shared_components.shipping.vendor`) and the configs are rewritten to ``scripts.``;
* the dataset folder defaults to the zoo's ``/workspace/data/<dataset>`` (override ``--dataset_dir``) and the shipped
  datalist (fixed folds) is copied to ``configs/datalist.json``;
* ``models/model.pt`` is copied, ``models/model.ts`` (TorchScript) and ``models/model.onnx`` are exported where the
  network allows, and ``docs/README.md`` says which;
* the bundle is named the zoo's way (``<anatomy>_<modality>_<model>_segmentation``) and configs are JSON with a
  4-space indent (``config_format='yaml'`` keeps YAML).

:func:`shared_components.shipping.isolation.verify_export` then runs the zoo's checks on it without this package.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from monai.bundle import ConfigParser

from shared_components.bundle.scaffold import _dump
from shared_components.files import atomic_dir, atomic_path
from shared_components.shipping import isolation, vendor

ZOO_DATA_ROOT = "/workspace/data"
DATALIST = "configs/datalist.json"
SKIPPED_DIRS = {"logs", "eval", "cache", "runs", "__pycache__"}
DATASET_DIR = re.compile(r"""shared_components\.paths\.dataset_dir\(\s*(['"])([^'"]+)\1\s*\)""")
SHIPPED_DATALIST = re.compile(r"""shared_components\.paths\.shipped_datalist\(\s*(['"])([^'"]+)\1\s*\)""")
# packages that have their own metadata keys (monai_version, pytorch_version, numpy_version)
OWN_KEYS = {"torch", "monai", "numpy"}


@dataclass
class ExportResult:
    """Where the export went and what it holds."""

    path: Path
    name: str
    version: str
    zip: Path | None = None
    torchscript: bool = False
    onnx: bool = False
    vendored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checks: list[isolation.Check] = field(default_factory=list)
    exports: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every error-level zoo check passed."""
        return not isolation.failures(self.checks)


def zoo_name(bundle_name: str) -> str:
    """Model Zoo name of a bundle: lower-case words joined by ``_``, ending with the task (``_segmentation``)."""
    name = re.sub(r"[^0-9a-zA-Z]+", "_", bundle_name).strip("_").lower()
    return name if name.endswith("segmentation") else f"{name}_segmentation"


def _map_strings(obj: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(obj, str):
        return fn(obj)
    if isinstance(obj, list):
        return [_map_strings(v, fn) for v in obj]
    if isinstance(obj, dict):
        return {k: _map_strings(v, fn) for k, v in obj.items()}
    return obj


def _rewrite_paths(value: str, data_root: str, datalists: set[str]) -> str:
    """Repository paths -> bundle-relative or zoo paths (``$`` expressions collapse to plain values)."""

    def dataset(m: re.Match) -> str:
        return repr(f"{data_root}/{m.group(2)}")

    def datalist(m: re.Match) -> str:
        datalists.add(m.group(2))
        return f"@bundle_root + '/{DATALIST}'"

    new = SHIPPED_DATALIST.sub(datalist, DATASET_DIR.sub(dataset, value))
    plain = re.fullmatch(r"\$'([^']*)'", new)
    return plain.group(1) if plain else new


def _rename_package(value: str) -> str:
    return re.sub(r"\bshared_components\b", "scripts", value)


def _read_config(path: Path) -> Any:
    return json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())


def _third_party_versions(modules: set[str]) -> dict[str, str]:
    """``{distribution: version}`` for top-level module names (``ignite`` -> ``pytorch-ignite``; a package split
    into several distributions, like ``itk``, is named by its umbrella distribution)."""
    dists = importlib.metadata.packages_distributions()
    out = {}
    for mod in sorted(modules - OWN_KEYS):
        candidates = [mod] if mod not in dists or len(dists[mod]) > 1 else dists[mod]
        for dist in candidates:
            try:
                out[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
    return out


def export_bundle(
    bundle_dir: str | Path,
    out_dir: str | Path,
    name: str | None = None,
    make_zip: bool = False,
    config_format: str = "json",
    torchscript: bool = True,
    onnx: bool = True,
    untrained: bool = False,
    data_root: str = ZOO_DATA_ROOT,
    overwrite: bool = False,
) -> ExportResult:
    """Export ``bundle_dir`` to ``out_dir/<zoo name>`` (and ``out_dir/<zoo name>_v<version>.zip``), then run the
    zoo's offline checks on it without ``shared_components`` (``result.checks``; ``result.ok``).

    ``models/model.ts`` and ``models/model.onnx`` are written in that same isolated run and shipped only when they
    reproduce the eager network. ``untrained=True`` ships the initialised network when the bundle has no ``models/model.pt`` (to test the export
    of bundles not trained yet; the metadata description says so). The folder is built in a temporary sibling and
    moved into place at the end, so a failed export never leaves half a bundle.
    """
    src = Path(bundle_dir).resolve()
    for rel in ("configs/train.yaml", "configs/inference.yaml", "configs/metadata.json", "LICENSE"):
        if not (src / rel).is_file():
            raise FileNotFoundError(f"{src} is not a bundle of this repository: {rel} is missing.")
    if not (src / "docs" / "data_license.txt").is_file() or not (src / "docs" / "README.md").is_file():
        raise FileNotFoundError(f"{src}/docs needs README.md and data_license.txt for the Model Zoo.")
    checkpoint = src / "models" / "model.pt"
    if not checkpoint.is_file() and not untrained:
        raise FileNotFoundError(
            f"{checkpoint} does not exist: train the bundle first, or pass --untrained to ship initialised weights "
            "(only to test the export)."
        )
    if config_format not in ("json", "yaml"):
        raise ValueError(f"config_format must be 'json' or 'yaml', got {config_format!r}.")
    name = name or zoo_name(src.name)
    out_dir = Path(out_dir).resolve()
    dest = out_dir / name
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} exists; pass --overwrite to replace it.")
    with atomic_dir(dest) as tmp:
        result = _build(src, tmp, name, config_format, torchscript, onnx, untrained, data_root)
    result.path = dest
    if make_zip:
        result.zip = zip_bundle(dest, out_dir / f"{name}_v{result.version}.zip")
    return result


def _build(
    src: Path,
    dest: Path,
    name: str,
    config_format: str,
    torchscript: bool,
    onnx: bool,
    untrained: bool,
    data_root: str,
) -> ExportResult:
    meta = json.loads((src / "configs" / "metadata.json").read_text())
    result = ExportResult(path=dest, name=name, version=str(meta.get("version", "")))

    # configs: repository paths -> bundle/zoo paths, then collect what they use from shared_components
    datalists: set[str] = set()
    configs: dict[str, Any] = {}
    for path in sorted((src / "configs").iterdir()):
        if path.suffix in (".yaml", ".yml", ".json") and path.name != "metadata.json":
            rewritten = _map_strings(_read_config(path), lambda v: _rewrite_paths(v, data_root, datalists))
            configs[path.stem] = rewritten
    if len(datalists) > 1:
        raise ValueError(f"{src} uses several shipped datalists {sorted(datalists)}; the export ships one.")
    references = vendor.config_references(json.dumps(c) for c in configs.values())
    vendored = vendor.vendor(references, dest, package="scripts", bundle=name)
    result.vendored = sorted(str(p.relative_to(dest)) for p in vendored.files.values())

    ext = "json" if config_format == "json" else "yaml"
    (dest / "configs").mkdir(parents=True, exist_ok=True)
    for stem, config in configs.items():
        config = _map_strings(config, _rename_package)
        if ext == "json":
            text = json.dumps(config, indent=4) + "\n"
        else:
            text = f"# {stem}.yaml of the {name} bundle (exported from {src.name}).\n" + _dump(config)
        (dest / "configs" / f"{stem}.{ext}").write_text(text)
    shutil.copy(src / "configs" / "logging.conf", dest / "configs" / "logging.conf")
    if datalists:
        from shared_components.paths import shipped_datalist

        datalist = json.loads(Path(shipped_datalist(next(iter(datalists)))).read_text())
        (dest / DATALIST).write_text(json.dumps(datalist, indent=4) + "\n")

    # models
    (dest / "models").mkdir()
    if (src / "models" / "model.pt").is_file():
        shutil.copy(src / "models" / "model.pt", dest / "models" / "model.pt")
    else:
        parser = ConfigParser()
        parser.read_config(src / "configs" / "inference.yaml")
        torch.manual_seed(0)
        torch.save(parser.get_parsed_content("network_def").state_dict(), dest / "models" / "model.pt")
        meta["description"] = "UNTRAINED EXPORT (initialised weights, only to test the export). " + meta.get(
            "description", ""
        )
        result.notes.append("untrained: models/model.pt holds the initialised network")

    # metadata: the third-party packages the vendored code imports become required packages
    required = dict(meta.get("required_packages_version") or meta.get("optional_packages_version") or {})
    required.update({k: v for k, v in _third_party_versions(vendored.third_party).items() if k not in required})
    meta["required_packages_version"] = dict(sorted(required.items()))
    if "optional_packages_version" in meta:
        meta["optional_packages_version"] = dict(sorted(required.items()))
    (dest / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4) + "\n")

    # docs, licence
    shutil.copytree(src / "docs", dest / "docs", ignore=shutil.ignore_patterns(*SKIPPED_DIRS))
    shutil.copy(src / "LICENSE", dest / "LICENSE")
    readme = (dest / "docs" / "README.md").read_text()
    if ext == "json":
        readme = re.sub(r"configs/(\w+)\.yaml", r"configs/\1.json", readme)
    (dest / "docs" / "README.md").write_text(readme.rstrip() + "\n")

    # TorchScript/ONNX and the zoo's checks, in one subprocess that cannot import shared_components
    kinds = [k for k, on in (("ts", torchscript), ("onnx", onnx)) if on]
    result.checks, result.exports = isolation.verify_export(dest, export=kinds)
    result.torchscript = result.exports.get("ts", {}).get("ok", False)
    result.onnx = result.exports.get("onnx", {}).get("ok", False)
    for info in result.exports.values():
        if not info.get("ok"):
            result.notes.append(f"{info['file']} not shipped: {info.get('detail', '')[:300]}")
    (dest / "docs" / "README.md").write_text(readme.rstrip() + "\n\n" + _export_notes(src, result, ext, data_root))
    return result


def _export_notes(src: Path, result: ExportResult, ext: str, data_root: str) -> str:
    ts_info, onnx_info = result.exports.get("ts", {}), result.exports.get("onnx", {})
    if result.torchscript:
        ts = f"`models/model.ts` ({ts_info.get('method', 'scripted')}; matches the eager network)"
    elif ts_info:
        ts = "not supported by this network (the eager `models/model.pt` only)"
    else:
        ts = "not exported"
    if result.onnx:
        onnx = f"`models/model.onnx` ({onnx_info.get('method', '')}; matches the eager network in onnxruntime)"
    elif onnx_info:
        onnx = "not supported by this network"
    else:
        onnx = "not exported"
    return f"""## This Model Zoo bundle

Exported from `{src.name}` of the monai-seg-bundles collection with `python scripts/export_bundle.py {src.name}`.
It needs only the packages in `configs/metadata.json`: the collection code it uses is vendored in `scripts/`
(`$import scripts` in the configs), so it runs from this folder with the stock MONAI CLI.

- Data: `--dataset_dir` (default `{data_root}/<dataset>`); the training split with its fixed folds is
  `configs/datalist.json` (paths relative to `dataset_dir`), override with `--datalist FILE`.
- Train: `python -m monai.bundle run --config_file configs/train.{ext}`; evaluate:
  `python -m monai.bundle run --config_file "['configs/train.{ext}','configs/evaluate.{ext}']"`; infer:
  `python -m monai.bundle run --config_file configs/inference.{ext} --input_data /path/to/images`.
- Multi-GPU: `torchrun --nproc_per_node=N -m monai.bundle run --config_file
  "['configs/train.{ext}','configs/multi_gpu_train.{ext}']"` (gloo on CPU, NCCL on GPUs).
- TorchScript: {ts}.
- ONNX: {onnx}.
- MONAI Label: copy this folder into a `monaibundle` app's `model/` folder and start the server with
  `--conf models {result.name}`.
"""


def zip_bundle(bundle: str | Path, zip_path: str | Path) -> Path:
    """Zip a bundle folder as the zoo ships it (``<name>/...`` inside), written atomically."""
    bundle, zip_path = Path(bundle), Path(zip_path)
    with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(bundle.rglob("*")):
            if path.is_file() and not SKIPPED_DIRS.intersection(path.relative_to(bundle).parts):
                zf.write(path, Path(bundle.name) / path.relative_to(bundle))
    return zip_path
