"""MLflow tracking of bundle runs: one MLflow run per run record (``run.json`` of ``train_and_evaluate``) with its
settings as parameters, its summary metrics and costs as metrics and its learning curve as per-epoch metrics, in a
SQLite store (``<store>/mlruns.db``, artifacts in ``<store>/mlruns``) or at a tracking URI; :class:`LiveRun` logs one
Optuna trial while its bundle run trains."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import re
import time
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


def mlflow_key(key: str) -> str:
    """A parameter or metric name MLflow accepts: a config id's ``#`` (and any other character it refuses) as ``/``."""
    return re.sub(r"[^\w\-. :/]", "/", str(key))


def tracking_uri(store: str | Path) -> str:
    """An MLflow tracking URI: ``store`` itself when it is one (``postgresql://...``, ``http://host:5000``), else the
    SQLite store in the folder ``store`` (created, its tables made by one process at a time)."""
    if "://" in str(store):
        return str(store)
    Path(store).mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{Path(store).resolve() / DB}"
    _create_tables(uri, str(Path(store).resolve() / f"{DB}.lock"))
    return uri


@functools.cache
def _create_tables(uri: str, lock: str) -> None:
    """Let MLflow create (migrate) a SQLite store's tables under an exclusive file lock: workers of one study that
    open a new store at the same moment otherwise race in its migrations (``duplicate column name``)."""
    from mlflow.tracking import MlflowClient

    with open(lock, "a") as f, _exclusive(f):
        MlflowClient(uri).search_experiments(max_results=1)


@contextlib.contextmanager
def _exclusive(f: Any) -> Any:
    try:
        import fcntl
    except ImportError:  # Windows: no lock (one worker per store there)
        yield
        return
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)


def _artifacts(store: str | Path) -> str | None:
    return None if "://" in str(store) else (Path(store).resolve() / "mlruns").as_uri()


def use_experiment(store: str | Path, experiment: str) -> None:
    """Point MLflow at the store ``store`` (a folder holding ``mlruns.db``, or a tracking URI) and at
    ``experiment`` (created, with a folder store's artifacts in it)."""
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri(store))
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=_artifacts(store))
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
        mlflow.log_params({mlflow_key(k): str(v)[:500] for k, v in params.items()})
        if rec.get("error"):
            mlflow.set_tag("error", str(rec["error"])[-4000:])
        mlflow.log_metrics(metrics)
        history = run_dir / "logs" / "history.csv"
        if history.is_file():
            h = pd.read_csv(history)
            for r in h.to_dict("records"):
                step = {k: float(v) for k, v in r.items() if k != "epoch" and isinstance(v, int | float) and v == v}
                mlflow.log_metrics({f"epoch_{k}": v for k, v in step.items()}, step=int(r["epoch"]))


class LiveRun:
    """One MLflow run logged while its bundle run trains (an Optuna trial): parameters and tags at the start, each
    new ``history.csv`` row as ``epoch_<column>`` metrics at step ``epoch``, the outcome (tags, :func:`run_metrics`,
    status ``FINISHED``/``KILLED``/``FAILED``) at the end. A tracking problem is logged once and never raised."""

    def __init__(
        self, store: str | Path, experiment: str, run_name: str, params: Mapping[str, Any], tags: Mapping[str, Any]
    ):
        self.client, self.run_id = None, None
        try:
            from mlflow.tracking import MlflowClient

            logging.getLogger("mlflow").setLevel(logging.WARNING)
            logging.getLogger("alembic").setLevel(logging.WARNING)
            self.client = MlflowClient(tracking_uri(store))
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                try:
                    exp_id = self.client.create_experiment(experiment, artifact_location=_artifacts(store))
                except Exception:  # another worker created it first
                    exp_id = self.client.get_experiment_by_name(experiment).experiment_id
            else:
                exp_id = exp.experiment_id
            self.run_id = self.client.create_run(
                exp_id, run_name=run_name, tags={k: str(v)[:5000] for k, v in tags.items()}
            ).info.run_id
            for k, v in params.items():
                self.client.log_param(self.run_id, mlflow_key(k), str(v)[:500])
        except Exception as e:  # tracking must never stop a study
            self._off(e)

    def _off(self, e: Exception) -> None:
        first = (str(e).strip().splitlines() or [repr(e)])[0]
        logging.getLogger(__name__).warning("MLflow tracking off for this run: %s", first)
        self.client = None

    def log_epochs(self, rows: list[Mapping[str, Any]]) -> None:
        """Log history rows (``epoch`` plus numeric columns)."""
        if self.client is None:
            return
        from mlflow.entities import Metric

        try:
            now = int(time.time() * 1000)
            metrics = [
                Metric(mlflow_key(f"epoch_{k}"), float(v), now, int(r["epoch"]))
                for r in rows
                for k, v in r.items()
                if k != "epoch" and isinstance(v, int | float) and v == v
            ]
            for i in range(0, len(metrics), 500):
                self.client.log_batch(self.run_id, metrics=metrics[i : i + 500])
        except Exception as e:
            self._off(e)

    def finish(
        self,
        status: str,
        rec: Mapping[str, Any] | None = None,
        run_dir: Path | None = None,
        tags: Mapping | None = None,
    ) -> None:
        """End the run: ``status`` FINISHED, KILLED (pruned) or FAILED, with tags and the run's final metrics."""
        if self.client is None:
            return
        try:
            for k, v in (tags or {}).items():
                self.client.set_tag(self.run_id, k, str(v)[-4000:])
            if rec is not None and run_dir is not None:
                for k, v in run_metrics(rec, run_dir).items():
                    self.client.log_metric(self.run_id, mlflow_key(k), v)
            self.client.set_terminated(self.run_id, status=status)
        except Exception as e:
            self._off(e)
