"""Cross-model ensembles of a benchmark's own runs (``benchmark.py ensemble``), scored fold by fold like a model.

For every fold on which all members finished, the fold's member runs (each trained without that fold) have their
probabilities averaged (:func:`~shared_components.experiments.ensemble.ensemble`, through the first member's stock
configs) and evaluated on that fold. The results are a run folder per fold, ``runs/<dataset>_ensemble_<a>+<b>/fold_k``
with ``run.json`` and ``eval/``, so the leaderboard ranks the ensemble with the single models, pooled over the same
folds and cases; its training cost is the members' together. ``ensembles.json`` in the results folder lists the
ensembles the report includes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared_components.evaluation.report import PER_CASE, SUMMARY_JSON, write_json
from shared_components.experiments.runs import RUN_FILE, model_name, read_run

ENSEMBLES = "ensembles.json"


def ensemble_name(dataset: str, members: Sequence[str]) -> str:
    """``hippocampus_mri_ensemble_segresnet+attention_unet`` for two hippocampus bundles."""
    return f"{dataset}_ensemble_" + "+".join(model_name(m, dataset) for m in members)


def read_ensembles(results: Path) -> dict[str, dict[str, Any]]:
    """The ensembles of a results folder: ``{name: {"members": [...], "tta_flip_axes": [...]}}``."""
    path = Path(results) / ENSEMBLES
    return json.loads(path.read_text()) if path.is_file() else {}


def _members(settings: dict[str, Any], members: str | Sequence[str]) -> list[str]:
    names = [m.strip() for m in members.split(",")] if isinstance(members, str) else [str(m) for m in members]
    names = [n if n in settings["bundles"] else f"{settings['name']}_{n}" for n in names if n]
    unknown = [n for n in names if n not in settings["bundles"]]
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not bundles of this benchmark ({', '.join(settings['bundles'])}).")
    if len(set(names)) < 2:
        raise ValueError(f"an ensemble needs at least two different bundles of the benchmark, got {names}.")
    return names


def ensemble_benchmark(
    results: str | Path, members: str, tta_flip_axes: list[int] | None = None, force: bool = False, report: bool = True
) -> Path:
    """Score the cross-model ensemble of a benchmark's runs on each of its folds, and add it to the leaderboard.

    Args:
        results: the benchmark's results folder (``<out>/<dataset>``, with ``benchmark.json``).
        members: comma-separated bundles of the benchmark (names, or model names such as ``segresnet,unet``).
        tta_flip_axes: also mirror at test time along these spatial axes.
        force: score again folds that were scored already.
        report: rewrite the leaderboard afterwards.
    """
    from shared_components.experiments.benchmark import RUNS, SETTINGS, run_path
    from shared_components.experiments.ensemble import ensemble

    results = Path(results).resolve()
    if not (results / SETTINGS).is_file():
        raise FileNotFoundError(f"No benchmark in {results} ({SETTINGS} missing): run `benchmark.py run` first.")
    settings = json.loads((results / SETTINGS).read_text())
    names = _members(settings, members)
    name, axes = ensemble_name(settings["name"], names), [int(a) for a in (tta_flip_axes or [])]
    scored, skipped = [], []
    for fold in settings["folds"]:
        recs = [read_run(run_path(results, m, fold)) for m in names]
        out = run_path(results, name, fold)
        if not all(r.get("status") == "done" for r in recs):
            skipped.append(
                f"fold {fold} ({', '.join(m for m, r in zip(names, recs, strict=True) if r.get('status') != 'done')} not done)"
            )
            continue
        old = read_run(out)
        same = old.get("status") == "done" and old.get("tta_flip_axes") == axes
        if same and (out / "eval" / PER_CASE).is_file() and not force:
            scored.append(fold)
            continue
        record: dict[str, Any] = {"bundle": name, "members": names, "fold": fold, "tta_flip_axes": axes}
        record |= {"status": "running", "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        write_json(out / RUN_FILE, record)
        t0 = time.perf_counter()
        try:
            ensemble(
                ",".join(r["bundle_dir"] for r in recs),
                fold=fold,
                out=str(out),
                checkpoints=",".join(str(run_path(results, m, fold) / "models" / "model.pt") for m in names),
                tta_flip_axes=axes,
                datalist=settings["datalist"],
                dataset_dir=settings["dataset_dir"],
                member_overrides=[settings.get("overrides") or {}] * len(names),  # what every run was trained with
            )
            record["status"] = "done"
        except (RuntimeError, OSError, ValueError) as e:
            record |= {"status": "failed", "failed_stage": "evaluate", "error": str(e)[-3000:]}
        record["eval_seconds"] = time.perf_counter() - t0
        # what the ensemble cost to make: its members' trainings together
        record["train_seconds"] = sum(float(r.get("train_seconds") or 0) for r in recs)
        params = [r.get("parameters") for r in recs]
        record["parameters"] = sum(params) if all(isinstance(p, int) for p in params) else None
        summary = out / "eval" / SUMMARY_JSON
        if summary.is_file():
            info = json.loads(summary.read_text())
            record["inference_seconds_per_case"] = info.get("timing", {}).get("inference_seconds_median")
            record |= {"eval_peak_ram_mb": info.get("peak_ram_mb"), "cases": info.get("cases")}
        record["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        write_json(out / RUN_FILE, record)
        if record["status"] != "done":
            raise RuntimeError(
                f"the ensemble failed on fold {fold}: {record['error'][-1500:]} (log: {out}/ensemble.log)"
            )
        scored.append(fold)
    if not scored:
        raise RuntimeError(f"no fold has finished runs of every member: {'; '.join(skipped)}.")
    write_json(results / ENSEMBLES, read_ensembles(results) | {name: {"members": names, "tta_flip_axes": axes}})
    done = f"{name}: scored on fold(s) {', '.join(map(str, scored))} (runs in {results / RUNS / name})"
    print(done + (f"; not yet on {'; '.join(skipped)}" if skipped else ""), flush=True)
    if report:
        from shared_components.experiments.leaderboard import make_report

        make_report(results)
    return results
