"""Cross-validation of one bundle: train and evaluate every fold with the stock bundle CLI (finished folds are
skipped), then ``cross_validation.md``/``.csv`` with per-fold and pooled results; optional fold-ensemble inference."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from shared_components.bundle.runner import INFER, run_bundle
from shared_components.data.datalist import load_datalist
from shared_components.data.datasets import inference_items
from shared_components.evaluation.formatting import fmt_num, is_number
from shared_components.evaluation.report import (
    MEAN_CLASS,
    PER_CASE,
    read_per_case,
    summary_markdown,
    with_case_means,
    write_csv,
    write_evaluation,
    write_text_atomic,
)
from shared_components.experiments.runs import bundle_values, parse_folds, resolve_bundle, train_and_evaluate

logger = logging.getLogger(__name__)

CV_CSV = "cross_validation.csv"
CV_MD = "cross_validation.md"
TABLE_METRICS = ("dice", "hd95", "nsd")


def fold_dir(out: Path, fold: int) -> Path:
    return Path(out) / f"fold_{fold}"


def cross_validate(
    bundle: str,
    folds: int | str | Sequence[int] = "0,1,2,3,4",
    out: str | None = None,
    max_epochs: int | None = None,
    time_budget: float | None = None,
    seed: int = 0,
    dataset_dir: str | None = None,
    datalist: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    save_predictions: bool = False,
    ensemble_input: str | Sequence[str] | None = None,
    force: bool = False,
) -> Path:
    """Cross-validate a bundle: train and evaluate each fold (resumable), pool the results.

    Args:
        bundle: bundle name under ``bundles/`` or a bundle folder.
        folds: folds to hold out, e.g. ``0,1,2,3,4``.
        out: output folder (default ``<bundle>/runs/cross_validation``); one ``fold_<k>/`` per fold.
        max_epochs: training epochs per fold (default: the bundle's own).
        time_budget: wall-time cap of each fold's training in minutes; epochs and LR schedule are fitted to it.
        seed: the seed of every fold.
        dataset_dir, datalist: data other than the bundle's default.
        overrides: further bundle config overrides (``{"batch_size": 4}``).
        save_predictions: keep each fold's validation predictions (original geometry) in its ``eval/predictions``.
        ensemble_input: images (folder, glob, file, list or datalist) to segment with the average of the fold
            models; written to ``out/ensemble``.
        force: retrain folds that already finished.
    """
    bundle_dir = resolve_bundle(bundle)
    folds = parse_folds(folds)
    out_dir = Path(out).resolve() if out else bundle_dir / "runs" / "cross_validation"
    common: dict[str, Any] = {"seed": seed, **(overrides or {})}
    if dataset_dir:
        common["dataset_dir"] = str(Path(dataset_dir).resolve())
    if datalist:
        common["datalist"] = str(Path(datalist).resolve())
    _check_folds(bundle_dir, folds, common)
    if ensemble_input is not None:
        inference_items(ensemble_input)  # missing images fail now, not after hours of training
    train: dict[str, Any] = {}
    if max_epochs is not None:
        train["max_epochs"] = int(max_epochs)
    if time_budget is not None:
        train["time_budget_minutes"] = float(time_budget)
    records = []
    bar = tqdm(folds, desc=f"cross-validation {bundle_dir.name}", unit="fold")
    for fold in bar:
        bar.set_postfix_str(f"fold {fold}")
        rec = train_and_evaluate(bundle_dir, fold_dir(out_dir, fold), fold, common, train, save_predictions, force)
        if rec["status"] != "done":
            tqdm.write(f"fold {fold} failed ({rec.get('failed_stage')}); see {fold_dir(out_dir, fold) / 'run.log'}")
        records.append(rec)
    write_cross_validation(out_dir, folds, bundle_dir.name)
    if ensemble_input is not None:
        done = [f for f, r in zip(folds, records, strict=True) if r["status"] == "done"]
        ensemble_inference(
            bundle_dir,
            [fold_dir(out_dir, f) / "models" / "model.pt" for f in done],
            ensemble_input,
            out_dir / "ensemble",
            common,
            out_dir / "ensemble.log",
        )
    return out_dir


def _check_folds(bundle_dir: Path, folds: list[int], overrides: Mapping[str, Any]) -> None:
    """Fail before any training when a requested fold is not in the datalist."""
    values = bundle_values(
        bundle_dir, ["datalist"], {k: v for k, v in overrides.items() if k in ("datalist", "dataset_dir")}
    )
    data = load_datalist(values["datalist"])
    present = sorted({int(e["fold"]) for e in data.get("training", []) if "fold" in e})
    missing = [f for f in folds if f not in present]
    if missing:
        raise ValueError(f"fold(s) {missing} not in {values['datalist']} (folds present: {present}).")


def write_cross_validation(out_dir: Path, folds: Sequence[int], name: str = "") -> pd.DataFrame:
    """Pool the folds' per-case metrics into ``out_dir`` (``metrics_per_case.csv`` and summaries) and write
    ``cross_validation.csv`` (one row per fold, plus ``pooled``) and ``cross_validation.md``."""
    from shared_components.experiments.runs import read_run

    rows, frames = [], []
    for fold in folds:
        d = fold_dir(out_dir, fold)
        rec = read_run(d)
        row: dict[str, Any] = {"fold": str(fold), "status": rec.get("status", "missing")}
        row.update({k: rec.get(k) for k in ("epochs", "seconds_per_epoch", "train_seconds")})
        if row["status"] == "done" and (d / "eval" / PER_CASE).is_file():
            df = read_per_case(d / "eval" / PER_CASE)
            frames.append(df)
            row.update(_means(df))
        rows.append(row)
    if frames:
        pooled = pd.concat(frames, ignore_index=True)
        summary = write_evaluation(out_dir, pooled, info={"folds": [int(f) for f in folds]})
        rows.append({"fold": "pooled", "status": "", **_means(pooled)})
    else:
        summary = None
    table = pd.DataFrame(rows)
    write_csv(out_dir / "cross_validation.csv", table)
    write_text_atomic(out_dir / CV_MD, _markdown(table, summary, name, folds))
    return table


def _means(df: pd.DataFrame) -> dict[str, float]:
    full = with_case_means(df)
    out: dict[str, Any] = {"cases": int(df[["case", "fold"]].drop_duplicates().shape[0])}
    for (cls, metric), v in full.groupby(["class", "metric"], sort=False)["value"]:
        out[f"{metric}_{cls}"] = float(v.mean())
    return out


def _markdown(table: pd.DataFrame, summary: pd.DataFrame | None, name: str, folds: Sequence[int]) -> str:
    classes = [c[len("dice_") :] for c in table.columns if c.startswith("dice_") and c != f"dice_{MEAN_CLASS}"]
    cols = [f"dice_{c}" for c in classes] + [f"{m}_{MEAN_CLASS}" for m in TABLE_METRICS]
    head = ["fold", "status", "cases", "epochs", "train min"] + [c.replace("_", " ") for c in cols]
    lines = [
        f"# Cross-validation: {name}",
        "",
        f"Folds {', '.join(map(str, folds))}; per-fold means over the validation cases (HD95 in mm).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in table.to_dict("records"):
        cells = [
            r["fold"],
            r.get("status", ""),
            fmt_num(r.get("cases"), 0),
            fmt_num(r.get("epochs"), 0),
            fmt_num(r["train_seconds"] / 60 if is_number(r.get("train_seconds")) else None, 1),
        ]
        cells += [fmt_num(r.get(c), 3) for c in cols]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if summary is not None:
        lines += ["", "## Pooled over all folds (mean [95% bootstrap CI] over cases)", "", summary_markdown(summary)]
    return "\n".join(lines) + "\n"


def ensemble_inference(
    bundle_dir: Path,
    checkpoints: Sequence[Path],
    input_data: str | Sequence[str],
    output_dir: Path,
    overrides: Mapping[str, Any] | None = None,
    log_file: Path | None = None,
) -> Path:
    """Segment ``input_data`` with the average of the ``checkpoints`` through the bundle's stock
    ``inference.yaml`` (its ``network`` replaced by a :class:`FoldEnsemble`, its checkpoint loader disabled)."""
    if not checkpoints:
        raise ValueError("No finished folds to ensemble.")
    paths = ", ".join(repr(str(Path(c).resolve())) for c in checkpoints)
    infer = {k: v for k, v in (overrides or {}).items() if k in ("dataset_dir",)}
    if isinstance(input_data, str) and os.path.exists(input_data):
        input_data = str(Path(input_data).resolve())
    infer.update(
        {
            "network": f"$shared_components.evaluation.FoldEnsemble(@network_def, [{paths}], @device, @multilabel)",
            "handlers#0#_disabled_": True,  # the CheckpointLoader: each member loaded its own weights
            "input_data": input_data,
            "output_dir": str(output_dir),
        }
    )
    run_bundle(bundle_dir, INFER, infer, log_file)
    return output_dir
