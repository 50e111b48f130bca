"""The leaderboard of a benchmark (``<out>/<dataset>/``, see :mod:`.benchmark`): the runs' records and per-case
metrics collected per model, mean [CI] of every metric, rank and paired tests against the best model, costs, plots
and overlays of the best model's cases, written as ``leaderboard.md``/``.csv`` and the pooled ``metrics_per_case.csv``.
Runs evaluated with detection (``eval/froc_summary.json``, aneurysm datasets) add CPM and sensitivity at 1 false
positive per scan (mean over folds; the bootstrap CI when one fold). A detector (``aneurysm_mra_retinanet``) has a
row too: its per-case table holds detection values only, so its Dice, surface metrics and rank stay empty.
"""

from __future__ import annotations

import filecmp
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from shared_components.evaluation.formatting import fmt_ci, fmt_num, fmt_p, is_number
from shared_components.evaluation.metrics import EXTRA_METRICS, METRICS
from shared_components.evaluation.report import (
    CASES,
    MEAN_CLASS,
    PER_CASE,
    read_per_case,
    summarize_cases,
    with_case_means,
    write_csv,
    write_text_atomic,
)
from shared_components.evaluation.statistics import compare_to_best
from shared_components.experiments.benchmark import SETTINGS, command, run_path
from shared_components.experiments.benchmark_ensemble import read_ensembles
from shared_components.experiments.runs import model_name, read_run
from shared_components.paths import CLI

LEADERBOARD_MD = "leaderboard.md"
LEADERBOARD_CSV = "leaderboard.csv"
COST_NOTE = (
    "*forward s / volume*: the sliding-window forward pass on one preprocessed validation volume during evaluation "
    "(median over the cases), without reading, resampling, inversion, writing or the command's start-up."
)
CLI_NOTE = (
    " *stock CLI*: what a user waits for through `python -m monai.bundle run --config_file configs/inference.yaml` "
    "with the run's weights on the first validation cases (`runs/<bundle>/fold_<k>/infer.log`): per volume (reading "
    "to writing the label map) and the start-up paid once per command (interpreter, imports, config, network)."
)
NO_CLI_NOTE = (
    " End to end through the stock inference command (per volume, and start-up once per command): not measured in "
    "these runs (`benchmark.py run --infer_cases N` times it)."
)


def collect(results: Path) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """Settings, the per-model run table (one row per bundle) and the pooled per-case metrics (with ``model``)."""
    results = Path(results)
    path = results / SETTINGS
    if not path.is_file():
        raise FileNotFoundError(f"No benchmark in {results} ({SETTINGS} missing): run `{CLI} benchmark run` first.")
    settings = json.loads(path.read_text())
    dataset = settings["name"]
    rows, frames = [], []
    ensembles = read_ensembles(results)
    for bundle in [*settings["bundles"], *ensembles]:
        model = model_name(bundle, dataset)
        recs = [read_run(run_path(results, bundle, f)) for f in settings["folds"]]
        done = [(f, r) for f, r in zip(settings["folds"], recs, strict=True) if r.get("status") == "done"]
        for f, _ in done:
            df = read_per_case(run_path(results, bundle, f) / "eval" / PER_CASE)
            frames.append(df.assign(model=model, bundle=bundle))
        folds = list(zip(settings["folds"], recs, strict=True))
        failed = [f"fold {f}: {r.get('failed_stage', 'failed')}" for f, r in folds if r.get("status") == "failed"]
        # a run another worker is training (or that was never started) is not a failure
        pending = [f"fold {f}: {r.get('status', 'not run')}" for f, r in folds if r.get("status") not in DONE_OR_FAILED]
        rows.append(
            {
                "model": model,
                "bundle": bundle,
                "status": _status(len(done), len(recs), bool(failed)),
                "failed": "; ".join(failed),
                "pending": "; ".join(pending),
                "parameters": next((r.get("parameters") for r in recs if r.get("parameters")), None),
                "members": ",".join(ensembles.get(bundle, {}).get("members", [])),
                **_costs([r for _, r in done]),
                **_detection([run_path(results, bundle, f) / "eval" for f, _ in done]),
            }
        )
    per_case = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["model", "bundle"])
    return settings, pd.DataFrame(rows), per_case


DONE_OR_FAILED = ("done", "failed")


def _status(done: int, runs: int, failed: bool) -> str:
    """``done``, ``partial (k/n)``, ``failed`` (nothing done, something failed) or ``not run`` (nothing finished)."""
    if done == runs:
        return "done"
    if done:
        return f"partial ({done}/{runs})"
    return "failed" if failed else "not run"


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
        # end to end through the stock inference command (runs timed with ``infer_cases``; None: not measured)
        "cli_seconds_per_volume": mean("cli_seconds_per_volume"),
        "cli_startup_seconds": mean("cli_startup_seconds"),
        "peak_ram_gb": max(ram) / 1024 if ram else None,
        "peak_vram_gb": max(vram) / 1024 if vram else None,
    }


def _detection(eval_dirs: Sequence[Path]) -> dict[str, Any]:
    """CPM and sensitivity at 1 FP/scan of the runs' ``froc_summary.json`` (mean over folds; with its CI when
    there is one fold), or nothing when no run was evaluated with detection."""
    from shared_components.evaluation.froc import SUMMARY

    found = [json.loads((d / SUMMARY).read_text()) for d in eval_dirs if (d / SUMMARY).is_file()]
    if not found:
        return {}
    one = [next((s for s in f["sensitivity"] if s["fp_per_scan"] == 1.0), {}) for f in found]
    out: dict[str, Any] = {
        "froc_cpm": _mean([f.get("cpm") for f in found]),
        "froc_sensitivity_1fp": _mean([s.get("sensitivity") for s in one]),
        "froc_sensitivity_all": _mean([f.get("all_candidates", {}).get("sensitivity") for f in found]),
        "froc_fp_per_scan_all": _mean([f.get("all_candidates", {}).get("false_positives_per_scan") for f in found]),
        "froc_aneurysms": sum(int(f.get("aneurysms") or 0) for f in found),
    }
    if len(found) == 1:
        out.update(froc_cpm_ci_low=found[0].get("cpm_ci_low"), froc_cpm_ci_high=found[0].get("cpm_ci_high"))
        out.update(froc_sensitivity_1fp_ci_low=one[0].get("ci_low"), froc_sensitivity_1fp_ci_high=one[0].get("ci_high"))
    return out


def _mean(values: Sequence[Any]) -> float | None:
    v = [float(x) for x in values if is_number(x)]
    return sum(v) / len(v) if v else None


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
        if len(m):  # a detector has no segmentation metric to compare
            paired[model] = dict(zip(m["fold"] + "/" + m["case"], m["value"], strict=True))
    stats = compare_to_best({m: paired[m] for m in table["model"] if m in paired}, best)
    table["p_wilcoxon"] = [stats.get(m, {}).get("p") for m in table["model"]]
    table["p_holm"] = [stats.get(m, {}).get("p_holm") for m in table["model"]]
    table["n_pairs"] = [stats.get(m, {}).get("n_pairs") for m in table["model"]]
    return table[["rank", *[c for c in table.columns if c != "rank"]]]


def make_report(results: str | Path, overlays: int = 3) -> Path:
    """Write the leaderboard (``leaderboard.md``/``.csv``), pooled per-case metrics and plots from a benchmark's runs.

    Args:
        results: the benchmark's results folder, ``<out>/<dataset>`` (e.g. ``results/hippocampus_mri``).
        overlays: overlay figures of the best model's worst, median and best cases (0 for none).
    """
    from shared_components.evaluation import plots

    results = Path(results).resolve()
    settings, runs, per_case = collect(results)
    table = leaderboard(runs, per_case)
    write_csv(results / LEADERBOARD_CSV, table)
    if len(per_case):
        cols = ["model", "bundle", "case", "fold", "centre", "class", "metric", "value"]
        write_csv(results / PER_CASE, per_case[cols])
    figures: dict[str, Path] = {}
    ok = table[~table["status"].isin(["failed", "not run"])]
    scored = set(per_case[per_case["metric"] == "dice"]["model"]) if len(per_case) else set()
    if scored:
        figures["per-case Dice"] = plots.case_boxplot_png(
            per_case, results / "plots" / "dice_boxplot.png", "dice", [m for m in ok["model"] if m in scored]
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
    text = _markdown(settings, table, figures, results, per_fold_dice(per_case))
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


def per_fold_dice(per_case: pd.DataFrame) -> pd.DataFrame:
    """Mean over each fold's cases of the per-case Dice (mean over classes): one row per model, one column per fold
    (empty where the model has no finished run of that fold)."""
    dice = per_case[per_case["metric"] == "dice"] if len(per_case) else per_case
    if not len(dice):
        return pd.DataFrame()
    case_mean = dice.groupby(["model", "fold", "case"], sort=False)["value"].mean().reset_index()
    return case_mean.pivot_table(index="model", columns="fold", values="value", aggfunc="mean", sort=False)


def _fold_lines(table: pd.DataFrame, folds: pd.DataFrame) -> list[str]:
    """The per-fold table, when there is more than one fold: the comparison that stays fair while some models have
    not finished every fold (their pooled means cover other cases)."""
    if folds.shape[1] < 2:
        return []
    names = [m for m in table["model"] if m in folds.index]
    head = ["model", *[f"fold {f}" for f in folds.columns]]
    lines = ["", "Dice (class mean) per fold, each fold's own cases:", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "---|" * len(head))
    lines += [f"| {m} | " + " | ".join(fmt_num(v, 3) for v in folds.loc[m]) + " |" for m in names]
    return lines


def _markdown(
    settings: Mapping[str, Any],
    table: pd.DataFrame,
    figures: Mapping[str, Path],
    results: Path,
    folds: pd.DataFrame | None = None,
) -> str:
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
        f"model ({', '.join(budget)} per training run). Machine: {hw}. "
        + (
            f"Runs finished {settings['finished']}."
            if settings.get("finished")
            else f"Started {settings.get('started')}."
        ),
        "",
        "Reproduce with:",
        "",
        "```bash",
        command(settings),
        f"{CLI} benchmark report {_rel(results)}",
        "```",
        "",
        "## Accuracy",
        "",
        "Mean over validation cases [95% bootstrap CI]; metrics in each case's original geometry. *p*: two-sided "
        "Wilcoxon signed-rank test of the per-case Dice (mean over classes) against the best model, paired by case, "
        "Holm-corrected over the models compared.",
        "",
    ]
    head = ["rank", "model", "Dice (class mean)"] + [f"Dice {c}" for c in classes] + ["p (Holm)", "run"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.to_dict("records"):
        cells = [fmt_num(r.get("rank"), 0), f"{r['model']}" + ("" if r["status"] == "done" else f" ({r['status']})")]
        cells += [_row_ci(r, f"dice_{c}") for c in [MEAN_CLASS, *classes]]
        cells += [fmt_p(r.get("p_holm")), _run_cell(r["bundle"], settings["folds"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += _fold_lines(table, folds if folds is not None else pd.DataFrame())
    lines += ["", _runs_note(settings, results)]
    ensembles = [r for r in table.to_dict("records") if r.get("members")]
    if ensembles:
        lines += [
            "",
            "Ensembles (`benchmark.py ensemble`): on each fold, the probabilities of that fold's runs of "
            + "; ".join(
                f"`{r['model']}`: {', '.join(model_name(m, settings['name']) for m in r['members'].split(','))}"
                for r in ensembles
            )
            + " averaged, so every case is still scored by models trained without it; training cost (below) is the "
            "members' together.",
        ]
    detectors = [
        f"`{r['model']}`"
        for r in table.to_dict("records")
        if is_number(r.get("froc_cpm")) and not is_number(r.get(f"dice_{MEAN_CLASS}"))
    ]
    if detectors:
        lines += [
            "",
            f"{', '.join(detectors)}: detector(s) (boxes, no label map): no Dice, surface metrics or rank here; "
            "compared with the segmentation models by CPM under *Detection*.",
        ]
    surface = [m for m in METRICS if m != "dice"]
    surface += [m for m in EXTRA_METRICS if f"{m}_{MEAN_CLASS}" in table]
    names = {"hd95": "HD95 mm", "msd": "MSD mm", "nsd": "NSD", "vs": "VS"}
    head = ["model"] + [f"{names[m]} {c}" for m in surface for c in [*classes, MEAN_CLASS]]
    lines += [
        "",
        "Surface metrics (HD95, mean surface distance: lower is better; normalised surface Dice at "
        "the dataset's tolerance: higher is better"
        + ("; VS: volumetric similarity, higher is better" if "vs" in surface else "")
        + "):",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in table.to_dict("records"):
        cells = [r["model"]] + [_row_ci(r, f"{m}_{c}", 2) for m in surface for c in [*classes, MEAN_CLASS]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += _detection_lines(table)
    head = ["model", "parameters (M)", "s / epoch", "epochs", "train min / run", "forward s / volume"]
    cli = any(is_number(v) for v in table.get("cli_seconds_per_volume", pd.Series(dtype=float)))
    head += ["stock CLI s / volume", "stock CLI start-up s"] if cli else []
    head += ["peak RAM GB"]
    gpu = table.get("peak_vram_gb", pd.Series(dtype=float)).fillna(0).max() > 0
    head += ["peak VRAM GB"] if gpu else []
    lines += ["", "## Cost", "", COST_NOTE + (CLI_NOTE if cli else NO_CLI_NOTE), ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.to_dict("records"):
        params = r.get("parameters")
        cells = [
            r["model"],
            fmt_num(params / 1e6 if is_number(params) else None, 2),
            fmt_num(r.get("seconds_per_epoch"), 1),
            fmt_num(r.get("epochs"), 0),
            fmt_num(r.get("train_minutes"), 1),
            fmt_num(r.get("inference_seconds_per_volume"), 3),
        ]
        if cli:
            cells += [_measured(r.get("cli_seconds_per_volume"), 3), _measured(r.get("cli_startup_seconds"), 1)]
        cells += [fmt_num(r.get("peak_ram_gb"), 2)]
        cells += [fmt_num(r.get("peak_vram_gb"), 2)] if gpu else []
        lines.append("| " + " | ".join(cells) + " |")
    failed = table[table["failed"].astype(bool)]
    if len(failed):
        lines += ["", "## Failed runs", ""]
        lines += [
            f"- {r['model']}: {r['failed']} (see `runs/{r['bundle']}/fold_*/run.log`)"
            for r in failed.to_dict("records")
        ]
    pending = table[table["pending"].fillna("").astype(bool)] if "pending" in table else table.iloc[:0]
    if len(pending):
        lines += [
            "",
            "## Runs not finished",
            "",
            "Running (a worker holds them) or not started; rerun the command:",
            "",
        ]
        lines += [f"- {r['model']}: {r['pending']}" for r in pending.to_dict("records")]
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


def _detection_lines(table: pd.DataFrame) -> list[str]:
    """The detection table (CPM, sensitivity at 1 FP/scan, the all-candidates operating point) when any model was
    evaluated with detection, best CPM first: segmentation models and detectors ranked together."""
    if "froc_cpm" not in table or table["froc_cpm"].isna().all():
        return []
    table = table.sort_values("froc_cpm", ascending=False, na_position="last", kind="stable")
    lines = [
        "",
        "## Detection",
        "",
        "FROC of the aneurysm candidates (ADAM hit rule: within the aneurysm's radius of its centre; treated "
        "aneurysms ignored). CPM: mean sensitivity at 1/8, 1/4, 1/2, 1, 2, 4 and 8 false positives per scan [95% "
        "bootstrap CI over scans, one fold]; *all candidates*: every connected component of a segmentation's "
        "prediction, every box a detector keeps. Rows: best CPM first.",
        "",
        "| model | CPM | sensitivity at 1 FP/scan | sensitivity (all candidates) | FP / scan (all candidates) |",
        "|---|---|---|---|---|",
    ]
    for r in table.to_dict("records"):
        cells = [r["model"], _row_ci(r, "froc_cpm"), _row_ci(r, "froc_sensitivity_1fp")]
        cells += [fmt_num(r.get("froc_sensitivity_all")), fmt_num(r.get("froc_fp_per_scan_all"), 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _run_cell(bundle: str, folds: Sequence[int]) -> str:
    """The run folder(s) a row's numbers come from: ``runs/<bundle>/fold_0`` (``fold_{0,1}`` for several)."""
    name = f"fold_{folds[0]}" if len(folds) == 1 else "fold_{" + ",".join(map(str, folds)) + "}"
    return f"`runs/{bundle}/{name}`"


def _runs_note(settings: Mapping[str, Any], results: Path) -> str:
    """Which run each row is: bundles shipping one of these runs' weights (byte-identical ``models/model.pt``) say
    so; bundles shipping weights trained in another run are named, with that run's Dice."""
    note = (
        "Each row is this benchmark's own training run of the bundle (`run`, trained from scratch under the budget "
        "above)."
    )
    same, other = [], []
    for bundle, folder in zip(settings["bundles"], settings.get("bundle_dirs", []), strict=False):
        shipped = Path(folder) / "models" / "model.pt"
        if not shipped.is_file():
            continue
        runs = [run_path(results, bundle, f) / "models" / "model.pt" for f in settings["folds"]]
        if any(r.is_file() and filecmp.cmp(r, shipped, shallow=False) for r in runs):
            same.append(f"`{bundle}`")
            continue
        meta_file = Path(folder) / "configs" / "metadata.json"
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        dice = (meta.get("eval_metrics") or {}).get("mean_dice")
        quoted = f"mean Dice {dice}, " if is_number(dice) else ""
        other.append(
            f" `{bundle}` ships `models/model.pt` from a different run ({quoted}in its model card "
            f"`bundles/{bundle}/docs/README.md`)."
        )
    if same:
        note += (
            f" Shipped as `models/model.pt`, byte for byte, by {', '.join(same)}: these runs' weights (each run's "
            "`best_model.json` says whether best or final)."
        )
    return note + "".join(other)


def _measured(value: Any, digits: int) -> str:
    return fmt_num(value, digits) if is_number(value) else "not measured"


def _rel(path: Path) -> str:
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _row_ci(r: Mapping[str, Any], key: str, digits: int = 3) -> str:
    """``key`` of a leaderboard row with its CI (columns ``<key>_ci_low``/``_ci_high``)."""
    return fmt_ci(r.get(key), r.get(f"{key}_ci_low"), r.get(f"{key}_ci_high"), digits)
