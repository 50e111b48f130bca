"""Per-case, per-class segmentation metrics in millimetres: Dice, HD95, mean surface distance, normalised surface Dice,
and on request volumetric similarity (the ADAM challenge's third metric).

Dice is MONAI's ``compute_dice``. The three surface metrics share one surface-distance computation per class
(MONAI's ``get_edge_surface_distance``: boundary voxels, cropped to the structures, nearest-boundary distances
scaled by the voxel spacing) and reduce it exactly as ``HausdorffDistanceMetric(percentile=95)``,
``SurfaceDistanceMetric(symmetric=True)`` and ``SurfaceDiceMetric`` do, so the boundary distances are computed
once instead of three times (tests check equality with those classes).

Empty structures follow the BraTS convention, so every case has a finite value and statistics stay defined:
reference and prediction both empty -> Dice 1, NSD 1, HD95 0, MSD 0; exactly one empty -> Dice 0, NSD 0, and
HD95 = MSD = the image diagonal in mm (the worst possible distance). Volumetric similarity,
``1 - |V_pred - V_ref| / (V_pred + V_ref)``, is 1 when both are empty and 0 when exactly one is.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_dice
from monai.metrics.utils import get_edge_surface_distance

METRICS = ("dice", "hd95", "msd", "nsd")  # what every evaluation computes
EXTRA_METRICS = ("vs",)  # computed when asked for (a detection datalist's ``evaluation.metrics``)
ALL_METRICS = METRICS + EXTRA_METRICS
SURFACE_METRICS = ("hd95", "msd", "nsd")
HIGHER_IS_BETTER = {"dice": True, "hd95": False, "msd": False, "nsd": True, "vs": True}
METRIC_NAMES = {
    "dice": "Dice",
    "hd95": "HD95 (mm)",
    "msd": "mean surface distance (mm)",
    "nsd": "normalised surface Dice",
    "vs": "volumetric similarity",
}


def spacing_from_affine(affine: torch.Tensor | np.ndarray, spatial_dims: int = 3) -> tuple[float, ...]:
    """Voxel size in mm along each array axis: the lengths of the affine's first ``spatial_dims`` columns."""
    a = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    return tuple(float(v) for v in np.linalg.norm(a[:spatial_dims, :spatial_dims], axis=0))


def _diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True))))


def _crop_to_union(pred: torch.Tensor, label: torch.Tensor, margin: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop both masks to the bounding box of everything either contains (plus ``margin``, clipped to the image):
    metrics are unchanged (MONAI crops each class the same way) and large, mostly empty volumes get cheap."""
    union = (pred | label).any(0)
    if not bool(union.any()):
        return pred[(slice(None),) + (slice(0, 1),) * union.ndim], label[(slice(None),) + (slice(0, 1),) * union.ndim]
    box = [slice(None)]
    for axis in range(union.ndim):
        nz = torch.nonzero(union.any(dim=tuple(a for a in range(union.ndim) if a != axis)))[:, 0]
        box.append(slice(max(int(nz[0]) - margin, 0), int(nz[-1]) + 1 + margin))
    return pred[tuple(box)], label[tuple(box)]


def volumetric_similarity(pred: torch.Tensor, label: torch.Tensor) -> list[float]:
    """``1 - |V_pred - V_ref| / (V_pred + V_ref)`` per channel of binary ``[C, ...]`` masks (1 when both are
    empty); the voxel volume cancels out."""
    p = pred.reshape(pred.shape[0], -1).sum(1).double()
    r = label.reshape(label.shape[0], -1).sum(1).double()
    total = p + r
    vs = torch.where(total > 0, 1 - (p - r).abs() / total.clamp(min=1), torch.ones_like(total))
    return [float(v) for v in vs]


def case_metrics(
    pred: torch.Tensor,
    label: torch.Tensor,
    spacing: Sequence[float],
    tolerance_mm: float | Sequence[float],
    metrics: Sequence[str] = METRICS,
) -> dict[str, list[float]]:
    """Metrics of one case for every channel of binary ``pred``/``label`` (``[C, H, W, D]``, one channel per
    evaluated class, background excluded by the caller).

    Args:
        pred, label: binary masks, one channel per class, in the same geometry.
        spacing: voxel size in mm per spatial axis (see :func:`spacing_from_affine`).
        tolerance_mm: NSD boundary tolerance in mm, one value or one per class.
        metrics: which of ``dice``, ``hd95``, ``msd``, ``nsd``, ``vs`` to compute.

    Returns:
        ``{metric: [value per class]}``.
    """
    unknown = set(metrics) - set(ALL_METRICS)
    if unknown:
        raise ValueError(f"Unknown metric(s) {sorted(unknown)}; available: {', '.join(ALL_METRICS)}.")
    if pred.shape != label.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} differs from reference shape {tuple(label.shape)}.")
    n_classes, spatial = pred.shape[0], pred.shape[1:]
    if len(spacing) != len(spatial):
        raise ValueError(f"spacing {tuple(spacing)} has {len(spacing)} values for {len(spatial)} spatial dimensions.")
    tol = [float(tolerance_mm)] * n_classes if np.isscalar(tolerance_mm) else [float(t) for t in tolerance_mm]
    if len(tol) != n_classes:
        raise ValueError(f"{len(tol)} NSD tolerances given for {n_classes} classes.")
    worst = _diagonal_mm(spatial, spacing)
    pred, label = _crop_to_union(torch.as_tensor(pred).detach().cpu() > 0, torch.as_tensor(label).detach().cpu() > 0)
    out: dict[str, list[float]] = {m: [] for m in metrics}
    if "dice" in metrics:
        # ignore_empty=False: an empty reference gives 1 when the prediction is empty too, else 0
        out["dice"] = compute_dice(pred[None].float(), label[None].float(), ignore_empty=False)[0].tolist()
    if "vs" in metrics:
        out["vs"] = volumetric_similarity(pred, label)
    surface = [m for m in metrics if m in SURFACE_METRICS]
    if not surface:
        return out
    for c in range(n_classes):
        p_any, l_any = bool(pred[c].any()), bool(label[c].any())
        if not (p_any and l_any):
            both_empty = not p_any and not l_any
            values = {"hd95": 0.0 if both_empty else worst, "msd": 0.0 if both_empty else worst}
            values["nsd"] = 1.0 if both_empty else 0.0
        else:
            with warnings.catch_warnings():  # MONAI 1.6 passes its own deprecated argument internally
                warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")
                _, (d_pred, d_ref), _ = get_edge_surface_distance(
                    pred[c], label[c], spacing=tuple(spacing), symmetric=True, class_index=c
                )
            d_pred, d_ref = d_pred.float(), d_ref.float()
            values = {
                "hd95": float(torch.max(torch.quantile(d_pred, 0.95), torch.quantile(d_ref, 0.95))),
                "msd": float(torch.cat([d_pred, d_ref]).mean()),
                "nsd": float(((d_pred <= tol[c]).sum() + (d_ref <= tol[c]).sum()) / (len(d_pred) + len(d_ref))),
            }
        for m in surface:
            out[m].append(values[m])
    return out
