"""Would keeping the largest connected component of each class help? Measured on a benchmark's saved predictions.

nnU-Net decides its post-processing from cross-validation: it removes all but the largest component of a class when
that improves the validation Dice. :func:`component_effect` does that measurement for every model of a benchmark
(``<results>/runs/<bundle>/fold_<k>/eval/predictions``, written by ``benchmark run``): each saved label map is scored
against its reference label file as predicted and with only the largest 26-connected component of each foreground
class kept (the rest set to background), with MONAI's ``compute_dice``, and the per-case differences get a bootstrap
CI and a Wilcoxon test.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.metrics import compute_dice
from monai.networks.utils import one_hot
from scipy import ndimage

from shared_components.evaluation.statistics import paired_wilcoxon, summarize

_FULL = ndimage.generate_binary_structure(3, 3)  # 26-connectivity, as MONAI's KeepLargestConnectedComponent


def keep_largest(label_map: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """``label_map`` with every component of each class in ``classes`` but its largest set to 0 (background)."""
    out = label_map.copy()
    for c in classes:
        components, n = ndimage.label(label_map == c, structure=_FULL)
        if n > 1:
            sizes = np.bincount(components.ravel())[1:]
            out[(components > 0) & (components != 1 + int(np.argmax(sizes)))] = 0
    return out


def _mean_dice(pred: np.ndarray, ref: np.ndarray, classes: int) -> float:
    """Mean foreground Dice of one case (classes absent from both count as 1, as the evaluation does)."""
    to = lambda a: one_hot(torch.as_tensor(a.astype(np.int64))[None, None], classes)  # noqa: E731
    dice = compute_dice(to(pred), to(ref), include_background=False, ignore_empty=False)
    return float(torch.nan_to_num(dice, nan=1.0).mean())


def _cases(run_dir: Path) -> list[dict[str, str]]:
    table = run_dir / "eval" / "cases.csv"
    if not table.is_file():
        return []
    rows = []
    with table.open() as f:
        for r in csv.DictReader(f):
            if not r.get("prediction"):
                continue
            here = run_dir / "eval" / "predictions" / Path(r["prediction"]).name  # the run folder moved (a clone)
            r["prediction"] = r["prediction"] if Path(r["prediction"]).is_file() else str(here)
            if Path(r["prediction"]).is_file():
                rows.append(r)
    return rows


def component_effect(results: str | Path, num_classes: int = 3) -> dict[str, Any]:
    """Per model of a benchmark: mean foreground Dice of its saved predictions as predicted and with the largest
    component per class kept, the per-case difference [95% CI], the Wilcoxon p and how many cases changed.

    Args:
        results: a benchmark's results folder (``<out>/<dataset>``, with ``runs/``).
        num_classes: classes of the label maps, background included.
    """
    runs = Path(results) / "runs"
    if not runs.is_dir():
        raise FileNotFoundError(f"No runs in {results}: run `segbundles benchmark run` first (it saves predictions).")
    models: dict[str, Any] = {}
    for bundle_dir in sorted(p for p in runs.iterdir() if p.is_dir()):
        rows = [r for fold in sorted(bundle_dir.glob("fold_*")) for r in _cases(fold)]
        if not rows:
            continue
        before, after, changed = [], [], 0
        for r in rows:
            pred = np.asarray(nib.load(r["prediction"]).dataobj).astype(np.int64)
            ref = np.asarray(nib.load(r["label"]).dataobj).astype(np.int64)
            kept = keep_largest(pred, range(1, num_classes))
            changed += int((kept != pred).any())
            before.append(_mean_dice(pred, ref, num_classes))
            after.append(_mean_dice(kept, ref, num_classes))
        diff = np.asarray(after) - np.asarray(before)
        models[bundle_dir.name] = {
            "cases": len(rows),
            "dice": float(np.mean(before)),
            "dice_largest": float(np.mean(after)),
            "difference": summarize(diff),
            "p_wilcoxon": paired_wilcoxon(after, before),
            "cases_changed": changed,
        }
    if not models:
        raise FileNotFoundError(f"No saved predictions under {runs}: the runs were made with save_predictions off.")
    return {"results": str(results), "models": models}


def format_effect(result: dict[str, Any]) -> str:
    """A markdown table of :func:`component_effect`'s result."""
    lines = [
        "| model | cases | mean Dice as predicted | largest component per class | difference [95% CI] | p | cases changed |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in result["models"].items():
        d = m["difference"]
        lines.append(
            f"| {name} | {m['cases']} | {m['dice']:.4f} | {m['dice_largest']:.4f} | {d['mean']:+.4f} "
            f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] | {m['p_wilcoxon']:.3g} | {m['cases_changed']} |"
        )
    return "\n".join(lines)
