"""Statistics for per-case metrics: summaries with bootstrap confidence intervals, and paired model comparisons
(Wilcoxon signed-rank tests against the best model, Holm-corrected for the number of comparisons)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
N_BOOTSTRAP = 2000


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE, n_resamples: int = N_BOOTSTRAP, seed: int = 0
) -> tuple[float, float]:
    """Bias-corrected and accelerated (BCa) bootstrap confidence interval of the mean (``scipy.stats.bootstrap``),
    resampling cases; ``(nan, nan)`` without values, the value itself when there is nothing to resample."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return float("nan"), float("nan")
    if len(x) == 1 or np.ptp(x) == 0:
        return float(x.mean()), float(x.mean())
    if len(x) < 3:
        return _percentile_ci(x, confidence, n_resamples, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate resamples of tiny samples fall back below
        res = stats.bootstrap(
            (x,),
            np.mean,
            confidence_level=confidence,
            n_resamples=n_resamples,
            method="BCa",
            random_state=np.random.default_rng(seed),
        )
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return _percentile_ci(x, confidence, n_resamples, seed)
    return lo, hi


def _percentile_ci(x: np.ndarray, confidence: float, n_resamples: int = N_BOOTSTRAP, seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_resamples, len(x)))].mean(1)
    a = (1 - confidence) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def summarize(values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE, seed: int = 0) -> dict[str, Any]:
    """``n``, ``mean``, ``std`` (sample), ``median``, ``ci_low``/``ci_high`` (bootstrap CI of the mean)."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        nan = float("nan")
        return {"n": 0, "mean": nan, "std": nan, "median": nan, "ci_low": nan, "ci_high": nan}
    lo, hi = bootstrap_ci(x, confidence, seed=seed)
    return {
        "n": int(len(x)),
        "mean": float(x.mean()),
        "std": float(x.std(ddof=1)) if len(x) > 1 else 0.0,
        "median": float(np.median(x)),
        "ci_low": lo,
        "ci_high": hi,
    }


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaNs are left out and kept."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(len(p), np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = len(idx)
    if m == 0:
        return out.tolist()
    order = idx[np.argsort(p[idx], kind="stable")]
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out.tolist()


def paired_wilcoxon(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired samples (pairs with a NaN dropped); 1.0 when all
    differences are zero, NaN with fewer than two pairs."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if len(x) < 2:
        return float("nan")
    if np.allclose(x, y):
        return 1.0
    return float(stats.wilcoxon(x, y, zero_method="wilcox", alternative="two-sided").pvalue)


def compare_to_best(per_case: Mapping[str, Mapping[Any, float]], best: str) -> dict[str, dict[str, Any]]:
    """Paired Wilcoxon signed-rank test of every model against ``best`` on the cases both evaluated
    (``per_case[model][case] = value``), with Holm correction over the comparisons.

    Returns ``{model: {"n_pairs", "p", "p_holm"}}`` (``best`` itself gets NaNs).
    """
    others = [m for m in per_case if m != best]
    raw, pairs = [], []
    for m in others:
        common = sorted(set(per_case[m]) & set(per_case[best]), key=str)
        pairs.append(len(common))
        raw.append(paired_wilcoxon([per_case[m][c] for c in common], [per_case[best][c] for c in common]))
    adjusted = holm(raw)
    out = {best: {"n_pairs": len(per_case[best]), "p": float("nan"), "p_holm": float("nan")}}
    for m, n, p, ph in zip(others, pairs, raw, adjusted, strict=True):
        out[m] = {"n_pairs": n, "p": p, "p_holm": ph}
    return out
