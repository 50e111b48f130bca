"""The benchmark: a grid of bundles x folds trained and evaluated under identical data, splits, seed and budget,
then a leaderboard with confidence intervals, paired tests, costs and plots.

``run`` trains/evaluates every (bundle, fold) into ``<out>/<dataset>/runs/<bundle>/fold_<k>/`` (resumable; a failed
run is recorded and the grid goes on), logs each run to MLflow (``runs/mlruns.db``) and calls ``report``, which
writes ``leaderboard.md``/``.csv``, the pooled ``metrics_per_case.csv`` and ``plots/``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

from shared_components.bundle.scaffold import SPECS_DIR
from shared_components.data.datalist import load_datalist
from shared_components.evaluation.metrics import METRICS
from shared_components.evaluation.report import (
    CASES,
    MEAN_CLASS,
    PER_CASE,
    fmt_ci,
    read_per_case,
    summarize_cases,
    with_case_means,
    write_csv,
    write_json,
    write_text_atomic,
)
from shared_components.evaluation.statistics import compare_to_best
from shared_components.experiments.runs import (
    bundle_values,
    count_parameters,
    parse_folds,
    read_run,
    resolve_bundles,
    train_and_evaluate,
)

logger = logging.getLogger(__name__)

SETTINGS = "benchmark.json"
LEADERBOARD_MD = "leaderboard.md"
LEADERBOARD_CSV = "leaderboard.csv"
COMPARED = (
    "datalist",
    "dataset_dir",
    "folds",
    "seed",
    "max_epochs",
    "time_budget_minutes",
    "val_interval",
    "overrides",
)


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


def model_name(bundle: str, dataset: str) -> str:
    """``hippocampus_mri_attention_unet`` -> ``attention_unet``."""
    return bundle[len(dataset) + 1 :] if bundle.startswith(dataset + "_") else bundle


def machine() -> dict[str, Any]:
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
    args = ["python", "scripts/benchmark.py", "run", "--bundles", ",".join(settings["bundles"])]
    args += ["--folds", ",".join(map(str, settings["folds"]))]
    for key, flag in (
        ("max_epochs", "max_epochs"),
        ("time_budget_minutes", "time_budget"),
        ("val_interval", "val_interval"),
    ):
        if settings.get(key) is not None:
            args += [f"--{flag}", str(settings[key])]
    args += ["--seed", str(settings["seed"])]
    for key in ("datalist", "dataset_dir"):
        if settings.get(f"{key}_given"):
            args += [f"--{key}", settings[key]]
    if settings.get("overrides"):
        args += ["--overrides", json.dumps(settings["overrides"])]
    if settings.get("out") not in (None, "results"):
        args += ["--out", settings["out"]]
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
        "machine": machine(),
    }
    _check_settings(results, settings, force)
    settings["command"] = command(settings)
    settings["started"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_json(results / SETTINGS, settings)
    params = {d.name: count_parameters(d) for d in dirs}
    grid = [(d, f) for d in dirs for f in folds]
    bar = tqdm(grid, desc=f"benchmark {name}", unit="run")
    for bundle_dir, fold in bar:
        bar.set_postfix_str(f"{bundle_dir.name} fold {fold}")
        run_dir = run_path(results, bundle_dir.name, fold)
        rec = train_and_evaluate(bundle_dir, run_dir, fold, common, train, save_predictions, force)
        rec["parameters"] = params[bundle_dir.name]
        write_json(run_dir / "run.json", rec)
        tqdm.write(_one_line(rec, run_dir))
        if mlflow:
            log_run_to_mlflow(results, name, rec, run_dir)
    settings["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_json(results / SETTINGS, settings)
    if report:
        make_report(results)
    return results


def run_path(results: Path, bundle: str, fold: int) -> Path:
    return Path(results) / "runs" / bundle / f"fold_{fold}"


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


def _check_settings(results: Path, settings: Mapping[str, Any], force: bool) -> None:
    """Refuse to mix runs made under different data, folds, seed or budget into one leaderboard."""
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
    # the same settings: new bundles join the existing grid
    settings["bundles"][:0] = [b for b in old.get("bundles", []) if b not in settings["bundles"]]
    settings["bundle_dirs"][:0] = [b for b in old.get("bundle_dirs", []) if b not in settings["bundle_dirs"]]


def _one_line(rec: Mapping[str, Any], run_dir: Path) -> str:
    head = f"{rec['bundle']} fold {rec['fold']}: "
    if rec["status"] != "done":
        return head + f"FAILED during {rec.get('failed_stage')} (log: {run_dir / 'run.log'})"
    summary = json.loads((run_dir / "eval" / "metrics_summary.json").read_text())["summary"]["all"]
    dice = summary[MEAN_CLASS]["dice"]["mean"]
    return head + f"Dice {dice:.4f}, {rec.get('epochs', '?')} epochs, {rec.get('train_seconds', 0) / 60:.1f} min"


def log_run_to_mlflow(results: Path, name: str, rec: Mapping[str, Any], run_dir: Path) -> None:
    """One MLflow run per (bundle, fold) in experiment ``benchmark_<name>`` (SQLite store in ``results/runs``):
    settings as parameters, summary metrics and costs as metrics, the learning curve as per-epoch metrics."""
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    store = Path(results) / "runs"
    store.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlruns.db'}")
    experiment = f"benchmark_{name}"
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=(store / "mlruns").as_uri())
    mlflow.set_experiment(experiment)
    params = {
        "bundle": rec["bundle"],
        "fold": rec["fold"],
        "status": rec["status"],
        "parameters": rec.get("parameters"),
    }
    params.update({f"override.{k}": v for k, v in rec.get("overrides", {}).items()})
    metrics: dict[str, float] = {}
    for key in (
        "train_seconds",
        "eval_seconds",
        "epochs",
        "seconds_per_epoch",
        "inference_seconds_per_case",
        "train_peak_ram_mb",
        "train_peak_vram_mb",
        "eval_peak_ram_mb",
        "eval_peak_vram_mb",
    ):
        if isinstance(rec.get(key), int | float) and math.isfinite(rec[key]):
            metrics[key] = float(rec[key])
    summary = run_dir / "eval" / "metrics_summary.json"
    if rec["status"] == "done" and summary.is_file():
        for cls, per_metric in json.loads(summary.read_text())["summary"]["all"].items():
            for metric, s in per_metric.items():
                if s.get("mean") is not None:
                    metrics[f"{metric}_{cls}"] = float(s["mean"])
    with mlflow.start_run(run_name=f"{rec['bundle']}/fold{rec['fold']}"):
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


# ------------------------------------------------------------------------------------------------- report


def collect(results: Path) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """Settings, the per-model run table (one row per bundle) and the pooled per-case metrics (with ``model``)."""
    results = Path(results)
    path = results / SETTINGS
    if not path.is_file():
        raise FileNotFoundError(
            f"No benchmark in {results} ({SETTINGS} missing): run `scripts/benchmark.py run` first."
        )
    settings = json.loads(path.read_text())
    dataset = settings["name"]
    rows, frames = [], []
    for bundle in settings["bundles"]:
        model = model_name(bundle, dataset)
        recs = [read_run(run_path(results, bundle, f)) for f in settings["folds"]]
        done = [(f, r) for f, r in zip(settings["folds"], recs, strict=True) if r.get("status") == "done"]
        for f, _ in done:
            df = read_per_case(run_path(results, bundle, f) / "eval" / PER_CASE)
            frames.append(df.assign(model=model, bundle=bundle))
        failed = [
            f"fold {f}: {r.get('failed_stage', 'not run')}"
            for f, r in zip(settings["folds"], recs, strict=True)
            if r.get("status") != "done"
        ]
        rows.append(
            {
                "model": model,
                "bundle": bundle,
                "status": "done" if not failed else ("failed" if not done else f"partial ({len(done)}/{len(recs)})"),
                "failed": "; ".join(failed),
                "parameters": next((r.get("parameters") for r in recs if r.get("parameters")), None),
                **_costs([r for _, r in done]),
            }
        )
    per_case = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["model", "bundle"])
    return settings, pd.DataFrame(rows), per_case


def _costs(recs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    def values(key: str) -> list[float]:
        return [float(r[key]) for r in recs if isinstance(r.get(key), int | float)]

    def mean(key: str) -> float | None:
        v = values(key)
        return sum(v) / len(v) if v else None

    spe = sorted(values("seconds_per_epoch"))
    ram = values("train_peak_ram_mb") + values("eval_peak_ram_mb")
    vram = values("train_peak_vram_mb") + values("eval_peak_vram_mb")
    train_s = mean("train_seconds")
    return {
        "folds_done": len(recs),
        "epochs": mean("epochs"),
        "seconds_per_epoch": spe[len(spe) // 2] if spe else None,
        "train_minutes": train_s / 60 if train_s is not None else None,
        "inference_seconds_per_volume": mean("inference_seconds_per_case"),
        "peak_ram_gb": max(ram) / 1024 if ram else None,
        "peak_vram_gb": max(vram) / 1024 if vram else None,
    }


def leaderboard(runs: pd.DataFrame, per_case: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """One row per model: mean [CI] of every metric per class and of the per-case class mean, rank by the class
    mean of ``metric``, and a paired Wilcoxon signed-rank test of that per-case value against the best model
    (Holm-corrected over the models compared)."""
    rows = []
    for r in runs.to_dict("records"):
        cases = per_case[per_case["model"] == r["model"]] if len(per_case) else per_case
        row = dict(r)
        if len(cases):
            summary = summarize_cases(cases.drop(columns=["model", "bundle"]))
            summary = summary[summary["group"] == "all"]
            row["cases"] = int(cases[["case", "fold"]].drop_duplicates().shape[0])
            for s in summary.to_dict("records"):
                key = f"{s['metric']}_{s['class']}"
                row.update({key: s["mean"], f"{key}_ci_low": s["ci_low"], f"{key}_ci_high": s["ci_high"]})
        rows.append(row)
    table = pd.DataFrame(rows)
    key = f"{metric}_{MEAN_CLASS}"
    if key not in table or table[key].isna().all():
        table["rank"] = None
        return table
    higher = metric in ("dice", "nsd")
    table = table.sort_values(key, ascending=not higher, na_position="last", kind="stable").reset_index(drop=True)
    table["rank"] = [i + 1 if v == v else None for i, v in enumerate(table[key])]
    best = table.loc[0, "model"]
    paired = {}
    for model, cases in per_case.groupby("model", sort=False):
        m = with_case_means(cases.drop(columns=["model", "bundle"]))
        m = m[(m["class"] == MEAN_CLASS) & (m["metric"] == metric)]
        paired[model] = dict(zip(m["fold"] + "/" + m["case"], m["value"], strict=True))
    stats = compare_to_best({m: paired[m] for m in table["model"] if m in paired}, best)
    table["p_wilcoxon"] = [stats.get(m, {}).get("p") for m in table["model"]]
    table["p_holm"] = [stats.get(m, {}).get("p_holm") for m in table["model"]]
    table["n_pairs"] = [stats.get(m, {}).get("n_pairs") for m in table["model"]]
    return table[["rank", *[c for c in table.columns if c != "rank"]]]


def make_report(results: str | Path, overlays: int = 3) -> Path:
    """Write ``leaderboard.md``/``.csv``, the pooled ``metrics_per_case.csv`` (with ``model``) and ``plots/`` from
    the runs in ``results`` (``<out>/<dataset>``)."""
    from shared_components.evaluation import plots

    results = Path(results).resolve()
    settings, runs, per_case = collect(results)
    table = leaderboard(runs, per_case)
    write_csv(results / LEADERBOARD_CSV, table)
    if len(per_case):
        cols = ["model", "bundle", "case", "fold", "centre", "class", "metric", "value"]
        write_csv(results / PER_CASE, per_case[cols])
    figures: dict[str, Path] = {}
    ok = table[table["status"] != "failed"]
    if len(per_case):
        figures["per-case Dice"] = plots.case_boxplot_png(
            per_case, results / "plots" / "dice_boxplot.png", "dice", list(ok["model"])
        )
        figures["Dice vs cost"] = plots.cost_scatter_png(ok, results / "plots" / "dice_vs_cost.png")
    histories = {}
    for r in ok.to_dict("records"):
        for f in settings["folds"]:
            h = run_path(results, r["bundle"], f) / "logs" / "history.csv"
            if h.is_file():
                histories[r["model"] if len(settings["folds"]) == 1 else f"{r['model']} f{f}"] = h
    if histories:
        figures["learning curves"] = plots.learning_curves_png(histories, results / "plots" / "learning_curves.png")
    figures.update(_overlays(results, settings, table, overlays))
    text = _markdown(settings, table, figures, results)
    write_text_atomic(results / LEADERBOARD_MD, text)
    return results / LEADERBOARD_MD


def _overlays(results: Path, settings: Mapping[str, Any], table: pd.DataFrame, n: int) -> dict[str, Path]:
    """Image / reference / prediction slices of the best model's worst, median and best cases."""
    from shared_components.evaluation.plots import overlay_png

    if n <= 0 or table.empty or table.loc[0, "rank"] is None:
        return {}
    best = table.loc[0]
    cases = []
    for f in settings["folds"]:
        d = run_path(results, best["bundle"], f) / "eval"
        if (d / CASES).is_file() and (d / PER_CASE).is_file():
            c = pd.read_csv(d / CASES, dtype={"case": str, "fold": str}).fillna("")
            m = with_case_means(read_per_case(d / PER_CASE))
            dice = m[(m["class"] == MEAN_CLASS) & (m["metric"] == "dice")].set_index("case")["value"]
            cases.append(c.assign(dice=c["case"].map(dice)))
    if not cases:
        return {}
    c = pd.concat(cases).dropna(subset=["dice"]).sort_values("dice").reset_index(drop=True)
    c = c[c["prediction"].astype(bool)]
    if c.empty:
        return {}
    picks = sorted({0, len(c) // 2, len(c) - 1})[:n]
    out = {}
    for label, i in zip(("worst", "median", "best"), picks, strict=False):
        r = c.iloc[i]
        png = results / "plots" / f"overlay_{label}_{r['case']}.png"
        title = f"{best['model']}: {r['case']} ({label} case, Dice {r['dice']:.3f})"
        image = r["image"].split(",")[0] if isinstance(r["image"], str) else r["image"]
        out[f"{label} case ({r['case']})"] = overlay_png(image, r["prediction"], png, label=r["label"], title=title)
    return out


def _f(v: Any, digits: int = 3) -> str:
    return f"{v:.{digits}f}" if isinstance(v, int | float) and v == v else "-"


def _p(v: Any) -> str:
    if not isinstance(v, int | float) or v != v:
        return "-"
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def _markdown(settings: Mapping[str, Any], table: pd.DataFrame, figures: Mapping[str, Path], results: Path) -> str:
    classes = [
        c[len("dice_") :]
        for c in table.columns
        if c.startswith("dice_") and not c.endswith(("_ci_low", "_ci_high")) and c != f"dice_{MEAN_CLASS}"
    ]
    budget = []
    if settings.get("max_epochs") is not None:
        budget.append(f"max_epochs {settings['max_epochs']}")
    if settings.get("time_budget_minutes") is not None:
        budget.append(f"{settings['time_budget_minutes']:g} min of training")
    mach = settings.get("machine", {})
    hw = f"{mach.get('cpu_cores')} CPU cores ({mach.get('torch_threads')} torch threads)"
    hw += f", GPU {mach['gpu']}" if mach.get("gpu") else ", no GPU"
    n_cases = int(table["cases"].max()) if "cases" in table and table["cases"].notna().any() else 0
    lines = [
        f"# Leaderboard: {settings['name']}",
        "",
        f"{len(table)} models, fold(s) {', '.join(map(str, settings['folds']))} ({n_cases} validation cases per model), "
        f"the same datalist (`{Path(settings['datalist']).name}`), seed {settings['seed']} and budget for every "
        f"model ({', '.join(budget)} per training run). Machine: {hw}. Runs finished "
        f"{settings.get('finished', settings.get('started', ''))}.",
        "",
        "Reproduce with:",
        "",
        "```bash",
        settings.get("command", command(settings)),
        f"python scripts/benchmark.py report {_rel(results)}",
        "```",
        "",
        "## Accuracy",
        "",
        "Mean over validation cases [95% bootstrap CI]; metrics in each case's original geometry. *p*: two-sided "
        "Wilcoxon signed-rank test of the per-case Dice (mean over classes) against the best model, paired by case, "
        "Holm-corrected over the models compared.",
        "",
    ]
    head = ["rank", "model", "Dice (class mean)"] + [f"Dice {c}" for c in classes] + ["p (Holm)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.to_dict("records"):
        rank = str(int(r["rank"])) if isinstance(r.get("rank"), int | float) and r["rank"] == r["rank"] else "-"
        cells = [rank, f"{r['model']}" + ("" if r["status"] == "done" else f" ({r['status']})")]
        cells += [_ci(r, f"dice_{c}") for c in [MEAN_CLASS, *classes]]
        cells.append(_p(r.get("p_holm")))
        lines.append("| " + " | ".join(cells) + " |")
    surface = [m for m in METRICS if m != "dice"]
    names = {"hd95": "HD95 mm", "msd": "MSD mm", "nsd": "NSD"}
    head = ["model"] + [f"{names[m]} {c}" for m in surface for c in [*classes, MEAN_CLASS]]
    lines += [
        "",
        "Surface metrics (HD95, mean surface distance: lower is better; normalised surface Dice at "
        "the dataset's tolerance: higher is better):",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in table.to_dict("records"):
        cells = [r["model"]] + [_ci(r, f"{m}_{c}", 2) for m in surface for c in [*classes, MEAN_CLASS]]
        lines.append("| " + " | ".join(cells) + " |")
    head = ["model", "parameters (M)", "s / epoch", "epochs", "train min / run", "inference s / volume", "peak RAM GB"]
    gpu = table.get("peak_vram_gb", pd.Series(dtype=float)).fillna(0).max() > 0
    head += ["peak VRAM GB"] if gpu else []
    lines += ["", "## Cost", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.to_dict("records"):
        params = r.get("parameters")
        cells = [
            r["model"],
            _f(params / 1e6 if isinstance(params, int | float) else None, 2),
            _f(r.get("seconds_per_epoch"), 1),
            _f(r.get("epochs"), 0),
            _f(r.get("train_minutes"), 1),
            _f(r.get("inference_seconds_per_volume"), 3),
            _f(r.get("peak_ram_gb"), 2),
        ]
        cells += [_f(r.get("peak_vram_gb"), 2)] if gpu else []
        lines.append("| " + " | ".join(cells) + " |")
    failed = table[table["failed"].astype(bool)]
    if len(failed):
        lines += ["", "## Failed runs", ""]
        lines += [
            f"- {r['model']}: {r['failed']} (see `runs/{r['bundle']}/fold_*/run.log`)"
            for r in failed.to_dict("records")
        ]
    if figures:
        lines += ["", "## Plots", ""]
        lines += [f"![{k}]({Path(v).relative_to(results).as_posix()})" for k, v in figures.items()]
    lines += [
        "",
        f"Files: `{LEADERBOARD_CSV}` (every number above, with CIs), `{PER_CASE}` (every case, class and "
        "metric of every model), `runs/<bundle>/fold_<k>/` (logs, history, per-run evaluation, MLflow store "
        "`runs/mlruns.db`).",
    ]
    return "\n".join(lines) + "\n"


def _ci(r: Mapping[str, Any], key: str, digits: int = 3) -> str:
    v = r.get(key)
    if not isinstance(v, int | float) or v != v:
        return "-"
    return fmt_ci(v, r.get(f"{key}_ci_low"), r.get(f"{key}_ci_high"), digits)


def _rel(path: Path) -> str:
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)
