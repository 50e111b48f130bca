"""Evaluate a trained bundle on new labelled data in one command (``segbundles evaluate``).

The data are converted into a work folder with every case an evaluation case (``--folds 1``: fold 0), then the
bundle's own evaluation (``configs/train.yaml`` + ``configs/evaluate.yaml``, ``--fold 0``) runs through the stock
MONAI bundle CLI on its trained weights: the same per-case metrics in original geometry and the same tables as a
validation fold, for an MSD task, your own folders, any other converter layout, or an existing datalist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_CONVERTERS = "shared_components.data.converters"
LAYOUTS = {
    "msd": f"{_CONVERTERS}.msd:convert_msd",
    "folder": f"{_CONVERTERS}.folders:convert_folder",
    "lits": f"{_CONVERTERS}.lits:convert_lits",
    "abdomenct1k": f"{_CONVERTERS}.abdomenct1k:convert_abdomenct1k",
    "brats": f"{_CONVERTERS}.brats:convert_brats",
    "csv": f"{_CONVERTERS}.csv_table:convert_table",
}
LOG_FILE = "evaluate.log"


def detect_layout(data: str | Path) -> str:
    """``datalist`` for a ``.json`` file, ``csv`` for a ``.csv`` file, ``msd`` for a folder with ``dataset.json``,
    else ``folder`` (images and labels paired by name)."""
    data = Path(data)
    if data.is_file():
        return {".json": "datalist", ".csv": "csv"}.get(data.suffix.lower(), "folder")
    return "msd" if (data / "dataset.json").is_file() else "folder"


def evaluation_datalist(data: str | Path, out_dir: str | Path, layout: str = "auto", **options: Any) -> Path:
    """Write ``out_dir/datalist.json`` of the labelled cases in ``data``, every one in fold 0 (the evaluated fold).

    Args:
        data: the data (see :func:`evaluate_on_data`).
        out_dir: the work folder.
        layout: a converter name (``msd``, ``folder``, ...), ``datalist``, or ``auto`` (:func:`detect_layout`).
        **options: further options of the converter.
    """
    from shared_components.cli import _resolve
    from shared_components.data.datalist import load_datalist, save_datalist

    data, dst = Path(data).resolve(), Path(out_dir).resolve() / "datalist.json"
    layout = detect_layout(data) if layout == "auto" else layout
    if layout == "datalist":
        content = load_datalist(data)
        content["training"] = [{**e, "fold": 0} for e in content.get("training", []) if e.get("label")]
        content["dataset_dir"] = str(Path(content.get("dataset_dir") or data.parent).resolve())
        content.update(num_folds=1, fold_mode="kfold")
        return save_datalist(content, dst)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose auto, datalist or one of {', '.join(LAYOUTS)}.")
    return _resolve(LAYOUTS[layout])(data, dst, folds=1, **options)


def _header(bundle_dir: Path) -> dict[str, Any]:
    """The literal values of the bundle's ``train.yaml`` header (no MONAI needed)."""
    import yaml

    values = yaml.safe_load((bundle_dir / "configs" / "train.yaml").read_text()) or {}
    return {k: v for k, v in values.items() if not (isinstance(v, str) and v.startswith("$"))}


def _check_compatible(bundle_dir: Path, datalist: dict[str, Any]) -> None:
    """Refuse data whose channels or classes differ from what the bundle was trained on."""
    header = _header(bundle_dir)
    channels, classes = header.get("num_channels"), header.get("num_classes")
    if isinstance(channels, int) and datalist.get("num_channels") not in (None, channels):
        raise ValueError(
            f"the data have {datalist['num_channels']} image channel(s), {bundle_dir.name} takes {channels}."
        )
    labels = datalist.get("labels") or {}
    if isinstance(classes, int) and not header.get("multilabel") and labels and len(labels) != classes:
        names = ", ".join(f"{k} {v}" for k, v in labels.items())
        raise ValueError(
            f"the data have {len(labels)} label values ({names}), {bundle_dir.name} predicts {classes} classes: "
            "map them with the converter's --select (folder layout) or use a datalist with a label_map."
        )


def evaluate_on_data(
    bundle: str,
    data: str,
    out: str | None = None,
    layout: str = "auto",
    checkpoint: str | None = None,
    save_predictions: bool = False,
    **options: Any,
) -> Path:
    """Evaluate a trained bundle on new labelled data: per-case Dice, HD95, surface distance.

    The data are converted (every case an evaluation case) into ``out``, then the bundle's evaluation runs through
    the stock MONAI bundle CLI (``['configs/train.yaml','configs/evaluate.yaml'] --fold 0``) on its trained
    weights. Prints the summary table and where the tables went.

    Args:
        bundle: a bundle name under ``bundles/`` or a bundle folder.
        data: labelled data: an MSD task folder (``dataset.json``), a folder of images and labels (the ``folder``
            converter's layouts), a GaNDLF-style CSV, a datalist JSON, or any layout named by ``--layout``.
        out: the work folder (default: ``work/evaluate/<bundle>_<data folder>``).
        layout: ``auto`` (from ``data``), ``datalist``, or a converter: ``msd``, ``folder``, ``lits``,
            ``abdomenct1k``, ``brats``, ``csv``.
        checkpoint: the weights to evaluate (default: the bundle's ``models/model.pt``).
        save_predictions: also write the predicted label maps (original geometry) to ``<out>/eval/predictions``.
        **options: converter options, e.g. ``--images imagesTr --labels labelsTr --modality T1`` (folder layout).
    """
    from shared_components.bundle.runner import EVALUATE, output_overrides, run_bundle
    from shared_components.data.datalist import describe, load_datalist
    from shared_components.evaluation.report import CASES, PER_CASE, SUMMARY_CSV
    from shared_components.experiments.runs import resolve_bundle

    bundle_dir = resolve_bundle(bundle)
    weights = Path(checkpoint).resolve() if checkpoint else bundle_dir / "models" / "model.pt"
    if not weights.is_file():
        raise FileNotFoundError(
            f"{weights} not found: {bundle_dir.name} has no trained weights; train it first or pass --checkpoint."
        )
    data_path = Path(data).resolve()
    if not data_path.exists():
        raise FileNotFoundError(
            f"{data_path} not found: give an MSD task folder, a folder of images and labels, a CSV or a datalist."
        )
    out_dir = Path(out or Path("work") / "evaluate" / f"{bundle_dir.name}_{data_path.stem}").resolve()
    datalist = evaluation_datalist(data_path, out_dir, layout, **options)
    content = load_datalist(datalist)
    n = len(content.get("training", []))
    if n == 0:
        raise ValueError(f"no labelled cases in {data_path}: evaluation needs a label for every case.")
    _check_compatible(bundle_dir, content)
    print(f"[1/2] datalist {datalist} ({n} labelled cases, all evaluated as fold 0)\n{describe(content)}")
    overrides = {
        **output_overrides(out_dir),
        "dataset_dir": content.get("dataset_dir") or str(data_path),
        "datalist": str(datalist),
        "fold": 0,
        "eval_checkpoint": str(weights),
        "save_predictions": save_predictions,
    }
    log = out_dir / LOG_FILE
    print(f"[2/2] evaluating {bundle_dir.name} ({weights}) on the {n} cases; log: {log}")
    seconds = run_bundle(bundle_dir, EVALUATE, overrides, log_file=log)
    eval_dir = out_dir / "eval"
    print(f"      done in {seconds:.0f} s\n")
    print(_summary(eval_dir))
    tables = [
        (PER_CASE, "Dice, HD95, mean surface distance, surface Dice per case and class"),
        (f"{SUMMARY_CSV}, .json", "mean, std, median and 95% CI per class"),
        (CASES, "image, label and prediction files, spacing, seconds per case"),
    ]
    if save_predictions:
        tables.append(("predictions/", "the predicted label maps, in each image's original geometry"))
    print(f"\ntables in {eval_dir}:\n" + "\n".join(f"  {k:<28} {v}" for k, v in tables))
    return eval_dir


def _summary(eval_dir: Path) -> str:
    """The summary table and the mean foreground Dice line."""
    import pandas as pd

    from shared_components.evaluation.report import MEAN_CLASS, SUMMARY_CSV, summary_markdown

    df = pd.read_csv(eval_dir / SUMMARY_CSV)
    row = df[(df["group"] == "all") & (df["class"] == MEAN_CLASS) & (df["metric"] == "dice")]
    dice = f"\n\nmean foreground Dice: {float(row['mean'].iloc[0]):.3f}" if len(row) else ""
    return summary_markdown(df) + dice
