"""Evaluation files: the per-case table (``case, fold, centre, class, metric, value``), its summary (mean, std,
median, bootstrap CI; overall and per centre) as CSV and JSON, and Markdown tables of them. Files are written
atomically, so a killed run never leaves half a table."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from shared_components.evaluation.formatting import MISSING, fmt_ci
from shared_components.evaluation.metrics import METRIC_NAMES, METRICS
from shared_components.evaluation.statistics import CONFIDENCE, summarize
from shared_components.files import write_text_atomic

PER_CASE = "metrics_per_case.csv"
SUMMARY_CSV = "metrics_summary.csv"
SUMMARY_JSON = "metrics_summary.json"
CASES = "cases.csv"
PER_CASE_COLUMNS = ["case", "fold", "centre", "class", "metric", "value"]
SUMMARY_COLUMNS = ["group", "class", "metric", "n", "mean", "std", "median", "ci_low", "ci_high"]
MEAN_CLASS = "mean"  # per case, the mean over the evaluated classes


def write_csv(
    path: str | Path, frame: pd.DataFrame | Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None
):
    """Write rows (or a DataFrame) as CSV, atomically."""
    df = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(list(frame), columns=columns)
    return write_text_atomic(path, df.to_csv(index=False, float_format="%.6g"))


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON (4-space indent, NaN as null), atomically."""
    return write_text_atomic(path, json.dumps(_clean(data), indent=4) + "\n")


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, Mapping):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, str):
        return _clean(v.item())
    return v


def read_per_case(path: str | Path) -> pd.DataFrame:
    """Load a ``metrics_per_case.csv`` (``fold`` and ``centre`` as strings, empty when unknown)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No per-case metrics at {path}: evaluate the model first (configs/evaluate.yaml).")
    df = pd.read_csv(path, dtype={"case": str, "fold": str, "centre": str, "class": str, "metric": str})
    missing = set(PER_CASE_COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"{path} lacks the column(s) {sorted(missing)}; expected {PER_CASE_COLUMNS}.")
    return df.fillna({"fold": "", "centre": ""})


def with_case_means(df: pd.DataFrame) -> pd.DataFrame:
    """Add class ``mean``: for each case and metric, the mean over its classes."""
    if df.empty:
        return df
    real = df[df["class"] != MEAN_CLASS]
    means = real.groupby(["case", "fold", "centre", "metric"], sort=False, as_index=False)["value"].mean()
    means["class"] = MEAN_CLASS
    return pd.concat([real, means[PER_CASE_COLUMNS]], ignore_index=True)


def summarize_cases(df: pd.DataFrame, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Summary rows (``group, class, metric, n, mean, std, median, ci_low, ci_high``): group ``all``, plus
    ``centre=<name>`` for each centre when the cases have centres; classes include the per-case ``mean``."""
    df = with_case_means(df)
    groups: list[tuple[str, pd.DataFrame]] = [("all", df)]
    centres = sorted(c for c in df["centre"].unique() if c) if len(df) else []
    groups += [(f"centre={c}", df[df["centre"] == c]) for c in centres]
    rows = []
    for group, sub in groups:
        for (cls, metric), vals in sub.groupby(["class", "metric"], sort=False)["value"]:
            rows.append({"group": group, "class": cls, "metric": metric, **summarize(vals.to_numpy(), confidence)})
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    return _ordered(out)


def _ordered(summary: pd.DataFrame) -> pd.DataFrame:
    """Classes in first-seen order with ``mean`` last, metrics in the standard order."""
    classes = [c for c in dict.fromkeys(summary["class"]) if c != MEAN_CLASS] + [MEAN_CLASS]
    metric_rank = {m: i for i, m in enumerate(METRICS)}
    key = summary.assign(
        _g=summary["group"] != "all",
        _c=summary["class"].map({c: i for i, c in enumerate(classes)}),
        _m=summary["metric"].map(lambda m: metric_rank.get(m, len(metric_rank))),
    )
    return key.sort_values(["_g", "group", "_c", "_m"], kind="stable").drop(columns=["_g", "_c", "_m"])


def summary_dict(summary: pd.DataFrame) -> dict[str, Any]:
    """``{group: {class: {metric: {n, mean, std, median, ci_low, ci_high}}}}``."""
    out: dict[str, Any] = {}
    for r in summary.to_dict("records"):
        stats = {k: r[k] for k in SUMMARY_COLUMNS[3:]}
        out.setdefault(r["group"], {}).setdefault(r["class"], {})[r["metric"]] = stats
    return out


def summary_markdown(summary: pd.DataFrame, group: str = "all", metrics: Iterable[str] = METRICS) -> str:
    """A Markdown table: one row per class, one column per metric (mean [95% CI]), for one group."""
    sub = summary[summary["group"] == group]
    metrics = [m for m in metrics if m in set(sub["metric"])]
    header = "| class | n | " + " | ".join(METRIC_NAMES.get(m, m) for m in metrics) + " |"
    lines = [header, "|---|---|" + "---|" * len(metrics)]
    for cls in dict.fromkeys(sub["class"]):
        cells = sub[sub["class"] == cls].set_index("metric")
        n = int(cells["n"].max()) if len(cells) else 0
        vals = [fmt_ci(*cells.loc[m, ["mean", "ci_low", "ci_high"]]) if m in cells.index else MISSING for m in metrics]
        lines.append(f"| {cls} | {n} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def write_evaluation(
    output_dir: str | Path,
    per_case: Sequence[Mapping[str, Any]] | pd.DataFrame,
    cases: Sequence[Mapping[str, Any]] | pd.DataFrame | None = None,
    info: Mapping[str, Any] | None = None,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """Write ``metrics_per_case.csv``, ``metrics_summary.csv``/``.json`` (and ``cases.csv``) to ``output_dir``;
    returns the summary."""
    out = Path(output_dir)
    df = per_case if isinstance(per_case, pd.DataFrame) else pd.DataFrame(list(per_case), columns=PER_CASE_COLUMNS)
    df = df.astype({"case": str, "fold": str, "centre": str})
    write_csv(out / PER_CASE, df[PER_CASE_COLUMNS])
    summary = summarize_cases(df, confidence)
    write_csv(out / SUMMARY_CSV, summary)
    if cases is not None:
        write_csv(out / CASES, cases)
    payload = {
        "confidence": confidence,
        "cases": int(df[["case", "fold"]].drop_duplicates().shape[0]) if len(df) else 0,
        **(dict(info) if info else {}),
        "summary": summary_dict(summary),
    }
    write_json(out / SUMMARY_JSON, payload)
    return summary
