"""Ship a finished benchmark run in its bundle: the run's best weights become ``models/model.pt``, and the numbers
that run measured (held-out Dice with CIs, surface metrics, training time, hardware, the reproducing command) go
into ``configs/metadata.json`` and the model card, with the training history and learning curves in ``docs/``.

Nothing is copied by hand, so the card can only state what the shipped weights scored; a bundle that already ships
weights is replaced only when asked (``force``), and the files are written as one set
(:class:`~shared_components.files.StagedFiles`): a kill leaves the bundle as it was, or completes on the next ship.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared_components.bundle.ensemble_weights import ensemble_text, member_files, write_members
from shared_components.bundle.model_card import UNTRAINED_NOTE, replace_performance, wrap_markdown
from shared_components.evaluation.report import MEAN_CLASS, SUMMARY_JSON
from shared_components.files import StagedFiles


def _read(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {what}")
    return json.loads(path.read_text())


def _benchmark_settings(run_dir: Path) -> dict[str, Any]:
    """The benchmark.json of the grid a run belongs to (``<out>/<dataset>/runs/<bundle>/fold_<k>``)."""
    from shared_components.experiments.benchmark import SETTINGS

    for parent in run_dir.parents:
        if (parent / SETTINGS).is_file():
            return json.loads((parent / SETTINGS).read_text())
    raise FileNotFoundError(
        f"no {SETTINGS} above {run_dir}: ship runs made by `segbundles benchmark run` (it records the command, "
        "budget and machine the card must state)."
    )


def run_facts(run_dir: str | Path) -> dict[str, Any]:
    """What a finished benchmark run measured: its record, evaluation summary, best checkpoint and grid settings.

    Raises (naming the missing file) when the run is not finished, not evaluated or kept no weights.
    """
    from shared_components.experiments.runs import RUN_FILE

    run_dir = Path(run_dir)
    record = _read(run_dir / RUN_FILE, "not a benchmark run folder")
    if record.get("status") != "done":
        raise ValueError(f"{run_dir} is not finished (status {record.get('status')!r}); run the benchmark to the end.")
    summary = _read(run_dir / "eval" / SUMMARY_JSON, "the run was not evaluated")
    if record.get("members"):  # an ensemble of benchmark.py ensemble: its members' runs, its own scores
        runs = [run_run_dir(run_dir, m) for m in record["members"]]
        primary, *members = (run_facts(r) for r in runs)
        facts = {"run_dir": run_dir, "summary": summary, "primary": primary, "members": members, "ensemble": record}
        return primary | facts
    best = _read(run_dir / "best_model.json", "the run kept no weights (best_model.json)")
    started = _read(run_dir / "config.json", "the run kept no config.json")
    weights = run_dir / "models" / "model.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing: the run promoted no weights.")
    overrides = record.get("overrides", {})
    return {
        "run_dir": run_dir,
        "record": record,
        "summary": summary,
        "best": best,
        "weights": weights,
        "settings": _benchmark_settings(run_dir),
        "fold": int(record["fold"]),
        "selection_fold": overrides.get("selection_fold"),
        "augmentation_mode": augmentation_mode(started),
        "cpu_bf16": trained_in_bf16(started),
    }


def run_run_dir(ensemble_run: Path, bundle: str) -> Path:
    """A member's run folder next to an ensemble's: ``runs/<bundle>/fold_<k>`` for ``runs/<ensemble>/fold_<k>``."""
    return ensemble_run.parent.parent / bundle / ensemble_run.name


def augmentation_mode(started: dict[str, Any]) -> str:
    """Where a run's augmentation ran (``augmentation_args#mode``), from the config it started with (its
    ``config.json``; runs from before the mode was written into every header ran per sample, the default then)."""
    config = started.get("config", {})
    return str((config.get("augmentation_args") or {}).get("mode", "sample"))


def trained_in_bf16(started: dict[str, Any]) -> bool:
    """Whether a run's forward passes ran under CPU bfloat16 autocast (``cpu_bf16`` in its ``config.json``'s
    signature)."""
    return bool(started.get("signature", {}).get("cpu_bf16", False))


BF16_TEXT = (
    " The forward passes ran in bfloat16 on the CPU's AMX units (`cpu_bf16`, on by default where AMX is present;"
    " without AMX the same command trains in float32, about half as many epochs in the same budget)."
)

AUGMENTED = {
    "sample": "each patch augmented in the data loader (`augmentation_args#mode sample`)",
    "batch": "the collated batches augmented on the training device (`augmentation_args#mode batch`)",
}


def hardware_text(machine: dict[str, Any]) -> str:
    """``2 CPU cores (1 torch thread), no GPU`` from a benchmark's machine record."""
    threads = machine.get("torch_threads")
    cpu = f"{machine.get('cpu_cores')} CPU cores" + (
        f" ({threads} torch thread{'s' * (threads != 1)})" if threads else ""
    )
    return f"{cpu}, {machine['gpu']}" if machine.get("gpu") else f"{cpu}, no GPU"


# where a card's reproducing command writes: not the committed results folder, which keeps the runs behind the card
# (and whose benchmark.json would refuse a one-fold command as other settings)
REPRODUCE_OUT = "work/reproduce"


def reproduce_command(facts: dict[str, Any], bundles: list[str] | None = None) -> str:
    """The benchmark's own command line (:func:`~shared_components.experiments.benchmark.command`) for this one
    bundle and fold, with the run's torch threads (from the repository root), writing to :data:`REPRODUCE_OUT`."""
    from shared_components.experiments.benchmark import command
    from shared_components.transforms.batch import DEFAULT_MODE

    settings = facts["settings"]
    threads = settings.get("machine", {}).get("torch_threads")
    prefix = f"OMP_NUM_THREADS={threads} " if threads else ""
    overrides = dict(settings.get("overrides") or {})
    if facts.get("augmentation_mode", DEFAULT_MODE) != DEFAULT_MODE:  # trained before the default changed
        overrides.setdefault("augmentation_args#mode", facts["augmentation_mode"])
    names = bundles or [facts["record"]["bundle"]]
    one = {**settings, "bundles": names, "folds": [facts["fold"]], "overrides": overrides, "out": REPRODUCE_OUT}
    return prefix + command(one)


def _stat(summary: dict[str, Any], cls: str, metric: str) -> dict[str, Any] | None:
    return summary.get("summary", {}).get("all", {}).get(cls, {}).get(metric)


def _ci(stat: dict[str, Any] | None, digits: int) -> str:
    if not stat:
        return "-"
    return f"{stat['mean']:.{digits}f} [{stat['ci_low']:.{digits}f}, {stat['ci_high']:.{digits}f}]"


def eval_metrics(facts: dict[str, Any]) -> dict[str, float]:
    """``mean_dice`` and ``<class>_dice`` of the held-out fold, for ``eval_metrics`` of metadata.json."""
    summary = facts["summary"]
    out = {"mean_dice": round(_stat(summary, MEAN_CLASS, "dice")["mean"], 4)}
    for cls in summary["classes"]:
        out[f"{cls.replace(' ', '_')}_dice"] = round(_stat(summary, cls, "dice")["mean"], 4)
    return out


def _minutes(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s"


def performance_section(facts: dict[str, Any], note: str | None = None) -> str:
    """The model card's ``## Performance`` section for the shipped run (markdown, ends with a blank line); ``note``:
    what the records cannot say (e.g. other work sharing the machine), after the training time."""
    summary, record, best, settings = facts["summary"], facts["record"], facts["best"], facts["settings"]
    metrics = [m for m in ("dice", "hd95", "nsd") if m in summary["metrics"]]
    names = {"dice": "Dice", "hd95": "HD95 mm", "nsd": f"NSD ({summary.get('nsd_tolerance_mm', 1):g} mm)"}
    rows = [f"| class | {' | '.join(names[m] for m in metrics)} |", "|---" * (len(metrics) + 1) + "|"]
    for cls, label in [*((c, c) for c in summary["classes"]), (MEAN_CLASS, "**mean foreground**")]:
        cells = [_ci(_stat(summary, cls, m), 2 if m == "hd95" else 3 if m == "nsd" else 4) for m in metrics]
        rows.append(f"| {label} | {' | '.join(cells)} |")
    selection = facts["selection_fold"]
    chosen = (
        f"these are the final weights (epoch {best['epoch']}): no checkpoint was chosen, so the fold is unseen"
        if best.get("choice") == "final"
        else f"the checkpoint (epoch {best['epoch']}, validation Dice {best['metric']:.4f}) was chosen on fold {selection}, "
        f"and neither fold was trained on"
        if selection is not None
        else f"the checkpoint (epoch {best['epoch']}) was chosen on this same fold, so the numbers are slightly optimistic"
    )
    budget = settings.get("time_budget_minutes")
    length = (
        f"the {budget:g}-minute budget allowed {record['epochs']} epochs ({record['seconds_per_epoch']:.1f} s each), "
        "with the learning-rate schedule fitted to that length"
        if budget
        else f"{record['epochs']} epochs ({record['seconds_per_epoch']:.1f} s each)"
    )
    finished = record.get("finished", "").split(" ")[0]
    if facts.get("members"):  # an ensemble: every member's training counts
        text = ensemble_text(facts)
        what, length, command = f"weights are {text['what']}", text["lengths"], text["command"]
        seconds, together = facts["ensemble"]["train_seconds"], " (the members' runs together)"
        finals = all(m["best"].get("choice") == "final" for m in [facts["primary"], *facts["members"]])
        chosen = "every member keeps its final weights, so the fold is unseen" if finals else chosen
    else:
        kept = "the final weights" if best.get("choice") == "final" else "the best checkpoint"
        what, command = f"`models/model.pt` is {kept} of one benchmark run", reproduce_command(facts)
        seconds, together = record["train_seconds"], ""
    return wrap_markdown(f"""## Performance

The shipped {what} (seed {settings.get("seed", 0)}, {finished}). Scored on fold {facts["fold"]}
({summary["cases"]} cases, in each case's original geometry; mean [95% bootstrap CI]): {chosen}.

{chr(10).join(rows)}

Training took **{_minutes(seconds)}**{together} on {hardware_text(settings.get("machine", {}))}: {length};
{AUGMENTED.get(facts["augmentation_mode"], facts["augmentation_mode"])}.{BF16_TEXT if facts.get("cpu_bf16") else ""}
{note.strip() + " " if note else ""}Peak RAM {record.get("train_peak_ram_mb", 0) / 1024:.1f} GB. The per-epoch history is in
[`training_history.csv`](training_history.csv) and [`learning_curves.png`](learning_curves.png).

Reproduce the weights and this table (from the repository root, data in `$SEG_DATA_DIR`; the run folder under
`work/reproduce/` holds `models/model.pt` and `eval/`):

```bash
{command}
```

""")


def _description(bundle: Path, facts: dict[str, Any], metrics: dict[str, float]) -> str:
    """The specs' description of the bundle, then what the shipped weights are and scored."""
    from shared_components.bundle import scaffold
    from shared_components.bundle.model_card import ModelCard

    record, summary = facts["record"], facts["summary"]
    pair = scaffold.bundle_pair(bundle)
    if pair is None:
        raise ValueError(f"{bundle} is not made from specs (standalone); ship its weights by hand.")
    base = ModelCard(bundle, *scaffold.pair_specs(*pair)).metadata()["description"].replace(UNTRAINED_NOTE, "").strip()
    sel = facts["selection_fold"]
    chosen = f"checkpoint chosen on fold {sel}" if sel is not None else "checkpoint chosen on the same fold"
    if facts["best"].get("choice") == "final":
        chosen = "final weights, no checkpoint chosen"
    if facts.get("members"):
        names = ", ".join(m["record"]["bundle"] for m in facts["members"])
        base += f" Served as an ensemble with {names} (models/ensemble/, averaged probabilities)."
    return (
        f"{base} Trained for {_minutes(facts.get('ensemble', record)['train_seconds'])} on "
        f"{hardware_text(facts['settings'].get('machine', {}))}; fold {facts['fold']} held out ({summary['cases']} "
        f"cases, {chosen}): mean foreground Dice {metrics['mean_dice']:.4f}."
    )


def check_weights_fit(bundle_dir: Path, weights: Path, run_dir: Path) -> None:
    """Refuse weights that the bundle's own ``network_def`` cannot load (a run trained with another width through
    the benchmark's ``--overrides``): shipped, they would fail only when a user first runs the bundle."""
    from shared_components.evaluation.ensemble import bundle_parser, load_weights

    network = bundle_parser(bundle_dir).get_parsed_content("network_def")
    try:
        network.load_state_dict(load_weights(weights))
    except RuntimeError as e:
        raise ValueError(
            f"{weights} does not fit {Path(bundle_dir).name}'s network_def ({_first_problem(e)}). The run "
            f"{run_dir} was trained with another network (its overrides are in run.json); give the bundle that "
            "network through its spec and `new-bundle sync`, then ship."
        ) from e


def _first_problem(error: RuntimeError) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[1] if len(lines) > 1 else lines[0]).rstrip(".") if lines else "cannot load"


def _bump(version: str) -> str:
    major, minor, _ = (int(x) for x in version.split("."))
    return f"{major}.{minor + 1}.0"


def ship_run(bundle: str | Path, run_dir: str | Path, force: bool = False, note: str | None = None) -> list[Path]:
    """Put a finished benchmark run into ``bundle``: weights, metadata (``eval_metrics``, description, a new minor
    version with its changelog line), the card's Performance section, ``docs/training_history.csv`` and
    ``docs/learning_curves.png``. Returns the files written.

    Refuses a run of another bundle, and replacing shipped weights unless ``force``; ``note`` goes into the card
    (:func:`performance_section`).
    """
    from shared_components.evaluation.plots import learning_curves_png

    bundle, facts = Path(bundle), run_facts(run_dir)
    if facts["record"]["bundle"] != bundle.name:
        raise ValueError(f"{facts['run_dir']} is a run of {facts['record']['bundle']}, not of {bundle.name}.")
    target = bundle / "models" / "model.pt"
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists (shipped weights); pass force=True to replace them with this run's.")
    meta_path, card_path = bundle / "configs" / "metadata.json", bundle / "docs" / "README.md"
    meta, card = json.loads(meta_path.read_text()), card_path.read_text()
    check_weights_fit(bundle, facts["weights"], facts["run_dir"])
    for member in facts.get("members", []):  # each other member of an ensemble into its own bundle's network
        check_weights_fit(Path(member["record"]["bundle_dir"]), member["weights"], member["run_dir"])
    metrics = eval_metrics(facts)
    version = _bump(meta["version"])
    kind = f"an ensemble of {len(facts['members']) + 1} benchmark runs" if facts.get("members") else "a benchmark run"
    meta["changelog"] = {
        version: f"weights of {kind}: fold {facts['fold']} mean Dice {metrics['mean_dice']:.4f}",
        **meta.get("changelog", {}),
    }
    meta |= {"version": version, "eval_metrics": metrics, "description": _description(bundle, facts, metrics)}
    # every text is made before the first file is written, so an error here leaves the bundle as it was
    card = replace_performance(card, performance_section(facts, note))
    members = member_files(facts.get("members", []))
    runs = [facts.get("primary", facts), *facts.get("members", [])]
    history = runs[0]["run_dir"] / "logs" / "history.csv"
    # one set: a kill before the end leaves the bundle as it was, a kill while renaming is completed by the next ship
    with StagedFiles(bundle) as stage:
        written = [stage.copy(facts["weights"], target), *write_members(bundle, members, stage)]
        if history.is_file():
            written.append(stage.copy(history, bundle / "docs" / "training_history.csv"))
            curves = {r["record"]["bundle"]: r["run_dir"] / "logs" / "history.csv" for r in runs}
            png = bundle / "docs" / "learning_curves.png"
            learning_curves_png({k: v for k, v in curves.items() if v.is_file()}, stage.path(png))
            written.append(png)
        written.append(stage.write_text(meta_path, json.dumps(meta, indent=4) + "\n"))
        written.append(stage.write_text(card_path, card))
    return written
