"""MLflow tracking of bundle runs: one MLflow run per run record (``run.json`` of ``train_and_evaluate``) with its
settings as parameters, its summary metrics and costs as metrics and its learning curve as per-epoch metrics, in a
SQLite store (``<store>/mlruns.db``, artifacts in ``<store>/mlruns``)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from shared_components.evaluation.report import SUMMARY_JSON

DB = "mlruns.db"
COST_METRICS = (
    "train_seconds",
    "eval_seconds",
    "epochs",
    "seconds_per_epoch",
    "inference_seconds_per_case",
    "train_peak_ram_mb",
    "train_peak_vram_mb",
    "eval_peak_ram_mb",
    "eval_peak_vram_mb",
)


def use_experiment(store: str | Path, experiment: str) -> None:
    """Point MLflow at the SQLite store in ``store`` and at ``experiment`` (created with its artifacts there)."""
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(f"sqlite:///{store / DB}")
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=(store / "mlruns").as_uri())
    mlflow.set_experiment(experiment)


def run_params(rec: Mapping[str, Any]) -> dict[str, Any]:
    """Bundle, fold, status, parameter count and every config override (``override.<key>``) of a run record."""
    params = {
        "bundle": rec["bundle"],
        "fold": rec["fold"],
        "status": rec["status"],
        "parameters": rec.get("parameters"),
    }
    params.update({f"override.{k}": v for k, v in rec.get("overrides", {}).items()})
    return params


def run_metrics(rec: Mapping[str, Any], run_dir: Path) -> dict[str, float]:
    """The finite costs of a run record and, for a finished run, the mean of each ``<metric>_<class>`` over the
    validation cases (from ``eval/metrics_summary.json``)."""
    metrics: dict[str, float] = {}
    for key in COST_METRICS:
        if isinstance(rec.get(key), int | float) and math.isfinite(rec[key]):
            metrics[key] = float(rec[key])
    summary = Path(run_dir) / "eval" / SUMMARY_JSON
    if rec["status"] == "done" and summary.is_file():
        for cls, per_metric in json.loads(summary.read_text())["summary"]["all"].items():
            for metric, s in per_metric.items():
                if s.get("mean") is not None:
                    metrics[f"{metric}_{cls}"] = float(s["mean"])
    return metrics


def log_run(store: str | Path, experiment: str, rec: Mapping[str, Any], run_dir: Path, run_name: str) -> None:
    """Log the run record ``rec`` of ``run_dir`` as the MLflow run ``run_name`` of ``experiment`` in ``store``:
    parameters, metrics, tags ``status``/``run_dir`` (and ``error``), and ``logs/history.csv`` as
    ``epoch_<column>`` per-epoch metrics."""
    import mlflow

    use_experiment(store, experiment)
    run_dir = Path(run_dir)
    params, metrics = run_params(rec), run_metrics(rec, run_dir)
    with mlflow.start_run(run_name=run_name):
        mlflow.set_tags({"status": rec["status"], "run_dir": str(run_dir)})
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        if rec.get("error"):
            mlflow.set_tag("error", str(rec["error"])[-4000:])
        mlflow.log_metrics(metrics)
        history = run_dir / "logs" / "history.csv"
        if history.is_file():
            h = pd.read_csv(history)
            for r in h.to_dict("records"):
                step = {k: float(v) for k, v in r.items() if k != "epoch" and isinstance(v, int | float) and v == v}
                mlflow.log_metrics({f"epoch_{k}": v for k, v in step.items()}, step=int(r["epoch"]))
