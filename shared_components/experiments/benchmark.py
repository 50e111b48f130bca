"""The benchmark: a grid of bundles x folds trained and evaluated under identical data, splits, seed and budget.

``run_benchmark`` trains/evaluates every (bundle, fold) into ``<out>/<dataset>/runs/<bundle>/fold_<k>/`` (resumable;
a failed run is recorded and the grid goes on), logs each run to MLflow (``runs/mlruns.db``, see :mod:`.tracking`)
and writes the leaderboard (:func:`.leaderboard.make_report`: ``leaderboard.md``/``.csv``, the pooled
``metrics_per_case.csv`` and ``plots/``). Any bundle with the template's run-folder overrides and evaluation tables
takes part: the segmentation bundles and the aneurysm detector (``aneurysm_mra_retinanet``) share one grid.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from shared_components.bundle.scaffold import SPECS_DIR
from shared_components.data.datalist import load_datalist
from shared_components.evaluation.froc import SUMMARY as FROC_SUMMARY
from shared_components.evaluation.report import MEAN_CLASS, SUMMARY_JSON, write_json
from shared_components.experiments.runs import (
    LOG_FILE,
    RUN_FILE,
    bundle_values,
    count_parameters,
    parse_folds,
    resolve_bundles,
    train_and_evaluate,
)
from shared_components.experiments.tracking import log_run
from shared_components.paths import CLI

logger = logging.getLogger(__name__)

SETTINGS = "benchmark.json"
RUNS = "runs"  # <out>/<dataset>/runs/: one folder per (bundle, fold) and the MLflow store
COMPARED = ("datalist", "dataset_dir", "seed", "max_epochs", "time_budget_minutes", "val_interval", "overrides")


def dataset_name(bundles: Sequence[Path]) -> str:
    """The dataset the bundles share: the longest dataset spec name prefixing each bundle name (else the name
    without its last ``_part``); bundles of different datasets cannot share a leaderboard."""
    specs = sorted((p.stem for p in (SPECS_DIR / "datasets").glob("*.yaml")), key=len, reverse=True)
    names = set()
    for b in bundles:
        names.add(next((s for s in specs if b.name.startswith(s + "_")), b.name.rsplit("_", 1)[0]))
    if len(names) > 1:
        raise ValueError(f"The bundles belong to different datasets {sorted(names)}: benchmark one dataset at a time.")
    return names.pop()


def machine() -> dict[str, Any]:
    """CPU cores, torch threads, GPU, platform and torch version, recorded with the benchmark's settings."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "platform": platform.platform(),
        "torch": torch.__version__,
    }


def command(settings: Mapping[str, Any]) -> str:
    """The command line that reproduces a benchmark."""
    args = [CLI, "benchmark", "run", "--bundles", ",".join(settings["bundles"])]
    args += ["--folds", ",".join(map(str, settings["folds"]))]
    for key, flag in (
        ("max_epochs", "max_epochs"),
        ("time_budget_minutes", "time_budget"),
        ("val_interval", "val_interval"),
    ):
        if settings.get(key) is not None:
            value = settings[key]
            args += [f"--{flag}", f"{value:g}" if isinstance(value, float) else str(value)]
    args += ["--seed", str(settings["seed"])]
    for key in ("datalist", "dataset_dir"):
        if settings.get(f"{key}_given"):
            args += [f"--{key}", settings[key]]
    if settings.get("overrides"):
        args += ["--overrides", json.dumps(settings["overrides"])]
    if settings.get("out") not in (None, "results"):
        args += ["--out", settings["out"]]
    if settings.get("infer_cases", 3) != 3:
        args += ["--infer_cases", str(settings["infer_cases"])]
    return shlex.join(args)


def run_benchmark(
    bundles: str | Sequence[str],
    folds: int | str | Sequence[int] = 0,
    max_epochs: int | None = None,
    time_budget: float | None = None,
    seed: int = 0,
    out: str = "results",
    name: str | None = None,
    dataset_dir: str | None = None,
    datalist: str | None = None,
    val_interval: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    save_predictions: bool = True,
    mlflow: bool = True,
    force: bool = False,
    report: bool = True,
    storage: str | None = None,
    infer_cases: int = 3,
) -> Path:
    """Train and evaluate every bundle on every fold with the same data, split, seed and budget, then report.

    Args:
        bundles: names, paths or globs, comma-separated (``hippocampus_mri_*``).
        folds: folds held out (each one run per bundle), e.g. ``0`` or ``0,1,2,3,4``.
        max_epochs: epochs per run (every bundle gets the same); ``None`` keeps each bundle's own schedule length.
        time_budget: training minutes per run; epochs and LR schedule are fitted to it (see ``TimeBudget``).
        seed: seed of every run.
        out: results root; the leaderboard goes to ``<out>/<dataset>/``.
        name: dataset name for the folder (default: from the bundle names).
        dataset_dir, datalist: data other than the bundles' default (must then be the same for all).
        val_interval: validation interval for all bundles (default: each bundle's own).
        overrides: further config overrides applied to every bundle (``{"batch_size": 4}``).
        save_predictions: keep validation predictions (needed for the overlay figures).
        mlflow: log each run's parameters, metrics and learning curve to ``<out>/<dataset>/runs/mlruns.db``.
        force: rerun finished runs.
        report: write the leaderboard at the end.
        storage: a database shared by several workers (``sqlite:///grid.db`` on one machine,
            ``postgresql://user:pw@host/db`` across machines; the same command on each): each (bundle, fold) run is
            taken by one worker, and the report includes the runs of all (see :mod:`.workqueue`).
        infer_cases: validation cases on which each finished run is also timed end to end through the stock
            inference command (per volume and start-up, the leaderboard's inference columns); 0: not timed.
    """
    if max_epochs is None and time_budget is None:
        raise ValueError("Give --max_epochs and/or --time_budget (minutes): every model must get the same budget.")
    dirs = resolve_bundles(bundles)
    folds = parse_folds(folds)
    name = name or dataset_name(dirs)
    results = Path(out).resolve() / name
    common: dict[str, Any] = {"seed": int(seed), **dict(overrides or {})}
    if dataset_dir:
        common["dataset_dir"] = str(Path(dataset_dir).resolve())
    if datalist:
        common["datalist"] = str(Path(datalist).resolve())
    train: dict[str, Any] = {}
    if max_epochs is not None:
        train["max_epochs"] = int(max_epochs)
    if time_budget is not None:
        train["time_budget_minutes"] = float(time_budget)
    if val_interval is not None:
        common["val_interval"] = int(val_interval)
    data = _same_data(dirs, common)
    present = sorted({int(e["fold"]) for e in load_datalist(data["datalist"]).get("training", []) if "fold" in e})
    if any(f not in present for f in folds):
        raise ValueError(f"folds {folds} requested, but {data['datalist']} has folds {present}.")
    settings = {
        "name": name,
        "bundles": [d.name for d in dirs],
        "bundle_dirs": [str(d) for d in dirs],
        "folds": folds,
        "seed": int(seed),
        "max_epochs": train.get("max_epochs"),
        "time_budget_minutes": train.get("time_budget_minutes"),
        "val_interval": common.get("val_interval"),
        "overrides": dict(overrides or {}),
        **data,
        "datalist_given": bool(datalist),
        "dataset_dir_given": bool(dataset_dir),
        "out": out,
        "infer_cases": int(infer_cases),
        "machine": machine(),
    }
    _check_settings(results, settings, force)
    settings["command"] = command(settings)
    settings["started"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_json(results / SETTINGS, settings)
    params = {d.name: count_parameters(d, overrides) for d in dirs}  # the network the runs train
    grid = [(d, f) for f in folds for d in dirs]  # fold by fold: after the first, every bundle has a number
    bar = tqdm(total=len(grid), desc=f"benchmark {name}", unit="run")
    queue = None
    if storage:
        from shared_components.experiments.workqueue import WorkQueue, grid_id

        queue = WorkQueue(storage, grid_id(settings))
    todo = list(grid)
    while todo:
        for bundle_dir, fold in todo:
            bar.set_postfix_str(f"{bundle_dir.name} fold {fold}")
            run_dir = run_path(results, bundle_dir.name, fold)
            if queue is not None and not queue.claim(bundle_dir.name, fold, force):
                continue  # done, or held by another worker
            with queue.holding(bundle_dir.name, fold) if queue is not None else contextlib.nullcontext():
                rec = train_and_evaluate(
                    bundle_dir, run_dir, fold, common, train, save_predictions, force, int(infer_cases)
                )
            rec["parameters"] = params[bundle_dir.name]
            write_json(run_dir / RUN_FILE, rec)
            if queue is not None:
                queue.finish(bundle_dir.name, fold, rec, run_dir)
            bar.update(1)
            tqdm.write(_one_line(rec, run_dir))
            if mlflow:
                log_run(results / RUNS, experiment_name(name), rec, run_dir, f"{rec['bundle']}/fold{rec['fold']}")
        todo = _others(queue, grid) if queue is not None else []
    bar.close()
    if queue is not None:
        queue.materialize(run_path, results)
    settings["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_json(results / SETTINGS, settings)
    if report:
        from shared_components.experiments.leaderboard import make_report  # the leaderboard reads this layout

        make_report(results)
    return results


def report_benchmark(results: str | Path, storage: str | None = None, overlays: int = 3) -> Path:
    """Rewrite the leaderboard of a benchmark results folder; with a storage URL, first fetch the runs that other
    workers of the grid finished.

    Args:
        results: the benchmark's results folder (e.g. results/hippocampus_mri).
        storage: the grid's database URL (sqlite:///... or postgresql://...) when several machines ran it.
        overlays: number of example overlay PNGs to draw.
    """
    from shared_components.experiments.leaderboard import make_report

    results = Path(results).resolve()
    if storage:
        from shared_components.experiments.workqueue import WorkQueue, grid_id

        path = results / SETTINGS
        if not path.is_file():
            raise FileNotFoundError(f"No benchmark in {results} ({SETTINGS} missing): run `benchmark.py run` first.")
        WorkQueue(storage, grid_id(json.loads(path.read_text()))).materialize(run_path, results)
    return make_report(results, overlays)


def _others(queue: Any, grid: Sequence[tuple[Path, int]]) -> list[tuple[Path, int]]:
    """Wait while other workers hold runs of the grid; the runs whose worker died (stale heartbeat), to take over."""
    while busy := queue.busy():
        stale = {(b, f) for b, f, is_stale in busy if is_stale}
        if stale:
            return [(d, f) for d, f in grid if (d.name, f) in stale]
        time.sleep(min(queue.heartbeat, 5))
    return []


def run_path(results: Path, bundle: str, fold: int) -> Path:
    """The folder of one (bundle, fold) run of the benchmark in ``results`` (``<out>/<dataset>``)."""
    return Path(results) / RUNS / bundle / f"fold_{fold}"


def experiment_name(name: str) -> str:
    """The MLflow experiment of the benchmark of dataset ``name``."""
    return f"benchmark_{name}"


def _same_data(dirs: Sequence[Path], overrides: Mapping[str, Any]) -> dict[str, str]:
    """The datalist and dataset folder every bundle would use; they must be the same for a fair comparison."""
    keys = {k: v for k, v in overrides.items() if k in ("datalist", "dataset_dir")}
    seen = {d.name: bundle_values(d, ["datalist", "dataset_dir"], keys) for d in dirs}
    for key in ("datalist", "dataset_dir"):
        values = {b: v[key] for b, v in seen.items()}
        if len(set(values.values())) > 1:
            listing = "\n".join(f"  {b}: {v}" for b, v in values.items())
            raise ValueError(
                f"The bundles use different {key}s, so their results are not comparable:\n{listing}\n"
                f"Pass --{key} to use one for all."
            )
    return next(iter(seen.values()))


def _check_settings(results: Path, settings: dict[str, Any], force: bool) -> None:
    """Refuse to mix runs made under different data, seed, budget or overrides into one leaderboard."""
    path = results / SETTINGS
    if force or not path.is_file():
        return
    old = json.loads(path.read_text())
    diff = [k for k in COMPARED if old.get(k) != settings.get(k)]
    if diff:
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in diff)
        raise ValueError(
            f"{results} holds a benchmark run with other settings ({detail}); use another --out, "
            "or --force to rerun the grid with the new settings."
        )
    # the same settings: new bundles and new folds join the existing grid (each fold's runs are scored on that fold)
    settings["folds"] = sorted({*old.get("folds", []), *settings["folds"]})
    settings["bundles"][:0] = [b for b in old.get("bundles", []) if b not in settings["bundles"]]
    settings["bundle_dirs"][:0] = [b for b in old.get("bundle_dirs", []) if b not in settings["bundle_dirs"]]


def _one_line(rec: Mapping[str, Any], run_dir: Path) -> str:
    head = f"{rec['bundle']} fold {rec['fold']}: "
    if rec["status"] != "done":
        return head + f"FAILED during {rec.get('failed_stage')} (log: {run_dir / LOG_FILE})"
    summary = json.loads((run_dir / "eval" / SUMMARY_JSON).read_text())["summary"]["all"]
    dice = summary.get(MEAN_CLASS, {}).get("dice", {}).get("mean")
    scores = [f"Dice {dice:.4f}"] if dice is not None else []
    if (run_dir / "eval" / FROC_SUMMARY).is_file():  # a detection evaluation (segmentation or detector)
        cpm = json.loads((run_dir / "eval" / FROC_SUMMARY).read_text()).get("cpm")
        scores += [f"CPM {cpm:.4f}" if cpm is not None else "CPM -"]
    scores += [f"{rec.get('epochs', '?')} epochs", f"{rec.get('train_seconds', 0) / 60:.1f} min"]
    return head + ", ".join(scores)
