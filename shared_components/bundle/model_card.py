"""``configs/metadata.json`` and ``docs/README.md`` of a new bundle, written from its dataset and model specs and
its train.yaml header (Model Zoo style: overview, data, training configuration, performance, commands, licence)."""

from __future__ import annotations

import functools
import importlib.metadata
import re
import textwrap
from pathlib import Path
from typing import Any

import yaml

from shared_components.bundle.layout import split_standard
from shared_components.training import registry

# the MONAI Label release the bundles are served with (scripts/monailabel_check.sh pins the same)
MONAI_LABEL_VERSION = "0.8.5"
SUPPORTED_APPS = {"monai-label": MONAI_LABEL_VERSION}
SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
AUTHORS = "MONAI segmentation bundles contributors"
PACKAGES = ("nibabel", "pytorch-ignite", "tensorboard")
# the end of an untrained bundle's metadata description (an export of the bundle replaces it with what it ships)
UNTRAINED_NOTE = (
    "No trained weights are shipped: train with `python -m monai.bundle run --config_file configs/train.yaml` "
    "(see docs/README.md)."
)
# how an untrained bundle's README says so (the paragraph an export drops: it ships weights)
README_UNTRAINED = "**No trained weights are shipped with this bundle**"
_SECTION = re.compile(r"^## .*$", re.M)


def section_span(readme: str, title: str) -> tuple[int, int]:
    """Start and end offsets of the ``## <title>`` section of a Markdown text (to the next ``## `` heading)."""
    start = readme.find(f"## {title}")
    if start < 0:
        raise ValueError(f"the model card has no '## {title}' section.")
    nxt = _SECTION.search(readme, start + len(title) + 3)
    return start, nxt.start() if nxt else len(readme)


def _description(kind: str, name: str, unknown: str | None = None) -> str:
    """The registry's one-line description of preset ``name`` of ``kind`` (``unknown``, else the name, if none)."""
    try:
        return registry.get(kind, name).description
    except ValueError:
        return str(name) if unknown is None else unknown


def _version(package: str) -> str:
    return importlib.metadata.version(package).split("+")[0]


def _size(values: list[Any]) -> str:
    return "x".join(str(v) for v in values)


def wrap_markdown(text: str, width: int = 118) -> str:
    """Re-wrap the prose paragraphs of a Markdown text (not headings, lists, tables or code blocks)."""
    out: list[str] = []
    para: list[str] = []
    fenced = False

    def flush() -> None:
        if para:
            out.extend(textwrap.wrap(" ".join(para), width, break_on_hyphens=False, break_long_words=False))
            para.clear()

    for line in text.splitlines():
        if line.startswith("```"):
            flush()
            fenced = not fenced
            out.append(line)
        elif fenced or not line.strip() or line.lstrip().startswith(("#", "|", "- ", "![")):
            flush()
            out.append(line)
        else:
            para.append(line.strip())
    flush()
    return "\n".join(out) + "\n"


def _count_parameters(bundle: Path) -> int:
    """Parameters of the bundle's ``network_def`` (built from its train.yaml on the CPU)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(bundle / "configs" / "train.yaml")
    parser["bundle_root"] = str(bundle)
    parser["device"] = "$torch.device('cpu')"
    net = parser.get_parsed_content("network_def")
    return sum(p.numel() for p in net.parameters())


def describe_preprocessing(args: dict[str, Any]) -> str:
    """One line saying what the deterministic preprocessing does."""
    parts = []
    if args.get("orientation"):
        parts.append(f"orientation {args['orientation']}")
    pixdim = args.get("pixdim")
    parts.append(f"resampled to {_size(pixdim)} mm" if pixdim else "no resampling (native spacing)")
    if args.get("label_map"):
        parts.append(f"label values remapped {args['label_map']}")
    if args.get("regions"):
        regions = ", ".join(f"{k} = {{{', '.join(str(v) for v in vals)}}}" for k, vals in args["regions"].items())
        parts.append(f"labels turned into overlapping regions {regions}")
    intensity = args.get("intensity")
    kind = intensity.get("kind") if isinstance(intensity, dict) else intensity
    if kind == "ct":
        parts.append(f"CT window [{intensity['a_min']}, {intensity['a_max']}] HU scaled to [0, 1]")
    elif kind == "ct_zscore":
        parts.append(f"CT clipped to [{intensity['a_min']}, {intensity['a_max']}] HU, then dataset z-score")
    elif kind == "zscore":
        parts.append("z-score per channel over non-zero voxels")
    elif kind == "percentile":
        parts.append("intensities scaled between the 0.5th and 99.5th percentiles")
    if args.get("crop_foreground"):
        parts.append("cropped to the non-zero region (body or brain)")
    return ", ".join(parts) + "; cached"


def describe_sampling(patch: list[int], aug: dict[str, Any]) -> str:
    n = aug.get("num_samples", 1)
    if aug.get("sampling", "label") == "label":
        pos, neg = aug.get("pos_neg", [1, 1])
        return (
            f"pad to {_size(patch)}, then {n} patch(es) of {_size(patch)} per image, centred on foreground and "
            f"background voxels in the ratio {pos}:{neg}"
        )
    return f"pad to {_size(patch)} and crop {n} random {_size(patch)} patch(es) per image"


def describe_augmentation(aug: dict[str, Any]) -> str:
    flips = aug.get("flip_axes")
    axes = "" if flips is None else f" along axes {', '.join(str(a) for a in flips)}" if flips else " (none)"
    text = _description("augmentation", aug.get("augmentation", "default"), "see augmentation_args")
    return text.replace("mirroring", f"mirroring{axes}", 1) + f"; {augmented_where(aug)}"


def augmented_where(aug: dict[str, Any]) -> str:
    """Where the augmentation of ``augmentation_args`` runs, in the card's words."""
    where = {
        "sample": "each patch in the data loader's workers (`augmentation_args#mode` `sample`)",
        "batch": "the collated batch on the training device (`augmentation_args#mode` `batch`)",
    }.get(aug.get("mode", "sample"), f"`augmentation_args#mode` {aug.get('mode')}")
    return f"applied to {where}"


class ModelCard:
    """Metadata and README of a bundle made from a dataset and a model spec (see ``scaffold.create``)."""

    def __init__(self, bundle: str | Path, dataset: dict[str, Any], model: dict[str, Any]):
        self.bundle = Path(bundle)
        self.ds, self.md = dataset, model
        self.di, self.mi = dataset["info"], model["info"]
        header, _ = split_standard((self.bundle / "configs" / "train.yaml").read_text())
        self.config = yaml.safe_load(header)

    @functools.cached_property
    def params(self) -> int:
        """Parameters of the bundle's network (instantiated: needs torch and MONAI)."""
        return _count_parameters(self.bundle)

    # ---- facts shared by metadata and README
    @property
    def multilabel(self) -> bool:
        return bool(self.config.get("multilabel"))

    @property
    def name(self) -> str:
        return f"{self.di.get('short', self.ds['name'])} segmentation ({self.mi['title']})"

    def params_text(self) -> str:
        return f"{self.params / 1e6:.2f} M" if self.params >= 1e5 else f"{self.params:,}"

    def pred_classes(self) -> str:
        labels = self.di["labels"]
        if self.multilabel:
            return f"{len(labels)} channels (sigmoid, overlapping regions): " + ", ".join(
                f"{i} {n}" for i, n in enumerate(labels)
            )
        return f"{len(labels)} channels (softmax): " + ", ".join(f"{i} {n}" for i, n in enumerate(labels))

    def packages(self) -> dict[str, str]:
        names = sorted({*PACKAGES, *self.mi.get("packages", [])})
        return {n: _version(n) for n in names}

    # ---- metadata.json
    def metadata(self) -> dict[str, Any]:
        c = self.config
        patch = list(c["patch_size"])
        packages = self.packages()
        modality = self.di["modality"]
        return {
            "schema": SCHEMA,
            "version": "0.1.0",
            "changelog": {"0.1.0": f"initial release: {self.mi['title']} for {self.di['title']}; no trained weights"},
            "monai_version": _version("monai"),
            "pytorch_version": _version("torch"),
            "numpy_version": _version("numpy"),
            "required_packages_version": packages,
            "supported_apps": dict(SUPPORTED_APPS),
            "name": self.name[0].upper() + self.name[1:],
            "task": self.di["task"],
            "description": (
                f"{self.mi['title']} ({self.params_text()} parameters) for {self.di['title']}: segments "
                f"{self.di['structure'].replace('**', '')}. {UNTRAINED_NOTE}"
            ),
            "authors": AUTHORS,
            "copyright": f"Copyright (c) {AUTHORS}",
            "data_source": self.di["data_source"],
            "data_type": "nibabel",
            "image_classes": self.di["image_classes"],
            "label_classes": self.di["label_classes"],
            "pred_classes": self.pred_classes(),
            "eval_metrics": {},
            "intended_use": "Research only: not for clinical use.",
            "references": list(self.di.get("references", [])) + list(self.mi.get("references", [])),
            "network_data_format": {
                "inputs": {
                    "image": {
                        "type": "image",
                        "format": "hounsfield" if modality == "CT" else "magnitude",
                        "modality": modality,
                        "num_channels": int(c["num_channels"]),
                        "spatial_shape": patch,
                        "dtype": "float32",
                        "value_range": [],
                        "is_patch_data": True,
                        "channel_def": {str(i): n for i, n in enumerate(self.di["channels"])},
                    }
                },
                "outputs": {
                    "pred": {
                        "type": "image",
                        "format": "segmentation",
                        "num_channels": int(c["num_classes"]),
                        "spatial_shape": patch,
                        "dtype": "float32",
                        "value_range": [0, 1],
                        "is_patch_data": True,
                        "channel_def": {str(i): n for i, n in enumerate(self.di["labels"])},
                    }
                },
            },
        }

    # ---- docs/README.md
    def loss_text(self) -> str:
        text = _description("loss", self.config["loss_name"])
        if self.multilabel:  # sigmoid regions: Dice over every region channel, binary cross-entropy
            text = text.replace("cross-entropy", "binary cross-entropy").replace("over the foreground classes", "")
            text = text.replace(" (batch Dice )", " (batch Dice)") + ", on each sigmoid region channel"
        return text

    def export_command(self) -> str:
        c = self.config
        cmd = (
            "python -m monai.bundle ckpt_export network_def --filepath models/model.ts --ckpt_file models/model.pt \\\n"
            "    --meta_file configs/metadata.json --config_file configs/inference.yaml"
        )
        if self.mi.get("export_args"):
            cmd += f" {self.mi['export_args']}"
        if self.mi.get("export_trace"):
            shape = [1, int(c["num_channels"]), *c["patch_size"]]
            cmd += f' \\\n    --use_trace True --input_shape "{shape}"'
        return cmd

    def readme_facts(self) -> list[str]:
        """What docs/README.md must say as the configs give it (whitespace aside): the inference window, where
        augmentation runs, the optimiser's settings, the datalist and export commands. A README that lacks one is stale
        (``new_bundle.py check`` lists it, ``sync`` rewrites it)."""
        aug = augmented_where(self.config.get("augmentation_args", {}))  # the preset's text needs the registry
        c = self.config
        optimiser = f"lr {c['learning_rate']}, weight decay {c['weight_decay']}, batch {c['batch_size']}"
        window = f"sliding window of {_size(c['patch_size'])} voxels"
        return [window, aug, optimiser, self.di["prepare"], self.export_command()]

    def refreshed_readme(self, current: str, trained: bool) -> str:
        """:meth:`readme`, keeping the Performance section of ``current`` when the bundle ships trained weights."""
        new = self.readme()
        if not trained:
            return new
        start, end = section_span(current, "Performance")
        return replace_performance(new, current[start:end])

    def readme(self) -> str:
        c, di, mi = self.config, self.di, self.mi
        patch = _size(c["patch_size"])
        aug = c.get("augmentation_args", {})
        dataset_dir = c["dataset_dir"]
        folder = dataset_dir.split("dataset_dir('")[-1].rstrip("')") if "dataset_dir('" in dataset_dir else "data"
        outputs = "sigmoid channels for overlapping regions" if self.multilabel else "softmax channels"
        discrete = (
            "thresholds each region at 0.5 and paints them back into one label map"
            if self.multilabel
            else "takes the arg-max"
        )
        small = di.get("model_size") == "small"
        hardware = (
            "sized to train on a CPU (small widths); the same network trains faster on a GPU with `--amp true`"
            if small
            else "sized for one GPU (AMP on by default when CUDA is available); on a CPU use smaller patches and widths"
        )
        references = "\n".join(f"- {r}" for r in [*di.get("references", []), *mi.get("references", [])])
        prepare_note = f"\n\n{di['prepare_note']}" if di.get("prepare_note") else ""
        note = f"\n\n{mi['note']}" if mi.get("note") else ""
        title = f"{di.get('short', self.ds['name'])} segmentation: {mi['title']}"
        optimiser = (
            f"{_description('optimizer', c['optimizer_name'])}, lr {c['learning_rate']}, weight decay "
            f"{c['weight_decay']}, batch {c['batch_size']}; {_description('scheduler', c['scheduler_name'])}"
        )
        length = (
            f"{c['max_epochs']} epochs, validation (whole images, sliding window) every {c['val_interval']} epochs; "
            "best validation checkpoint kept"
        )
        return wrap_markdown(f"""# {title[0].upper() + title[1:]}

Segments {di["structure"]}, with the {mi["title"]} ({self.params_text()} parameters). Bundle `{self.bundle.name}`
of the MONAI segmentation bundles collection: every model on every dataset, with the same data pipeline, so they
compare fairly.

{README_UNTRAINED}: `models/` is empty and `eval_metrics` in
`configs/metadata.json` is empty until you train it (see *Performance*).

## Model overview

{mi["description"]}{note}

Input: {int(c["num_channels"])} channel(s) ({", ".join(di["channels"])}); output: {int(c["num_classes"])} {outputs}
({", ".join(di["labels"])}). Inference runs a Gaussian-weighted sliding window of {patch} voxels (overlap
{c.get("sw_overlap", 0.5)}) over the whole image, {discrete}, and writes a label map in the input's original
geometry. TorchScript: {mi.get("torchscript", "scripts")}.

## Data

{di["description"]}

Make the datalist (fixed, seeded folds; paths relative to the dataset folder):

```bash
{di["prepare"]}
```{prepare_note}

## Training configuration

| | |
|---|---|
| preprocessing | {describe_preprocessing(c.get("preprocessing_args", {}))} |
| sampling | {describe_sampling(c["patch_size"], aug)} |
| augmentation | {describe_augmentation(aug)} |
| loss | {self.loss_text()} |
| optimiser | {optimiser} |
| length | {length} |
| hardware | {hardware} |

## Performance

Not trained yet: this bundle ships no weights and no measured metrics. Train fold {c.get("fold", 0)} (from this
folder, with the data in `$SEG_DATA_DIR/{folder}`, default `../shared/data` next to the repository):

```bash
python -m monai.bundle run --config_file configs/train.yaml
```

then measure the validation fold (per-case and mean Dice in `eval/`) and record the numbers here and in
`eval_metrics` of `configs/metadata.json`:

```bash
python -m monai.bundle run --config_file "['configs/train.yaml','configs/evaluate.yaml']"
```

## MONAI bundle commands

```bash
# train (override anything: fold, length, data location, loss/optimizer/scheduler presets, time budget)
python -m monai.bundle run --config_file configs/train.yaml --fold 1 --max_epochs 100 --dataset_dir /data/{folder}
python -m monai.bundle run --config_file configs/train.yaml --loss_name dice_focal --optimizer_name sgd \\
    --learning_rate 0.01 --scheduler_name poly
# each run writes runs/fold<F>_seed<S>/ (state, best weights, history); --resume true continues it after a stop,
# --promote true makes its best weights models/model.pt (written without it only when models/model.pt is missing)
# evaluate the fold's run (its best_model.pt; models/model.pt when there is no run) on the validation fold
python -m monai.bundle run --config_file "['configs/train.yaml','configs/evaluate.yaml']"
# infer: a folder, glob, file, list of files or datalist JSON -> label maps in predictions/ (original shape and affine)
python -m monai.bundle run --config_file configs/inference.yaml --input_data /path/to/images --output_dir preds
# multi-GPU (or multi-process CPU with gloo)
torchrun --nproc_per_node=2 -m monai.bundle run --config_file "['configs/train.yaml','configs/multi_gpu_train.yaml']"
# export to TorchScript
{self.export_command()}
```

The bundle needs the `shared_components` package of this repository (`pip install -e .` at its root).

## References

{references}

## License

Code: Apache-2.0 (`LICENSE`). Data and weights trained on it: see [`data_license.txt`](data_license.txt).
Research use only; not for clinical use.
""")


def replace_performance(readme: str, section: str) -> str:
    """``readme`` with ``section`` as its Performance section, and without the untrained-bundle paragraph."""
    start, end = section_span(readme, "Performance")
    paragraphs = readme[:start].split("\n\n")
    head = "\n\n".join(p for p in paragraphs if not p.startswith(README_UNTRAINED))
    return head.rstrip("\n") + "\n\n" + section + readme[end:]
