"""Summaries, bootstrap intervals, Holm correction, paired Wilcoxon tests, and the evaluation files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from shared_components.evaluation.report import fmt_ci, read_per_case, summarize_cases, write_evaluation
from shared_components.evaluation.statistics import bootstrap_ci, compare_to_best, holm, paired_wilcoxon, summarize


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, 2*0.03, max(1*0.04, 0.06) (monotone)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    out = holm([0.02, float("nan"), 0.01])
    assert out[0] == pytest.approx(0.02) and np.isnan(out[1]) and out[2] == pytest.approx(0.02)


def test_summarize_and_bootstrap():
    x = np.random.default_rng(1).normal(0.8, 0.05, 60)
    s = summarize(x)
    assert s["n"] == 60 and s["mean"] == pytest.approx(x.mean()) and s["median"] == pytest.approx(np.median(x))
    assert s["std"] == pytest.approx(x.std(ddof=1))
    half_width = 1.96 * x.std(ddof=1) / np.sqrt(60)  # the normal-theory interval, for scale
    assert s["ci_low"] < x.mean() < s["ci_high"]
    assert (s["ci_high"] - s["ci_low"]) == pytest.approx(2 * half_width, rel=0.25)
    assert bootstrap_ci([0.7, 0.7, 0.7]) == pytest.approx((0.7, 0.7))  # nothing to resample
    assert bootstrap_ci([0.5]) == (0.5, 0.5)
    lo, hi = bootstrap_ci([0.2, 0.9])
    assert 0.2 <= lo < hi <= 0.9
    assert summarize([np.nan, 1.0, 3.0])["n"] == 2
    assert summarize([])["n"] == 0


def test_paired_wilcoxon_and_comparison():
    rng = np.random.default_rng(0)
    best = rng.uniform(0.8, 0.9, 30)
    worse = best - rng.uniform(0.01, 0.05, 30)
    same = best.copy()
    assert paired_wilcoxon(worse, best) == pytest.approx(stats.wilcoxon(worse, best).pvalue)
    assert paired_wilcoxon(same, best) == 1.0
    assert np.isnan(paired_wilcoxon([0.1], [0.2]))
    cases = [f"c{i}" for i in range(30)]
    per_case = {
        "best": dict(zip(cases, best, strict=True)),
        "worse": dict(zip(cases, worse, strict=True)),
        "noisy": dict(zip(cases[:20], best[:20] + rng.normal(0, 0.01, 20), strict=True)),
    }
    out = compare_to_best(per_case, "best")
    assert np.isnan(out["best"]["p"])
    assert out["noisy"]["n_pairs"] == 20 and out["worse"]["n_pairs"] == 30
    raw = [out["worse"]["p"], out["noisy"]["p"]]
    assert [out["worse"]["p_holm"], out["noisy"]["p_holm"]] == pytest.approx(holm(raw))
    assert out["worse"]["p_holm"] < 1e-4  # every case is worse


def test_evaluation_files_and_centre_breakdown(tmp_path):
    rows = []
    values = {"a": (0.9, 0.8), "b": (0.7, 0.6), "c": (0.5, 0.4), "d": (0.3, 0.2)}
    for case, (v1, v2) in values.items():
        centre = "north" if case in "ab" else "south"
        for cls, v in (("liver", v1), ("spleen", v2)):
            rows.append({"case": case, "fold": 0, "centre": centre, "class": cls, "metric": "dice", "value": v})
            rows.append({"case": case, "fold": 0, "centre": centre, "class": cls, "metric": "hd95", "value": 10 * v})
    summary = write_evaluation(tmp_path, rows, info={"nsd_tolerance_mm": 2.0})
    for name in ("metrics_per_case.csv", "metrics_summary.csv", "metrics_summary.json"):
        assert (tmp_path / name).stat().st_size > 100
    back = read_per_case(tmp_path / "metrics_per_case.csv")
    assert len(back) == 16 and set(back.columns) == {"case", "fold", "centre", "class", "metric", "value"}
    s = summary.set_index(["group", "class", "metric"])
    assert s.loc[("all", "liver", "dice"), "mean"] == pytest.approx(0.6)
    assert s.loc[("all", "mean", "dice"), "mean"] == pytest.approx(0.55)  # per-case class mean, then over cases
    assert s.loc[("centre=north", "mean", "dice"), "mean"] == pytest.approx(0.75)
    assert s.loc[("centre=south", "spleen", "hd95"), "mean"] == pytest.approx(3.0)
    assert s.loc[("centre=south", "spleen", "hd95"), "n"] == 2
    data = json.loads((tmp_path / "metrics_summary.json").read_text())
    assert data["cases"] == 4 and data["nsd_tolerance_mm"] == 2.0
    assert data["summary"]["all"]["liver"]["dice"]["mean"] == pytest.approx(0.6)
    assert set(data["summary"]) == {"all", "centre=north", "centre=south"}
    assert list(pd.read_csv(tmp_path / "metrics_summary.csv")["group"].unique()) == [
        "all",
        "centre=north",
        "centre=south",
    ]
    assert "centre" not in summarize_cases(back[back["centre"] == "north"].assign(centre=""))["group"].str.cat()
    assert fmt_ci(0.88123, 0.87, 0.89) == "0.881 [0.870, 0.890]" and fmt_ci(float("nan"), 0, 0) == "-"
