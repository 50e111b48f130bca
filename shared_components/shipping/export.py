"""Export a bundle of this repository as a self-contained MONAI Model Zoo bundle (folder, optionally zipped).

The export needs nothing from this repository at run time:

* the ``shared_components`` code the configs use is vendored into the bundle's ``scripts/`` package
  (:mod:`shared_components.shipping.vendor`) and the configs are rewritten to ``scripts.``;
* the dataset folder defaults to the zoo's ``/workspace/data/<dataset>`` (override ``--dataset_dir``) and the shipped
  datalist (fixed folds) is copied to ``configs/datalist.json``;
* ``models/model.pt`` is copied (or, for ``untrained``, the initialised network is saved), ``models/model.ts``
  (TorchScript) and ``models/model.onnx`` are exported where the network allows; with ``large_files`` the weights
  leave the folder for a ``large_files.yml`` the zoo's way;
* a DynUNet trained with deep supervision is shipped for inference without its extra heads, so it scripts
  (:mod:`shared_components.shipping.runtime`);
* the metadata pins only the packages the exported code imports, at versions installable on Python 3.10-3.12 (the
  zoo CI runs 3.10), and declares MONAI Label support; ``docs/README.md`` says exactly what ships;
* the bundle is named the zoo's way (``<anatomy>_<modality>_<model>_segmentation``) and configs are JSON with a
  4-space indent (``config_format='yaml'`` keeps YAML).

:func:`shared_components.shipping.isolation.verify_export` then runs the zoo's checks on it without this package.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import shutil
import textwrap
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from monai.bundle import ConfigParser

from shared_components.bundle.model_card import MONAI_LABEL_VERSION, README_UNTRAINED, SUPPORTED_APPS, UNTRAINED_NOTE
from shared_components.bundle.scaffold import _dump
from shared_components.evaluation.ensemble import MEMBERS_DIR
from shared_components.files import atomic_dir, atomic_path
from shared_components.shipping import isolation, runtime, vendor

ZOO_DATA_ROOT = "/workspace/data"
DATALIST = "configs/datalist.json"
SKIPPED_DIRS = {"logs", "eval", "cache", "runs", "__pycache__"}
DATASET_DIR = re.compile(r"""shared_components\.paths\.dataset_dir\(\s*(['"])([^'"]+)\1\s*\)""")
SHIPPED_DATALIST = re.compile(r"""shared_components\.paths\.shipped_datalist\(\s*(['"])([^'"]+)\1\s*\)""")
# packages that have their own metadata keys (monai_version, pytorch_version, numpy_version)
OWN_KEYS = {"torch", "monai", "numpy"}
# the newest release of these packages that still installs on Python 3.10, the Model Zoo CI's Python (newer ones
# need 3.11); a pin is the installed version, lowered to this when newer. tests/test_zoo_ci.py checks every pin
# with `pip download --python-version 3.10/3.12` when PyPI is reachable.
PY310_NEWEST = {"numpy": "2.2.6", "scipy": "1.15.3", "pandas": "2.3.3", "matplotlib": "3.10.9"}
# the Python versions an export's pins must install on (the zoo CI's 3.10 to 3.12)
PYTHONS = ("3.10", "3.11", "3.12")
# networks MONAI cannot script: their TorchScript is traced, and the zoo lists such bundles in
# ci/bundle_custom_data.py:exclude_verify_torchscript_list (as it does its own swin_unetr_btcv_segmentation)
NOT_SCRIPTABLE = ("SwinUNETR",)
WEIGHTS = ("models/model.pt", "models/model.ts", "models/model.onnx")
NO_BREAKS = {"break_on_hyphens": False, "break_long_words": False}
BUNDLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # one folder name (never "." or "..")


@dataclass
class ExportResult:
    """Where the export went and what it holds."""

    path: Path
    name: str
    version: str
    zip: Path | None = None
    trained: bool = True
    torchscript: bool = False
    onnx: bool = False
    deep_supervision_dropped: bool = False
    network: str = ""
    large_files: Path | None = None
    vendored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checks: list[isolation.Check] = field(default_factory=list)
    exports: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every error-level zoo check passed."""
        return not isolation.failures(self.checks)


def zoo_name(bundle_name: str, task: str = "segmentation") -> str:
    """Model Zoo name of a bundle: lower-case words joined by ``_``, ending with the task (``_segmentation``,
    ``_detection``)."""
    name = re.sub(r"[^0-9a-zA-Z]+", "_", bundle_name).strip("_").lower()
    return name if name.endswith(("segmentation", "detection")) else f"{name}_{task}"


def bundle_task(bundle: Path) -> str:
    """``detection`` for a bundle whose network returns an object (boxes), else ``segmentation``."""
    meta = json.loads((Path(bundle) / "configs" / "metadata.json").read_text())
    outputs = meta.get("network_data_format", {}).get("outputs", {}).values()
    return "detection" if any(o.get("type") == "object" for o in outputs) else "segmentation"


def export_dest(out_dir: str | Path, name: str) -> Path:
    """``out_dir/name``, refusing a name that is not one plain folder name (``../x``, ``a/b``, ``.``, an absolute
    path): with ``--overwrite`` the export replaces that folder, which must be inside ``out_dir``."""
    out = Path(out_dir).resolve()
    if not BUNDLE_NAME.fullmatch(name):
        raise ValueError(
            f"--name {name!r} must be a plain folder name (letters, digits, '_', '-', '.'; no '/', no '..'): "
            f"the export is written to {out}/<name>."
        )
    dest = (out / name).resolve()
    if dest.parent != out:
        raise ValueError(f"--name {name!r} points outside --out {out}.")
    return dest


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


HEADS_HOOK = "shared_components.shipping.runtime.optional_deep_supervision_heads(@network_def)"


def _without_deep_supervision(configs: dict[str, Any]) -> bool:
    """Make the inference config build the network without deep-supervision heads (which MONAI's DynUNet cannot
    script and only training uses) and every config's network load checkpoints with or without them
    (:mod:`shared_components.shipping.runtime`); training and evaluation keep ``network_def`` as trained, so a run
    folder still matches it. True when the network had the heads."""
    net = configs.get("inference", {}).get("network_def")
    if not isinstance(net, dict) or net.get("deep_supervision", False) is False:
        return False
    net["deep_supervision"] = False
    for stem, config in configs.items():
        expr = config.get("network") if isinstance(config, dict) else None
        if expr is None:
            continue
        if not (isinstance(expr, str) and expr.startswith("$") and re.search(r"@network_def\b(?!#)", expr)):
            raise ValueError(f"{stem}: `network` must be an expression of @network_def to drop deep supervision")
        config["network"] = re.sub(r"@network_def\b(?!#)", HEADS_HOOK, expr)
    return True


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version.split("+")[0])[:3])


def pinned_version(dist: str, installed: str) -> str:
    """The version an export pins ``dist`` at: the installed one (without a local ``+cpu`` label), lowered to the
    newest release that installs on Python 3.10 when it is newer (:data:`PY310_NEWEST`)."""
    installed = installed.split("+")[0]
    cap = PY310_NEWEST.get(dist)
    return cap if cap and _version_tuple(installed) > _version_tuple(cap) else installed


def _distributions(modules: Iterable[str]) -> list[str]:
    """Distributions providing top-level modules (``ignite`` -> ``pytorch-ignite``; a package split into several
    distributions, like ``itk``, is named by its umbrella distribution)."""
    dists = importlib.metadata.packages_distributions()
    out = []
    for mod in sorted(set(modules) - OWN_KEYS):
        candidates = [mod] if mod not in dists or len(dists[mod]) > 1 else dists[mod]
        for dist in candidates:
            try:
                importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
            out.append(dist)
    return out


def package_pins(modules: Iterable[str], declared: Iterable[str] = ()) -> dict[str, str]:
    """``required_packages_version`` of an export: the distributions of the third-party ``modules`` the exported code
    imports plus the ``declared`` ones the bundle needs through MONAI (nibabel, pytorch-ignite, tensorboard, einops),
    at :func:`pinned_version`; torch, monai and numpy have their own metadata keys."""
    dists = set(_distributions(modules)) | (set(declared) - OWN_KEYS - {"pytorch"})
    return {d: pinned_version(d, importlib.metadata.version(d)) for d in sorted(dists)}


def _config_modules(configs: Iterable[Any]) -> set[str]:
    """Top-level modules the configs import themselves (``$import x``, ``_target_: x.y``)."""
    text = json.dumps(list(configs))
    mods = set(re.findall(r"\$import ([A-Za-z_]\w*)", text))
    mods |= set(re.findall(r'"_target_": "([A-Za-z_]\w*)\.', text))
    return {m for m in mods - {"shared_components", "scripts"} if not vendor._stdlib(m)}


def unsupported_pins(pins: dict[str, str]) -> list[str]:
    """Pins whose installed distribution declares a ``Requires-Python`` that excludes one of :data:`PYTHONS` (only
    checkable for a pin equal to the installed version: a lowered pin comes from :data:`PY310_NEWEST`)."""
    from packaging.specifiers import SpecifierSet

    bad = []
    for dist, version in pins.items():
        meta = importlib.metadata.metadata(dist)
        if meta["Version"].split("+")[0] != version or not meta["Requires-Python"]:
            continue
        spec = SpecifierSet(meta["Requires-Python"])
        missing = [py for py in PYTHONS if not spec.contains(f"{py}.0")]
        if missing:
            bad.append(f"{dist}=={version} (Requires-Python {spec}: not {', '.join(missing)})")
    return bad


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
    large_files: str | None = None,
) -> ExportResult:
    """Export ``bundle_dir`` to ``out_dir/<zoo name>`` (and ``out_dir/<zoo name>_v<version>.zip``), then run the
    zoo's offline checks on it without ``shared_components`` (``result.checks``; ``result.ok``).

    ``models/model.ts`` and ``models/model.onnx`` are written in that same isolated run and shipped only when they
    reproduce the eager network. ``untrained=True`` ships the initialised network when the bundle has no
    ``models/model.pt`` (to test the export of bundles not trained yet; metadata and README say so). With
    ``large_files=URL_BASE`` the weights go to ``out_dir/<zoo name>_v<version>_large_files/`` (to upload to
    ``URL_BASE``) and ``large_files.yml`` lists them (path, url, hash_val, hash_type), as zoo bundles do. The folder
    is built in a temporary sibling and moved into place at the end, so a failed export never leaves half a bundle.
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
    if large_files is not None and not re.match(r"^[a-z][a-z0-9+.-]*://", str(large_files)):
        raise ValueError(f"--large_files needs the URL the weights will be downloaded from, got {large_files!r}.")
    name = name or zoo_name(src.name, bundle_task(src))
    out_dir = Path(out_dir).resolve()
    dest = export_dest(out_dir, name)
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} exists; pass --overwrite to replace it.")
    with atomic_dir(dest) as tmp:
        result = _build(src, tmp, name, config_format, torchscript, onnx, data_root, large_files)
        if large_files is not None:
            uploads = out_dir / f"{name}_v{result.version}_large_files"
            with atomic_dir(uploads) as staging:
                _move_large_files(tmp, staging, str(large_files), f"{name}_v{result.version}_")
            result.large_files = uploads
    result.path = dest
    if make_zip:
        result.zip = zip_bundle(dest, out_dir / f"{name}_v{result.version}.zip")
    return result


def _build(
    src: Path, dest: Path, name: str, config_format: str, torchscript: bool, onnx: bool, data_root: str, large: Any
) -> ExportResult:
    meta = json.loads((src / "configs" / "metadata.json").read_text())
    result = ExportResult(path=dest, name=name, version=str(meta.get("version", "")))
    ext = "json" if config_format == "json" else "yaml"

    # configs: repository paths -> bundle/zoo paths, then collect what they use from shared_components
    datalists: set[str] = set()
    configs: dict[str, Any] = {}
    for path in sorted((src / "configs").iterdir()):
        if path.suffix in (".yaml", ".yml", ".json") and path.name != "metadata.json":
            rewritten = _map_strings(_read_config(path), lambda v: _rewrite_paths(v, data_root, datalists))
            configs[path.stem] = rewritten
    if len(datalists) > 1:
        raise ValueError(f"{src} uses several shipped datalists {sorted(datalists)}; the export ships one.")
    if _without_deep_supervision(configs):
        result.deep_supervision_dropped = True
        result.notes.append("inference network built without its deep-supervision heads (so it scripts)")
    references = vendor.config_references(json.dumps(c) for c in configs.values())
    vendored = vendor.vendor(references, dest, package="scripts", bundle=name)
    result.vendored = sorted(str(p.relative_to(dest)) for p in vendored.files.values())

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

    # models: the trained weights, or the initialised network (seeded) for an untrained export
    (dest / "models").mkdir()
    parser = ConfigParser()
    parser.read_config(src / "configs" / "inference.yaml")
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    result.network = type(network).__name__
    if (src / "models" / "model.pt").is_file():
        state = torch.load(src / "models" / "model.pt", map_location="cpu", weights_only=True)
    else:
        state = network.state_dict()
        result.trained = False
    if result.deep_supervision_dropped:  # the shipped weights are those of the inference network
        if not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(
                f"{src}/models/model.pt is not a plain state dict; cannot drop its deep-supervision heads."
            )
        state = runtime.inference_state(state)
    if result.deep_supervision_dropped or not result.trained:
        torch.save(state, dest / "models" / "model.pt")
    else:
        shutil.copy(src / "models" / "model.pt", dest / "models" / "model.pt")
    if not result.trained:
        result.notes.append("untrained: models/model.pt holds the initialised network (seed 0)")
    members = src / MEMBERS_DIR
    if members.is_dir():  # a cross-model ensemble: inference averages these with models/model.pt
        shutil.copytree(members, dest / MEMBERS_DIR)

    # metadata: pins of what the exported code imports, MONAI Label support, a description of what ships
    declared = {*(meta.get("required_packages_version") or {}), *(meta.get("optional_packages_version") or {})}
    modules = vendored.third_party | _config_modules(configs.values())
    meta["numpy_version"] = pinned_version("numpy", importlib.metadata.version("numpy"))
    meta["required_packages_version"] = package_pins(modules, declared)
    meta.pop("optional_packages_version", None)  # deprecated (MONAI warns on every run); the 20240725 schema drops it
    meta["supported_apps"] = dict(SUPPORTED_APPS)
    meta["description"] = export_description(meta.get("description", ""), result.trained, ext)
    if not result.trained:
        meta["eval_metrics"] = {}
    (dest / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4) + "\n")

    # docs, licence
    shutil.copytree(src / "docs", dest / "docs", ignore=shutil.ignore_patterns(*SKIPPED_DIRS))
    shutil.copy(src / "LICENSE", dest / "LICENSE")
    for path in [dest / "LICENSE", *(dest / "docs").rglob("*")]:
        if path.is_file():
            path.chmod(0o644)  # the zoo's pre-commit refuses executables without a shebang

    # TorchScript/ONNX and the zoo's checks, in one subprocess that cannot import shared_components
    kinds = [k for k, on in (("ts", torchscript), ("onnx", onnx)) if on]
    result.checks, result.exports = isolation.verify_export(dest, export=kinds)
    pins = {"torch": meta["pytorch_version"], "monai": meta["monai_version"], "numpy": meta["numpy_version"]}
    bad = unsupported_pins({**pins, **meta["required_packages_version"]})
    detail = f"install on Python {', '.join(PYTHONS)} (their Requires-Python)"
    if bad:
        detail = f"{bad}: add the newest release that installs on {PYTHONS[0]} to PY310_NEWEST in {__name__}"
    result.checks.append(isolation.Check("metadata pins", not bad, "error", detail))
    result.torchscript = result.exports.get("ts", {}).get("ok", False)
    result.onnx = result.exports.get("onnx", {}).get("ok", False)
    for info in result.exports.values():
        if not info.get("ok"):
            result.notes.append(f"{info['file']} not shipped: {info.get('detail', '')[:300]}")
    readme = (src / "docs" / "README.md").read_text()
    (dest / "docs" / "README.md").write_text(export_readme(readme, src.name, dest, result, ext, data_root, large))
    return result


def export_description(description: str, trained: bool, ext: str = "json") -> str:
    """The metadata description of an export: config names in its format, and what its weights are."""
    description = description.replace(UNTRAINED_NOTE, "").strip()
    if not trained:
        description += (
            " UNTRAINED EXPORT: models/model.pt holds the initialised network (seed 0), only to test the export; "
            f"train with `python -m monai.bundle run --config_file configs/train.{ext}` (see docs/README.md)."
        )
    return re.sub(r"configs/(\w+)\.yaml", rf"configs/\1.{ext}", description).strip()


def _sections(readme: str) -> tuple[str, str, dict[str, str]]:
    """A Markdown README as (title line, text before the first ``##`` heading, {heading: body})."""
    lines = readme.strip().splitlines()
    title = lines[0] if lines and lines[0].startswith("# ") else "# Model Zoo bundle"
    intro: list[str] = []
    sections: dict[str, list[str]] = {}
    current = intro
    for line in lines[1:] if lines and lines[0].startswith("# ") else lines:
        if line.startswith("## "):
            current = sections.setdefault(line[3:].strip(), [])
        else:
            current.append(line)
    return title, "\n".join(intro).strip(), {k: "\n".join(v).strip() for k, v in sections.items()}


def _paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


def _for_export(text: str, ext: str, data_root: str, datalist: bool = False) -> str:
    """Bundle README text as it holds for the export: its config format, the zoo's data folder, the shipped
    ``configs/datalist.json`` (when ``datalist``), no paragraph that needs this repository (the export runs without
    it)."""
    text = re.sub(r"configs/(\w+)\.yaml", rf"configs/\1.{ext}", text)
    if datalist:
        text = re.sub(r"`shared_components/datalists/[^`]+\.json`", f"`{DATALIST}`", text)
    text = re.sub(
        r"`\$SEG_DATA_DIR/([^`]+)`(,\s+default\s+`\.\./shared/data`\s+next\s+to\s+the\s+repository)?",
        rf"`{data_root}/\1` (`--dataset_dir` to change it)",
        text,
    )
    keep = []
    for p in _paragraphs(text):
        if p.startswith(README_UNTRAINED) or re.search(r"pip install -e|shared_components/|new_bundle\.py", p):
            continue
        keep.append(p.replace("`shared_components` package", "collection's code (vendored in `scripts/`)"))
    return "\n\n".join(keep)


def _size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 2**10:.0f} KB"


def export_readme(
    readme: str, source: str, dest: Path, result: ExportResult, ext: str, data_root: str, large: str | None = None
) -> str:
    """``docs/README.md`` of an export: the bundle's title and overview, then what exactly this folder ships
    (weights, formats, configs, data, code), the commands, and the bundle's own sections that hold for the export
    (model, data, training configuration, performance of trained weights, references, licence)."""
    title, intro, sections = _sections(readme)
    configs = sorted(p.name for p in (dest / "configs").iterdir() if p.is_file())
    train = json.loads((dest / "configs" / f"train.{ext}").read_text()) if ext == "json" else {}
    ts, onnx = result.exports.get("ts", {}), result.exports.get("onnx", {})
    weights = "trained weights (see *Performance*)" if result.trained else "initialised weights, NOT TRAINED"
    pt = dest / "models" / "model.pt"
    members = sorted((dest / MEMBERS_DIR).glob("*.json"))
    lines = (
        [
            f"- `{MEMBERS_DIR}/`: the networks (`<name>.json`) and weights (`<name>.pt`) of "
            f"{', '.join(m.stem for m in members)}, whose probabilities `inference` averages with `network_def`'s "
            "(a cross-model ensemble; MONAI Label and `models/model.ts` serve `network_def` alone)."
        ]
        if members
        else []
    )
    lines += [
        f"- `models/model.pt`: PyTorch state dict of `network_def`, {weights}, {_size(pt)}."
        + (
            " The network trains with deep supervision, whose extra output heads serve training only: this file "
            "holds the network without them and the inference config builds it without them "
            "(`network_def#deep_supervision: false`, which also makes it script); every config loads checkpoints "
            "with or without the heads (a new training run's into inference, these weights into training or "
            "evaluation)."
            if result.deep_supervision_dropped
            else ""
        )
    ]
    if not result.trained:
        lines.append(
            "  This is an **untrained export**: the weights are the network's initialisation (seed 0), shipped "
            "only to test the export; they segment nothing. Train it (below) before use."
        )
    if result.torchscript:
        detail = "scripted" if ts.get("method") == "scripted" else ts.get("method", "")
        lines.append(f"- `models/model.ts`: TorchScript, {detail}; gives the eager outputs.")
    elif ts:
        lines.append("- no `models/model.ts`: this network does not export to TorchScript.")
    if result.onnx:
        lines.append(f"- `models/model.onnx`: ONNX, {onnx.get('method', '')}; onnxruntime gives the eager outputs.")
    elif onnx:
        lines.append("- no `models/model.onnx`: this network does not export to ONNX.")
    if large:
        lines.append(
            "- the weight files are not in this folder: `large_files.yml` lists them (URL, SHA-256); get them with "
            "`python -m monai.bundle download_large_files --bundle_path .`"
        )
    lines.append(f"- configs: {', '.join(f'`configs/{c}`' for c in configs)}.")
    datalist = train.get("datalist", "")
    if (dest / DATALIST).is_file():
        lines.append(
            f"- data: the dataset folder is `--dataset_dir` (default `{train.get('dataset_dir', data_root)}`); "
            f"`{DATALIST}` is the training split with its fixed folds (paths relative to the dataset folder); "
            "`--datalist FILE` uses another."
        )
    else:
        where = re.sub(r"^\$@dataset_dir \+ '/?([^']*)'$", r"<dataset_dir>/\1", str(datalist))
        lines.append(
            f"- data: the dataset folder is `--dataset_dir` (default `{train.get('dataset_dir', data_root)}`); the "
            f"datalist is not shipped (it lists your copy of the data): the configs read `{where}`, made as in "
            "*Data* below with the monai-seg-bundles repository, or pass `--datalist FILE`."
        )
    lines.append(
        f"- code: `scripts/` ({len(result.vendored)} files), the monai-seg-bundles code the configs use, vendored "
        "(`$import scripts`): the bundle needs only the packages in `configs/metadata.json`."
    )
    docs = sorted(str(p.relative_to(dest)) for p in (dest / "docs").rglob("*") if p.is_file())
    lines.append(f"- docs: {', '.join(f'`{d}`' for d in docs)}; `LICENSE`.")
    zoo_ci = []
    if ts and ts.get("method") != "scripted":
        zoo_ci.append(
            f"- Model Zoo CI: `{result.network}` does not script, so the zoo's `ci/verify_bundle.py` needs this bundle "
            "in `exclude_verify_torchscript_list` of `ci/bundle_custom_data.py` (as for the zoo's own SwinUNETR "
            "bundle); `models/model.ts` is traced at the input shape of the metadata."
        )
    cmd = "python -m monai.bundle run --config_file"
    lines = [textwrap.fill(line, 118, subsequent_indent="  ", **NO_BREAKS) for line in lines]
    body = [
        title,
        "",
        _for_export(intro, ext, data_root),
        "",
        "## This Model Zoo bundle",
        "",
        textwrap.fill(
            f"Exported from the `{source}` bundle of the monai-seg-bundles collection by `scripts/export_bundle.py`. "
            "It runs from this folder with the stock MONAI CLI and ships:",
            118,
            **NO_BREAKS,
        ),
        "",
        *lines,
        "",
        "Commands (from this folder):",
        "",
        "```bash",
        f"{cmd} configs/train.{ext}  # train",
        f"{cmd} \"['configs/train.{ext}','configs/evaluate.{ext}']\"  # evaluate",
        f"{cmd} configs/inference.{ext} --input_data /path/to/images  # infer",
        f"torchrun --nproc_per_node=2 -m monai.bundle run --config_file \"['configs/train.{ext}',"
        f"'configs/multi_gpu_train.{ext}']\"",
        "```",
        "",
        textwrap.fill(
            f"MONAI Label (`supported_apps`: monai-label {MONAI_LABEL_VERSION}): copy this folder into a "
            f"`monaibundle` app's `model/` folder and start the server with `--conf models {result.name}`.",
            118,
            **NO_BREAKS,
        ),
        *(["", *(textwrap.fill(z, 118, subsequent_indent="  ", **NO_BREAKS) for z in zoo_ci)] if zoo_ci else []),
    ]
    for heading in ("Model overview", "Data", "Training configuration", "Performance", "References", "License"):
        text = sections.get(heading)
        if heading == "Performance" and not result.trained:
            text = (
                "None: this untrained export ships initialised weights and no metrics (`eval_metrics` in "
                "`configs/metadata.json` is empty). Train and evaluate it with the commands above."
            )
        if text:
            body += ["", f"## {heading}", "", _for_export(text, ext, data_root, (dest / DATALIST).is_file())]
    return "\n".join(body).rstrip() + "\n"


def _move_large_files(bundle: Path, uploads: Path, url_base: str, prefix: str) -> None:
    """Move the weight files out of ``bundle`` into ``uploads`` (named ``<prefix><file>``) and list them in
    ``bundle/large_files.yml`` with their URL under ``url_base`` and SHA-256."""
    entries = []
    for rel in [*WEIGHTS, *(p.relative_to(bundle).as_posix() for p in sorted((bundle / MEMBERS_DIR).glob("*.pt")))]:
        path = bundle / rel
        if not path.is_file():
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        target = prefix + path.name
        shutil.move(path, uploads / target)
        entries.append(
            f'- path: "{rel}"\n  url: "{url_base.rstrip("/")}/{target}"\n  hash_val: "{digest}"\n  hash_type: "sha256"\n'
        )
    (bundle / "large_files.yml").write_text("large_files:\n" + "".join(entries))


def zip_bundle(bundle: str | Path, zip_path: str | Path) -> Path:
    """Zip a bundle folder as the zoo ships it (``<name>/...`` inside), written atomically."""
    bundle, zip_path = Path(bundle), Path(zip_path)
    with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(bundle.rglob("*")):
            if path.is_file() and not SKIPPED_DIRS.intersection(path.relative_to(bundle).parts):
                zf.write(path, Path(bundle.name) / path.relative_to(bundle))
    return zip_path
