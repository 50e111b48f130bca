"""Aneurysm detection evaluation: candidates, the ADAM hit rule, FROC, CPM, bootstrap CIs and sensitivity by size.

* **Candidates** come from a segmentation's probability map (:func:`candidates_from_probability`: the connected
  components above a threshold, centre = binary centre of mass, score = the component's maximum probability) or
  from a detector's boxes (:func:`candidates_from_boxes`: box centre and score). Centres are in world mm (RAS), so
  candidates found on a resampled grid are scored against aneurysms annotated on the original one.
* **Hit rule** (ADAM, :func:`match_case`): a candidate is a true positive when its centre lies within an untreated
  aneurysm's radius of that aneurysm's centre (distance <= radius, in mm); it detects every aneurysm it hits, and an
  aneurysm's score is the highest score of the candidates that hit it (0 when missed). A candidate that hits no
  untreated aneurysm but lies on a voxel of the ignored label (treated aneurysms, ADAM label 2) or within a
  treated aneurysm's radius is ignored: neither true nor false positive. Every other candidate is a false positive.
* **FROC** (:func:`froc`): MONAI's ``compute_froc_curve_data`` and ``compute_froc_score``; sensitivity at 1/8,
  1/4, 1/2, 1, 2, 4 and 8 false positives per scan and the CPM (competition performance metric: their mean), with
  percentile bootstrap CIs over scans, and the sensitivity by aneurysm diameter (Wilson CIs).
* :func:`write_froc` writes ``froc_summary.json``, ``froc_curve.csv``, ``froc_per_case.csv``,
  ``froc_candidates.csv``, ``froc_aneurysms.csv``, ``froc_by_size.csv`` and ``froc.png``.

The evaluation handlers run this on a bundle's cases (:mod:`shared_components.evaluation.handlers`:
``SegmentationMetrics`` for a segmentation's probabilities, ``DetectionFROC`` for a detector's boxes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # false positives per scan of the FROC summary (CPM: their mean)
SIZE_BINS_MM = (3.0, 7.0)  # aneurysm diameter bins: < 3 mm, 3-7 mm, >= 7 mm
N_BOOTSTRAP = 1000
SUMMARY = "froc_summary.json"
CURVE = "froc_curve.csv"
PER_CASE = "froc_per_case.csv"
CANDIDATES = "froc_candidates.csv"
ANEURYSMS = "froc_aneurysms.csv"
BY_SIZE = "froc_by_size.csv"
PLOT = "froc.png"
RULE = (
    "ADAM hit rule: a candidate is a true positive when its centre lies within an untreated aneurysm's radius of "
    "that aneurysm's centre (distance <= radius, world mm); candidates on the ignored label (treated aneurysms) or "
    "within a treated aneurysm's radius are ignored; every other candidate is a false positive"
)


@dataclass
class Candidate:
    """One detection: centre in world mm (RAS), score, and its size in voxels (0 for boxes)."""

    centre_mm: np.ndarray
    score: float
    voxels: int = 0


@dataclass
class CaseResult:
    """The matched candidates of one scan (see :func:`match_case`)."""

    case: str
    aneurysms: list[dict[str, Any]]
    candidates: list[Candidate]
    outcome: list[str]  # per candidate: tp, fp or ignored
    hits: list[list[int]]  # per candidate: indices of the untreated aneurysms it hits
    target_scores: np.ndarray  # per untreated aneurysm: best score of a hit (0 when missed)
    fold: str = ""
    centre: str = ""
    affine: np.ndarray | None = None  # the reference grid, for candidate voxel coordinates
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def untreated(self) -> list[dict[str, Any]]:
        return [a for a in self.aneurysms if not a.get("treated")]

    @property
    def fp_scores(self) -> np.ndarray:
        return np.asarray([c.score for c, o in zip(self.candidates, self.outcome, strict=True) if o == "fp"], float)


def world_points(affine: np.ndarray, voxels: np.ndarray) -> np.ndarray:
    """World coordinates ``[N, 3]`` of voxel coordinates ``[N, 3]``."""
    a = np.asarray(affine, dtype=np.float64)
    return np.asarray(voxels, dtype=np.float64).reshape(-1, 3) @ a[:3, :3].T + a[:3, 3]


def voxel_points(affine: np.ndarray, points_mm: np.ndarray) -> np.ndarray:
    """Voxel coordinates ``[N, 3]`` of world points ``[N, 3]`` (inverse of :func:`world_points`)."""
    a = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    return np.asarray(points_mm, dtype=np.float64).reshape(-1, 3) @ a[:3, :3].T + a[:3, 3]


def candidates_from_probability(
    prob: np.ndarray, affine: np.ndarray, threshold: float = 0.5, min_voxels: int = 1
) -> list[Candidate]:
    """Connected components (26-connected) of ``prob >= threshold`` (a 3D foreground probability map on the grid
    of ``affine``) with at least ``min_voxels`` voxels: centre = binary centre of mass, score = maximum
    probability."""
    from scipy import ndimage

    p = np.asarray(prob, dtype=np.float32)
    components, n = ndimage.label(p >= threshold, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return []
    index = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(np.ones_like(p), components, index)
    scores = ndimage.maximum(p, components, index)
    centres = np.asarray(ndimage.center_of_mass(np.ones_like(p), components, index), dtype=np.float64)
    keep = sizes >= min_voxels
    world = world_points(affine, centres[keep]) if keep.any() else np.zeros((0, 3))
    return [Candidate(w, float(s), int(v)) for w, s, v in zip(world, scores[keep], sizes[keep], strict=True)]


def candidates_from_boxes(boxes: np.ndarray, scores: np.ndarray, affine: np.ndarray) -> list[Candidate]:
    """Candidates at the centres of boxes ``[N, 6]`` (MONAI's standard mode ``xyzxyz`` in image coordinates of
    ``affine``'s grid, the far corner exclusive, so a box's centre voxel is its mid-point minus half a voxel)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    centres = (b[:, :3] + b[:, 3:]) / 2 - 0.5
    world = world_points(affine, centres) if len(b) else np.zeros((0, 3))
    return [Candidate(w, float(s)) for w, s in zip(world, np.asarray(scores, dtype=np.float64).ravel(), strict=True)]


class IgnoredLabel:
    """Whether a world point lies on a voxel of ``value`` in a label map on the grid of ``affine``."""

    def __init__(self, label: np.ndarray, affine: np.ndarray, value: int):
        self.mask = np.asarray(label) == value
        self.affine = np.asarray(affine, dtype=np.float64)

    def __call__(self, point_mm: np.ndarray) -> bool:
        if not self.mask.any():
            return False
        v = np.round(voxel_points(self.affine, point_mm)[0]).astype(int)
        if np.any(v < 0) or np.any(v >= self.mask.shape[:3]):
            return False
        return bool(self.mask[tuple(v)])


def match_case(
    case: str,
    candidates: Sequence[Candidate],
    aneurysms: Sequence[Mapping[str, Any]],
    ignored: Callable[[np.ndarray], bool] | None = None,
    **info: Any,
) -> CaseResult:
    """Apply the hit rule (module doc) to one scan: ``aneurysms`` are datalist records (``center_mm``,
    ``radius_mm``, ``treated``); ``ignored`` tells whether a point lies on the ignored label."""
    records = [dict(a) for a in aneurysms]
    untreated = [a for a in records if not a.get("treated")]
    treated = [a for a in records if a.get("treated")]
    centres = np.asarray([a["center_mm"] for a in untreated], dtype=np.float64).reshape(-1, 3)
    radii = np.asarray([a["radius_mm"] for a in untreated], dtype=np.float64)
    target = np.zeros(len(untreated))
    outcome, hits = [], []
    for c in candidates:
        dist = np.linalg.norm(centres - np.asarray(c.centre_mm), axis=1) if len(untreated) else np.zeros(0)
        hit = [int(i) for i in np.flatnonzero(dist <= radii)]
        for i in hit:
            target[i] = max(target[i], c.score)
        if hit:
            outcome.append("tp")
        elif (ignored is not None and ignored(np.asarray(c.centre_mm))) or any(
            np.linalg.norm(np.asarray(a["center_mm"]) - c.centre_mm) <= a["radius_mm"] for a in treated
        ):
            outcome.append("ignored")
        else:
            outcome.append("fp")
        hits.append(hit)
    return CaseResult(case, records, list(candidates), outcome, hits, target, **info)


def _curve(results: Sequence[CaseResult]) -> tuple[np.ndarray, np.ndarray, int]:
    """MONAI's FROC curve data ``(fps_per_scan, sensitivity, n_targets)`` of ``results``. MONAI skips the
    smallest score as a threshold (it expects a 0 for every missed target), so a 0 is always appended to the
    target scores: every candidate's score is then an operating point, and the sensitivity is unchanged."""
    from monai.metrics import compute_froc_curve_data

    fp = np.concatenate([r.fp_scores for r in results] + [np.zeros(0)])
    tp = np.concatenate([r.target_scores for r in results] + [np.zeros(1)])
    n_targets = sum(len(r.target_scores) for r in results)
    if n_targets == 0:
        return np.zeros(1), np.full(1, np.nan), 0
    fps, sens = compute_froc_curve_data(fp.astype(np.float64), tp.astype(np.float64), n_targets, len(results))
    return np.asarray(fps, float), np.asarray(sens, float), n_targets


def _scores(fps: np.ndarray, sens: np.ndarray, rates: Sequence[float]) -> tuple[list[float], float]:
    """Sensitivity at each rate and their mean (CPM), with MONAI's ``compute_froc_score``."""
    from monai.metrics import compute_froc_score

    if np.isnan(sens).all():
        return [float("nan")] * len(rates), float("nan")
    at = [float(compute_froc_score(fps, sens, (r,))) for r in rates]
    return at, float(compute_froc_score(fps, sens, tuple(rates)))


def _threshold_at(results: Sequence[CaseResult], rate: float) -> float:
    """The lowest candidate score at which there are at most ``rate`` false positives per scan (inf if none)."""
    fp = np.sort(np.concatenate([r.fp_scores for r in results] + [np.zeros(0)]))[::-1]
    scores = np.unique([c.score for r in results for c in r.candidates])[::-1]
    best = float("inf")
    for s in scores:
        if (fp >= s).sum() / max(len(results), 1) <= rate:
            best = float(s)
        else:
            break
    return best


def _wilson(k: int, n: int, confidence: float) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def size_bin(diameter_mm: float, bins: Sequence[float] = SIZE_BINS_MM) -> str:
    """``<3 mm``, ``3-7 mm``, ``>=7 mm`` (for the default bins)."""
    edges = list(bins)
    if diameter_mm < edges[0]:
        return f"<{edges[0]:g} mm"
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        if diameter_mm < hi:
            return f"{lo:g}-{hi:g} mm"
    return f">={edges[-1]:g} mm"


def froc(
    results: Sequence[CaseResult],
    rates: Sequence[float] = RATES,
    n_bootstrap: int = N_BOOTSTRAP,
    confidence: float = 0.95,
    seed: int = 0,
    size_bins: Sequence[float] = SIZE_BINS_MM,
) -> dict[str, Any]:
    """The FROC summary of matched scans: curve, sensitivity at ``rates`` and CPM with bootstrap CIs (scans
    resampled with replacement), the all-candidates operating point (what ADAM scores), and sensitivity by size."""
    results = list(results)
    fps, sens, n_targets = _curve(results)
    at, cpm = _scores(fps, sens, rates)
    alpha = (1 - confidence) / 2
    boot_at: list[list[float]] = []
    boot_cpm: list[float] = []
    rng = np.random.default_rng(seed)
    if n_targets and len(results) > 1:
        for _ in range(n_bootstrap):
            sample = [results[i] for i in rng.integers(0, len(results), len(results))]
            f, s, n = _curve(sample)
            if n == 0:
                continue
            a, c = _scores(f, s, rates)
            boot_at.append(a)
            boot_cpm.append(c)

    def ci(values: Sequence[float]) -> tuple[float, float]:
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        if len(v) == 0:
            return float("nan"), float("nan")
        return float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))

    sensitivity = []
    for j, r in enumerate(rates):
        lo, hi = ci([b[j] for b in boot_at]) if boot_at else (float("nan"), float("nan"))
        sensitivity.append({"fp_per_scan": r, "sensitivity": at[j], "ci_low": lo, "ci_high": hi})
    cpm_lo, cpm_hi = ci(boot_cpm) if boot_cpm else (float("nan"), float("nan"))
    detected = sum(int((r.target_scores > 0).sum()) for r in results)
    n_fp = [int((np.asarray(r.outcome) == "fp").sum()) for r in results]
    per_case = [float((r.target_scores > 0).mean()) for r in results if len(r.target_scores)]
    t1 = _threshold_at(results, 1.0)
    sizes: dict[str, dict[str, Any]] = {}
    for r in results:
        for a, s in zip(r.untreated, r.target_scores, strict=True):
            row = sizes.setdefault(size_bin(2 * float(a["radius_mm"]), size_bins), {"n": 0, "detected": 0, "at_1fp": 0})
            row["n"] += 1
            row["detected"] += int(s > 0)
            row["at_1fp"] += int(s > 0 and s >= t1)
    order = [size_bin(b - 1e-9, size_bins) for b in size_bins] + [size_bin(float(size_bins[-1]), size_bins)]
    by_size = []
    for name in [o for o in order if o in sizes]:
        row = sizes[name]
        lo, hi = _wilson(row["detected"], row["n"], confidence)
        lo1, hi1 = _wilson(row["at_1fp"], row["n"], confidence)
        by_size.append(
            {
                "diameter": name,
                "n": row["n"],
                "sensitivity": row["detected"] / row["n"],
                "ci_low": lo,
                "ci_high": hi,
                "sensitivity_at_1fp": row["at_1fp"] / row["n"],
                "ci_low_at_1fp": lo1,
                "ci_high_at_1fp": hi1,
            }
        )
    return {
        "rule": RULE,
        "confidence": confidence,
        "n_bootstrap": len(boot_cpm),
        "scans": len(results),
        "aneurysms": n_targets,
        "treated_aneurysms": sum(len(r.aneurysms) - len(r.untreated) for r in results),
        "candidates": sum(len(r.candidates) for r in results),
        "ignored_candidates": sum(r.outcome.count("ignored") for r in results),
        "cpm": cpm,
        "cpm_ci_low": cpm_lo,
        "cpm_ci_high": cpm_hi,
        "sensitivity": sensitivity,
        "all_candidates": {
            "sensitivity": detected / n_targets if n_targets else float("nan"),
            "mean_case_sensitivity": float(np.mean(per_case)) if per_case else float("nan"),
            "false_positives_per_scan": float(np.mean(n_fp)) if n_fp else float("nan"),
        },
        "threshold_at_1fp": t1,
        "by_size": by_size,
        "curve": {"fp_per_scan": fps.tolist(), "sensitivity": sens.tolist()},
    }


def sensitivity_at(summary: Mapping[str, Any], rate: float = 1.0) -> float:
    """The summary's sensitivity at ``rate`` false positives per scan."""
    return next((s["sensitivity"] for s in summary["sensitivity"] if s["fp_per_scan"] == rate), float("nan"))


def write_froc(
    output_dir: str | Path,
    results: Sequence[CaseResult],
    info: Mapping[str, Any] | None = None,
    n_bootstrap: int = N_BOOTSTRAP,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Write the FROC files (module doc) of ``results`` to ``output_dir``; returns the summary."""
    from shared_components.evaluation import plots
    from shared_components.evaluation.report import write_csv, write_json

    out = Path(output_dir)
    summary = froc(results, n_bootstrap=n_bootstrap, confidence=confidence)
    write_json(out / SUMMARY, {**dict(info or {}), **summary})
    curve = summary["curve"]
    write_csv(out / CURVE, [{"fp_per_scan": f, "sensitivity": s} for f, s in zip(*curve.values(), strict=True)])
    write_csv(out / BY_SIZE, summary["by_size"], columns=list(summary["by_size"][0]) if summary["by_size"] else None)
    cases, cands, aneurysms = [], [], []
    for r in results:
        n_fp = r.outcome.count("fp")
        cases.append(
            {
                "case": r.case,
                "fold": r.fold,
                "centre": r.centre,
                "aneurysms": len(r.untreated),
                "treated": len(r.aneurysms) - len(r.untreated),
                "candidates": len(r.candidates),
                "detected": int((r.target_scores > 0).sum()),
                "false_positives": n_fp,
                "ignored": r.outcome.count("ignored"),
                "sensitivity": float((r.target_scores > 0).mean()) if len(r.target_scores) else float("nan"),
            }
        )
        points = np.asarray([c.centre_mm for c in r.candidates]).reshape(-1, 3)
        voxels = voxel_points(r.affine, points) if r.affine is not None else points * np.nan
        for i, (c, o, h) in enumerate(zip(r.candidates, r.outcome, r.hits, strict=True)):
            cands.append(
                {
                    "case": r.case,
                    "candidate": i,
                    "score": c.score,
                    "outcome": o,
                    "hits": " ".join(map(str, h)),
                    "x_mm": c.centre_mm[0],
                    "y_mm": c.centre_mm[1],
                    "z_mm": c.centre_mm[2],
                    "voxel": " ".join(f"{v:.1f}" for v in voxels[i]) if r.affine is not None else "",  # ADAM result.txt
                    "voxels": c.voxels,
                }
            )
        for i, (a, s) in enumerate(zip(r.untreated, r.target_scores, strict=True)):
            aneurysms.append(
                {
                    "case": r.case,
                    "aneurysm": i,
                    "center": " ".join(f"{v:g}" for v in a["center"]),
                    "radius_mm": a["radius_mm"],
                    "diameter": size_bin(2 * float(a["radius_mm"])),
                    "score": float(s),
                    "detected": bool(s > 0),
                }
            )
    write_csv(out / PER_CASE, cases, columns=list(cases[0]) if cases else None)
    write_csv(out / CANDIDATES, cands, columns=list(cands[0]) if cands else ["case", "candidate", "score", "outcome"])
    write_csv(out / ANEURYSMS, aneurysms, columns=list(aneurysms[0]) if aneurysms else ["case", "aneurysm"])
    try:
        plots.froc_png(summary, out / PLOT)
    except Exception as e:  # noqa: BLE001 - a figure must never fail an evaluation
        logger.warning(f"FROC plot not written: {e}")
    return summary


def summary_line(summary: Mapping[str, Any]) -> str:
    """One line for the log: CPM [CI], sensitivity at 1 FP/scan, the all-candidates operating point."""
    from shared_components.evaluation.formatting import fmt_ci

    s1 = next((s for s in summary["sensitivity"] if s["fp_per_scan"] == 1.0), None)
    allc = summary["all_candidates"]
    return (
        f"FROC over {summary['scans']} scans, {summary['aneurysms']} aneurysms: CPM "
        f"{fmt_ci(summary['cpm'], summary['cpm_ci_low'], summary['cpm_ci_high'])}, sensitivity at 1 FP/scan "
        f"{fmt_ci(s1['sensitivity'], s1['ci_low'], s1['ci_high']) if s1 else '-'}; all candidates: sensitivity "
        f"{allc['sensitivity']:.3f} at {allc['false_positives_per_scan']:.2f} FP/scan"
    )


def detection_targets(datalist: str | Path | Mapping[str, Any] | None) -> dict[str, list[dict[str, Any]]] | None:
    """Per-case aneurysm records of a detection datalist (``aneurysms``), or ``None`` when it declares no FROC."""
    import json

    if datalist is None:
        return None
    data: Any = datalist
    if not isinstance(datalist, Mapping):
        path = Path(str(datalist))
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
    if not (data.get("evaluation") or {}).get("froc") or "aneurysms" not in data:
        return None
    return {str(k): list(v) for k, v in data["aneurysms"].items()}


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
