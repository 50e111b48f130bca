"""Ablations: one factor at a time away from a bundle's defaults, several seeds each, as an Optuna grid study
(``GridSampler`` over variant x seed, no pruning; resumable, and several workers can share it like any study of
:mod:`.tune`), then a table of per-case Dice with bootstrap CIs and paired Wilcoxon tests against the defaults,
Holm-corrected (``ablations.md``/``.csv``, ``ablations_per_case.csv``, ``plots/ablation_dice.png``).

Factors: a preset key (``loss_name``, ``optimizer_name``, ``scheduler_name``, ``augmentation_args#augmentation``;
or ``loss``, ``optimizer``, ...) takes every registered preset; ``batch_size_x_epochs`` scales batch size and epochs
together (x0.5 and x2: the same number of optimiser steps per run); another numeric key takes x0.5 and x2 of its
default; ``levels`` (YAML ``{factor: [level, ...]}``, a level a value or a dict of overrides) sets any factor's
levels. Per case, Dice is averaged over seeds before the paired test, so the test is over cases.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import yaml

from shared_components.experiments.search_space import SearchSpace, bundle_config, check_keys, raw_default
from shared_components.experiments.tune import (
    HEARTBEAT,
    bind_setup,
    case_means,
    make_objective,
    mlflow_store,
    open_storage,
    sigterm_as_interrupt,
    work,
)
from shared_components.paths import CLI
from shared_components.training import registry

DEFAULT = "default"
BATCH_X_EPOCHS = "batch_size_x_epochs"
SCALES = (0.5, 2.0)
DEFAULT_FACTORS = f"loss_name,optimizer_name,scheduler_name,{BATCH_X_EPOCHS}"
ALIASES = dict(registry.CONFIG_KEYS)  # loss -> loss_name, ...
MD, CSV, PER_CASE_CSV, PLOT = "ablations.md", "ablations.csv", "ablations_per_case.csv", "ablation_dice.png"


def _names(value: str | Sequence[Any]) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(i).strip() for i in items if str(i).strip()]


def _label(factor: str, level: Any) -> str:
    if isinstance(level, Mapping):
        if factor == BATCH_X_EPOCHS:
            return f"{factor}=batch {level['batch_size']} x {level['max_epochs']} epochs"
        return f"{factor}=" + ",".join(f"{k}={json.dumps(v)}" for k, v in level.items())
    return f"{factor}={level if isinstance(level, str) else json.dumps(level)}"


def _scaled(value: Any, k: float) -> Any:
    return max(1, int(round(value * k))) if isinstance(value, int) else float(value) * k


def variants(
    bundle_dir: Path,
    factors: str | Sequence[str],
    levels: str | Mapping[str, Any] | None = None,
    fixed: Mapping | None = None,
) -> dict[str, dict[str, Any]]:
    """``{label: {"factor", "level", "overrides"}}``: ``default`` (no overrides) first, then each factor's levels
    other than the bundle's default (with the study's ``fixed`` overrides applied)."""
    parser = bundle_config(bundle_dir, fixed)
    if isinstance(levels, str):
        levels = yaml.safe_load(Path(levels).read_text() if Path(levels).is_file() else levels)
    levels = {ALIASES.get(k, k): v for k, v in dict(levels or {}).items()}
    selectors = {key: kind for kind, key in registry.CONFIG_KEYS.items()}
    out: dict[str, dict[str, Any]] = {DEFAULT: {"factor": DEFAULT, "level": DEFAULT, "overrides": {}}}
    defaults = {}
    for key in selectors:
        found, value = raw_default(parser, key)
        if found:
            defaults[key] = value
    names = [ALIASES.get(f, f) for f in _names(factors)]
    if not names:
        raise ValueError(f"No factors given: e.g. --factors {DEFAULT_FACTORS}.")
    for factor in names:
        composite = factor == BATCH_X_EPOCHS
        if factor in levels:
            values = list(levels[factor])
            composite = composite or (any(isinstance(v, Mapping) for v in values) and factor not in parser)
        if not composite:
            check_keys(parser, [factor], "factors")
        if factor in levels:
            pass
        elif factor in selectors:
            values = list(registry.names(selectors[factor]))
        elif composite:
            _, batch = raw_default(parser, "batch_size")
            _, epochs = raw_default(parser, "max_epochs")
            if not isinstance(batch, int) or not isinstance(epochs, int):
                raise ValueError(f"{BATCH_X_EPOCHS} needs integer batch_size and max_epochs (got {batch}, {epochs}).")
            values = [{"batch_size": _scaled(batch, k), "max_epochs": _scaled(epochs, k)} for k in SCALES]
        else:
            found, value = raw_default(parser, factor)
            if not found or isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"factor {factor}: no numeric default to scale; give its levels with --levels.")
            values = [_scaled(value, k) for k in SCALES]
        if composite:
            check_keys(parser, sorted({k for v in values for k in v}), f"levels of {factor}")
        if factor in selectors:
            for v in values:
                registry.get(selectors[factor], str(v))
        found, default = raw_default(parser, factor)
        for level in values:
            if not composite and found and json.dumps(level) == json.dumps(default):
                continue  # the default itself is the reference
            ov = dict(level) if composite else {factor: level}
            ov = SearchSpace({}, defaults).overrides(ov)  # a switched loss starts from its own arguments
            out.setdefault(_label(factor, level), {"factor": factor, "level": level, "overrides": ov})
    if len(out) == 1:
        raise ValueError(f"The factors {names} have no level other than the bundle's defaults.")
    return out


def ablate(
    bundle: str,
    factors: str | Sequence[str] = DEFAULT_FACTORS,
    seeds: str | Sequence[int] = "0,1,2",
    levels: str | Mapping[str, Any] | None = None,
    study: str | None = None,
    storage: str | None = None,
    fold: int = 0,
    max_epochs: int | None = None,
    time_budget: float | None = None,
    datalist: str | None = None,
    dataset_dir: str | None = None,
    val_interval: int | None = None,
    overrides: Mapping[str, Any] | str | None = None,
    out: str | None = None,
    results: str = "results",
    report_out: str | None = None,
    heartbeat: int = HEARTBEAT,
    mlflow: bool | str = True,
    wait: bool = True,
    timeout: float | None = None,
    objective: str | None = None,
) -> Path:
    """Run (or continue) the ablation grid of ``bundle``: one factor at a time away from its defaults, every level
    with every seed, then ``ablations.md`` (per-case Dice CIs, paired Wilcoxon vs the defaults, Holm-corrected).

    Args:
        bundle: bundle name under ``bundles/`` or a bundle folder.
        factors: comma-separated factors (preset keys take every registered preset; batch_size_x_epochs scales both
            x0.5 and x2; other numeric keys x0.5 and x2).
        seeds: seeds of every variant, e.g. ``0,1,2``.
        levels: YAML file or dict ``{factor: [levels]}`` replacing the built-in levels.
        study: the study's name (default ``ablation_<bundle>``).
        storage: the study's database (default ``sqlite:///<out>/ablation.db``; ``postgresql://...`` for many machines).
        fold: fold held out; each run is scored by its mean foreground Dice per case there.
        max_epochs: epochs per run (the base of batch_size_x_epochs).
        time_budget: training minutes per run.
        datalist: datalist other than the bundle's.
        dataset_dir: data folder other than the bundle's.
        val_interval: validation interval (epochs).
        overrides: further overrides of every run (a dict or YAML).
        out: folder of the runs (default ``<results>/<dataset>/runs/ablation_<bundle>``).
        results: results root.
        report_out: folder of ``ablations.md`` and its CSVs and plot (default ``<results>/<dataset>``).
        heartbeat: seconds between heartbeats; a run silent for 3 of them is failed and retried.
        mlflow: True (the benchmark's store), a folder or tracking URI, or False.
        wait: before leaving, wait for other workers' runs (retrying those whose worker died).
        timeout: minutes after which this worker starts no new run.
        objective: test hook ``module:function`` replacing the bundle run.
    """
    from shared_components.experiments.tune import _load_objective, base_settings, study_setup

    seed_list = [int(s) for s in _names(str(seeds) if isinstance(seeds, int) else seeds)]
    if not seed_list:
        raise ValueError("Give --seeds, e.g. 0,1,2.")
    bundle_dir, dataset, common, train = base_settings(
        bundle, fold, seed_list[0], max_epochs, time_budget, datalist, dataset_dir, val_interval, overrides
    )
    common.pop("seed")
    table = variants(bundle_dir, factors, levels, {**common, **train})
    results_dir = Path(results).resolve() / dataset
    runs = Path(out).resolve() if out else results_dir / "runs" / f"ablation_{bundle_dir.name}"
    study = study or f"ablation_{bundle_dir.name}"
    storage = storage or f"sqlite:///{runs / 'ablation.db'}"
    setup = {
        **study_setup("ablation", study, bundle_dir, dataset, fold, common, train),
        "space": None,
        "variants": table,
        "seeds": seed_list,
        "trials": len(table) * len(seed_list),
        "sampler": "grid",
        "pruner": "none",
        "out": str(runs),
        "mlflow": mlflow_store(mlflow, results_dir),
        "experiment": f"ablation_{bundle_dir.name}",
    }
    given = {
        "factors": None if factors == DEFAULT_FACTORS else factors,
        "levels": levels if isinstance(levels, str) else None,
        "seeds": seeds,
        "fold": fold,
        "max_epochs": max_epochs,
        "time_budget": time_budget,
        "datalist": datalist,
        "dataset_dir": dataset_dir,
        "val_interval": val_interval,
        "overrides": overrides,
        "study": study if study != f"ablation_{bundle_dir.name}" else None,
        "out": out,
        "report_out": report_out,
    }
    labels = list(table)
    st = optuna.create_study(
        study_name=study,
        storage=open_storage(storage, heartbeat),
        sampler=optuna.samplers.GridSampler({"variant": labels, "seed": seed_list}, seed=0),
        pruner=optuna.pruners.NopPruner(),
        direction="maximize",
        load_if_exists=True,
    )
    setup = bind_setup(st, setup)

    def overrides_of(trial: Any) -> dict[str, Any]:
        label = trial.suggest_categorical("variant", labels)
        return {**table[label]["overrides"], "seed": trial.suggest_categorical("seed", seed_list)}

    n = setup["trials"]
    print(f"ablation {study}: {len(labels)} variants x {len(seed_list)} seeds = {n} runs in {runs}")
    from shared_components.experiments.tune import _print_trial

    with sigterm_as_interrupt():
        work(
            st, make_objective(setup, overrides_of, _load_objective(objective)), n, wait, timeout, on_trial=_print_trial
        )
    report = Path(report_out).resolve() if report_out else results_dir
    return write_ablation(st, setup, report, command_line(bundle, given))


# ---- the table --------------------------------------------------------------------------------------------------


def command_line(bundle: str, given: Mapping[str, Any]) -> str:
    """The ``segbundles tune ablate`` command that makes (or continues) this grid: the options given, lists comma-joined."""

    def text(value: Any) -> str:
        if isinstance(value, Mapping):
            return json.dumps(dict(value))
        if isinstance(value, list | tuple):
            return ",".join(map(str, value))
        return str(value)

    args = [CLI, "tune", "ablate", str(bundle)]
    for key, value in given.items():
        if value is not None:
            args += [f"--{key}", text(value)]
    return shlex.join(args)


def collect(st: Any, setup: Mapping[str, Any]) -> tuple[dict[str, dict[int, dict]], dict[str, dict[int, float]]]:
    """Per variant and seed: the per-case Dice of each class (first completed trial) and the objective value."""
    cases: dict[str, dict[int, dict]] = {}
    values: dict[str, dict[int, float]] = {}
    for t in sorted(st.get_trials(deepcopy=False), key=lambda t: t.number):
        if t.state != optuna.trial.TrialState.COMPLETE or "case_dice" not in t.user_attrs:
            continue
        label, seed = t.params.get("variant"), int(t.params.get("seed", 0))
        if label in setup["variants"] and seed not in cases.get(label, {}):
            cases.setdefault(label, {})[seed] = t.user_attrs["case_dice"]
            values.setdefault(label, {})[seed] = float(t.value)
    return cases, values


def seed_means(per_seed: Mapping[int, Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """Per case and class, the Dice averaged over the seeds that evaluated it."""
    sums: dict[str, dict[str, list[float]]] = {}
    for cases in per_seed.values():
        for case, classes in cases.items():
            for cls, v in classes.items():
                sums.setdefault(case, {}).setdefault(cls, []).append(float(v))
    return {c: {k: sum(v) / len(v) for k, v in classes.items()} for c, classes in sums.items()}


def ablation_table(
    variants_: Mapping[str, Mapping[str, Any]],
    cases: Mapping[str, Mapping[int, Mapping]],
    values: Mapping[str, Mapping[int, float]],
) -> Any:
    """One row per variant: seeds done, mean Dice [bootstrap CI over cases of the seed-averaged per-case Dice],
    SD of the per-seed means, the paired difference to ``default`` [CI], Wilcoxon p and Holm-adjusted p."""
    import numpy as np
    import pandas as pd

    from shared_components.evaluation.statistics import bootstrap_ci, holm, paired_wilcoxon

    per_case = {v: case_means(seed_means(cases[v])) for v in cases}
    ref = per_case.get(DEFAULT, {})
    rows = []
    for label, spec in variants_.items():
        row: dict[str, Any] = {"variant": label, "factor": spec["factor"], "level": json.dumps(spec["level"])}
        row["level"] = spec["level"] if isinstance(spec["level"], str) else row["level"]
        seeds = values.get(label, {})
        row["seeds"] = len(seeds)
        row["seed_values"] = ";".join(f"{s}:{v:.4f}" for s, v in sorted(seeds.items()))
        row["seed_sd"] = float(np.std(list(seeds.values()), ddof=1)) if len(seeds) > 1 else None
        dice = per_case.get(label, {})
        x = list(dice.values())
        row["cases"] = len(x)
        row["dice"] = float(np.mean(x)) if x else None
        row["dice_ci_low"], row["dice_ci_high"] = bootstrap_ci(x) if x else (None, None)
        common = sorted(set(dice) & set(ref))
        if label != DEFAULT and common:
            diff = [dice[c] - ref[c] for c in common]
            row["diff"] = float(np.mean(diff))
            row["diff_ci_low"], row["diff_ci_high"] = bootstrap_ci(diff)
            row["p_wilcoxon"] = paired_wilcoxon([dice[c] for c in common], [ref[c] for c in common])
        rows.append(row)
    table = pd.DataFrame(rows)
    for col in ("diff", "diff_ci_low", "diff_ci_high", "p_wilcoxon"):
        if col not in table:
            table[col] = None
    table["p_holm"] = holm([p if p is not None else float("nan") for p in table["p_wilcoxon"]])
    return table


def write_ablation(st: Any, setup: Mapping[str, Any], out_dir: Path, command: str | None = None) -> Path:
    """``ablations.md``/``.csv``, ``ablations_per_case.csv`` and ``plots/ablation_dice.png`` in ``out_dir``;
    ``command`` (the one that made the grid) is printed under the tables."""
    import pandas as pd

    from shared_components.evaluation import plots
    from shared_components.evaluation.formatting import fmt_ci, fmt_num, fmt_p
    from shared_components.evaluation.report import write_csv
    from shared_components.files import write_text_atomic

    cases, values = collect(st, setup)
    table = ablation_table(setup["variants"], cases, values)
    write_csv(out_dir / CSV, table)
    rows = [
        {"variant": v, "seed": s, "case": c, "class": k, "dice": d}
        for v, per_seed in cases.items()
        for s, per_case in per_seed.items()
        for c, classes in per_case.items()
        for k, d in classes.items()
    ]
    write_csv(out_dir / PER_CASE_CSV, pd.DataFrame(rows, columns=["variant", "seed", "case", "class", "dice"]))
    figure = None
    if rows:
        frame = pd.DataFrame(
            [
                {
                    "model": v,
                    "case": c,
                    "fold": str(setup["fold"]),
                    "centre": "",
                    "class": k,
                    "metric": "dice",
                    "value": d,
                }
                for v in cases
                for c, classes in seed_means(cases[v]).items()
                for k, d in classes.items()
            ]
        )
        figure = plots.case_boxplot_png(
            frame, out_dir / "plots" / PLOT, "dice", [v for v in setup["variants"] if v in cases]
        )
    seeds = ", ".join(map(str, setup["seeds"]))
    lines = [
        f"# Ablations: {setup['bundle']}",
        "",
        f"One factor at a time away from the bundle's defaults, seeds {seeds}, fold {setup['fold']} "
        f"(the same data, budget `{json.dumps(setup['train'])}` and fixed overrides "
        f"`{json.dumps(setup['common'])}` for every run). Dice: mean foreground Dice per case, averaged over the "
        "seeds, mean over cases [95% bootstrap CI]; difference to the defaults paired by case [CI]; p: two-sided "
        "paired Wilcoxon signed-rank test against the defaults on the seed-averaged per-case Dice, Holm-corrected "
        "over all variants. Seed SD: standard deviation of the per-seed mean Dice.",
        "",
        "| factor | level | seeds | Dice | difference | p | p (Holm) | seed SD |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table.to_dict("records"):
        level = r["level"]
        if r["factor"] == DEFAULT:
            level = "bundle defaults"
        lines.append(
            f"| {r['factor']} | {level} | {r['seeds']} | {fmt_ci(r['dice'], r['dice_ci_low'], r['dice_ci_high'])} | "
            f"{fmt_ci(r['diff'], r['diff_ci_low'], r['diff_ci_high'], digits=4)} | {fmt_p(r['p_wilcoxon'])} | "
            f"{fmt_p(r['p_holm'])} | {fmt_num(r['seed_sd'], 4)} |"
        )
    missing = setup["trials"] - int(table["seeds"].sum())
    lines += [""]
    if missing > 0:
        lines += [f"{missing} of {setup['trials']} runs are not finished (yet); rerun the same command to go on.", ""]
    if figure is not None:
        lines += [f"![per-case Dice per variant](plots/{PLOT})", ""]
    if command:
        lines += ["Reproduce (the same command continues an unfinished grid and rewrites this report):", ""]
        lines += ["```bash", command, "```", ""]
    lines += [
        f"Files: `{CSV}` (every number above), `{PER_CASE_CSV}` (every case, class and seed); runs in "
        f"`{setup['out']}`, Optuna study `{setup['study']}`, MLflow experiment `{setup['experiment']}`.",
        "",
    ]
    write_text_atomic(out_dir / MD, "\n".join(lines))
    print(f"ablation table: {out_dir / MD}")
    return out_dir / MD
