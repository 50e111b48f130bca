"""One training + evaluation run of a bundle in its own folder, through the stock MONAI bundle CLI, resumable and
recorded in ``run.json``; shared by cross-validation and the benchmark."""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shared_components.bundle.runner import EVALUATE, INFER, OUTPUT_KEYS, TRAIN, output_overrides, run_bundle
from shared_components.bundle.scaffold import BUNDLES_DIR, all_bundles
from shared_components.evaluation.report import PER_CASE, SUMMARY_JSON, write_json

RUN_FILE = "run.json"
LOG_FILE = "run.log"
INFER_LOG = "infer.log"  # the timed inference's own log (parsed for the engine's time)
# ignite's last line of an engine run: ``Engine run finished. Time taken: 00:00:07.191``
_ENGINE_TIME = re.compile(r"Engine run finished\. Time taken: (\d+):(\d+):(\d+(?:\.\d*)?)")


def resolve_bundle(bundle: str | os.PathLike) -> Path:
    """A bundle folder from a path or a name under ``bundles/``."""
    p = Path(bundle)
    for cand in (p, BUNDLES_DIR / str(bundle)):
        if (cand / "configs" / "train.yaml").is_file():
            return cand.resolve()
    known = ", ".join(b.name for b in all_bundles()[:8])
    raise FileNotFoundError(
        f"No bundle {bundle!r} (looked for {p}/configs/train.yaml and in {BUNDLES_DIR}); e.g. {known}"
    )


def resolve_bundles(patterns: str | Sequence[str]) -> list[Path]:
    """Bundles matching names, paths or globs (``hippocampus_mri_*``), comma-separated or as a list; in the
    given order, each once."""
    if isinstance(patterns, str):
        patterns = [p for p in patterns.split(",") if p.strip()]
    out: list[Path] = []
    for pat in (str(p).strip() for p in patterns):
        name = Path(pat).name if pat.startswith(("bundles/", "./bundles/")) else pat
        if any(ch in name for ch in "*?["):
            hits = [b for b in all_bundles() if fnmatch.fnmatch(b.name, name)]
            if not hits:
                raise FileNotFoundError(f"No bundle in {BUNDLES_DIR} matches {pat!r}.")
        else:
            hits = [resolve_bundle(pat)]
        out += [h for h in hits if h not in out]
    if not out:
        raise ValueError("No bundles given: pass --bundles with names, paths or globs (e.g. 'hippocampus_mri_*').")
    return out


def parse_folds(folds: int | str | Sequence[int]) -> list[int]:
    """``0``, ``"0,1,2"``, ``(0, 1)`` -> a list of ints."""
    if isinstance(folds, int):
        return [folds]
    if isinstance(folds, str):
        folds = [f for f in folds.split(",") if f.strip()]
    out = [int(f) for f in folds]
    if not out:
        raise ValueError("No folds given: pass e.g. --folds 0,1,2,3,4.")
    return out


def bundle_values(bundle_dir: Path, ids: Sequence[str], overrides: Mapping[str, Any] | None = None) -> dict:
    """Resolved config values of a bundle's train.yaml (with ``overrides``; ``bundle_root`` is the bundle folder)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle_dir / "configs" / "train.yaml"))
    parser.update({"bundle_root": str(bundle_dir), **dict(overrides or {})})
    values = {i: parser.get_parsed_content(i) for i in ids}
    return {k: str((bundle_dir / v).resolve()) if k in ("datalist", "dataset_dir") else v for k, v in values.items()}


def count_parameters(bundle_dir: Path, overrides: Mapping[str, Any] | None = None) -> int:
    """Trainable parameters of the bundle's ``network_def`` (with ``overrides``, e.g. a benchmark's)."""
    net = bundle_values(bundle_dir, ["network_def"], overrides)["network_def"]
    return int(sum(p.numel() for p in net.parameters() if p.requires_grad))


def model_name(bundle: str, dataset: str) -> str:
    """``hippocampus_mri_attention_unet`` -> ``attention_unet``."""
    return bundle[len(dataset) + 1 :] if bundle.startswith(dataset + "_") else bundle


def read_run(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / RUN_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def history_stats(history_csv: Path) -> dict[str, float]:
    """Epochs, median seconds per epoch and peak memory from ``EpochHistory``'s ``history.csv``."""
    import pandas as pd

    if not Path(history_csv).is_file():
        return {}
    h = pd.read_csv(history_csv)
    if h.empty:
        return {}
    return {
        "epochs": int(h["epoch"].max()),
        "seconds_per_epoch": float(h["epoch_seconds"].median()),
        "train_peak_ram_mb": float(h["peak_ram_mb"].max()),
        "train_peak_vram_mb": float(h.get("peak_vram_mb", pd.Series([0.0])).max()),
    }


def train_and_evaluate(
    bundle_dir: Path,
    run_dir: Path,
    fold: int,
    overrides: Mapping[str, Any] | None = None,
    train_overrides: Mapping[str, Any] | None = None,
    save_predictions: bool = False,
    force: bool = False,
    infer_cases: int = 0,
) -> dict[str, Any]:
    """Train ``bundle_dir`` on ``fold`` into ``run_dir`` (``models/``, ``logs/``, ``eval/``, ``run.log``) and
    evaluate its best checkpoint; returns (and writes atomically to ``run.json``) the run record.

    With ``infer_cases`` > 0 a finished run is also timed end to end through the stock inference command on that
    many validation cases (:func:`timed_inference`, ``cli_*`` keys of the record; a failure there is recorded in
    ``infer_error`` and leaves the run done).

    Resumable: a finished run is returned as is (timed first if it was not and ``infer_cases`` asks for it), a run
    whose training finished is only evaluated, an interrupted training resumes from its last saved epoch (``force``
    redoes both from scratch). Failures do not raise: the record has ``status: failed`` and the error with the log
    tail.
    """
    run_dir = Path(run_dir)
    record = read_run(run_dir)
    done = record.get("status") == "done" and (run_dir / "eval" / PER_CASE).is_file()
    if done and not force:
        if infer_cases and record.get("cli_seconds_per_volume") is None:
            common = {**(overrides or {}), "fold": fold}
            record.pop("infer_error", None)
            record.update(_timing_or_error(bundle_dir, run_dir, fold, common, infer_cases))
            write_json(run_dir / RUN_FILE, {k: v for k, v in record.items() if not _nan(v)})
        return record
    trained = record.get("train_seconds") is not None and (run_dir / "models" / "model.pt").is_file()
    if force:
        trained = False
    common = {**(overrides or {}), "fold": fold, **output_overrides(run_dir)}
    record.update(
        {
            "bundle": bundle_dir.name,
            "bundle_dir": str(bundle_dir),
            "fold": fold,
            "overrides": {k: v for k, v in {**common, **(train_overrides or {})}.items() if k not in OUTPUT_KEYS},
            "status": "running",
            "started": record.get("started") if trained else time.strftime("%Y-%m-%d %H:%M:%S"),
        }
    )
    record.pop("error", None)
    log = run_dir / LOG_FILE
    stage = "train"
    try:
        if not trained:
            from shared_components.training.checkpoint import run_status  # torch: imported when training

            # an interrupted training (state in run_dir) continues where it stopped; force starts it over
            flags = {"overwrite": True} if force else {"resume": True} if run_status(run_dir) else {}
            if not flags.get("resume") and (run_dir / "logs" / "history.csv").is_file():
                (run_dir / "logs" / "history.csv").unlink()  # a fresh history for a fresh training
            write_json(run_dir / RUN_FILE, record)
            train = {**common, **(train_overrides or {}), **flags}
            record["train_seconds"] = run_bundle(bundle_dir, TRAIN, train, log)
        stage = "evaluate"
        write_json(run_dir / RUN_FILE, record)
        ev = {**common, "save_predictions": bool(save_predictions)}
        record["eval_seconds"] = run_bundle(bundle_dir, EVALUATE, ev, log)
        record["status"] = "done"
    except (RuntimeError, OSError) as e:
        record.update({"status": "failed", "failed_stage": stage, "error": str(e)[-3000:]})
        if not isinstance(e, RuntimeError):
            record["error"] = traceback.format_exc()[-3000:]
    record.update(history_stats(run_dir / "logs" / "history.csv"))
    summary = run_dir / "eval" / SUMMARY_JSON
    if record["status"] == "done" and summary.is_file():
        info = json.loads(summary.read_text())
        timing = info.get("timing", {})
        # the median is robust to the first case's warm-up and to other work on the machine
        record["inference_seconds_per_case"] = timing.get("inference_seconds_median")
        record["eval_peak_ram_mb"] = info.get("peak_ram_mb")
        record["eval_peak_vram_mb"] = info.get("peak_vram_mb")
        record["cases"] = info.get("cases")
    record.pop("infer_error", None)
    if record["status"] == "done" and infer_cases:
        record.update(_timing_or_error(bundle_dir, run_dir, fold, common, infer_cases))
    record["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_json(run_dir / RUN_FILE, {k: v for k, v in record.items() if not _nan(v)})
    return record


def engine_seconds(log_text: str) -> float | None:
    """Seconds of the last ignite engine run in a bundle's log (``Engine run finished. Time taken: H:MM:SS.mmm``)."""
    found = _ENGINE_TIME.findall(log_text)
    if not found:
        return None
    h, m, s = found[-1]
    return int(h) * 3600 + int(m) * 60 + float(s)


def timed_inference(
    bundle_dir: Path, run_dir: Path, fold: int, overrides: Mapping[str, Any] | None = None, cases: int = 3
) -> dict[str, Any]:
    """What a user waits for: the stock inference command (``configs/inference.yaml``, in a fresh process) with the
    run's ``models/model.pt`` on the first ``cases`` validation images of ``fold``, writing to ``run_dir/predictions``.

    Returns ``cli_inference_cases``, ``cli_inference_seconds`` (the command's wall time), ``cli_seconds_per_volume``
    (the inference engine's run, from its log line, over the cases: loading, preprocessing, sliding window, inversion
    and writing each label map) and ``cli_startup_seconds`` (the rest: interpreter, imports, config parsing, network
    construction and exit, paid once per command). ``overrides`` are the run's; those ``inference.yaml`` has are
    passed on (network, patch, preprocessing), the others dropped.
    """
    from monai.bundle import ConfigParser

    from shared_components.data import split

    run_dir = Path(run_dir)
    overrides = dict(overrides or {})
    data = bundle_values(
        bundle_dir,
        ["datalist", "dataset_dir"],
        {k: overrides[k] for k in ("datalist", "dataset_dir") if k in overrides},
    )
    images = [e["image"] for e in split(data["datalist"], fold, "val", data["dataset_dir"])[: max(int(cases), 1)]]
    if not images:
        raise ValueError(f"fold {fold} of {data['datalist']} has no validation case to time inference on.")
    ids = set(ConfigParser.load_config_file(str(Path(bundle_dir) / INFER[0])))
    fixed = {"input_data", "ckpt_path", *OUTPUT_KEYS}
    infer = {k: v for k, v in overrides.items() if k.split("#")[0] in ids and k not in fixed}
    infer |= {
        "input_data": images,
        "ckpt_path": str(run_dir / "models" / "model.pt"),
        "output_dir": str(run_dir / "predictions"),
    }
    log = run_dir / INFER_LOG
    log.unlink(missing_ok=True)  # the engine's time is read from this command's log alone
    wall = run_bundle(bundle_dir, INFER, infer, log)
    engine = engine_seconds(log.read_text())
    return {
        "cli_inference_cases": len(images),
        "cli_inference_seconds": wall,
        "cli_seconds_per_volume": engine / len(images) if engine is not None else None,
        "cli_startup_seconds": wall - engine if engine is not None else None,
    }


def _timing_or_error(
    bundle_dir: Path, run_dir: Path, fold: int, overrides: Mapping[str, Any], cases: int
) -> dict[str, Any]:
    try:
        return timed_inference(bundle_dir, run_dir, fold, overrides, cases)
    except (RuntimeError, OSError, ValueError) as e:
        return {"infer_error": str(e)[-3000:]}


def _nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)
