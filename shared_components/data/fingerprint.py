"""Dataset fingerprint: MONAI's ``DataAnalyzer`` statistics plus nnU-Net-like recommendations, written as
``fingerprint.json`` next to the datalist for bundles to read (:func:`recommended`).

Heuristics (after nnU-Net, Isensee et al. 2021, simplified):

- ``pixdim``: median voxel spacing per axis. If the data are anisotropic (largest median spacing > 3x the smallest
  and the resampled size along that axis < 1/3 of the others) that axis gets the 10th percentile of its
  spacings instead (but never finer than the other axes).
- ``patch_size``: the median image shape at ``pixdim`` (after cropping to the non-zero region when that is
  recommended), shrunk 10% at a time along the axis of largest physical extent until it fits ``voxel_budget``
  voxels (default 128^3), then rounded up per axis to a multiple of 2^(poolings along that axis), as nnU-Net pads
  its patch (and shrunk by such multiples again if the rounding overshot the budget).
- ``strides``: the poolings, level by level, by nnU-Net's rule in :mod:`shared_components.planning`, for the
  recommended ``patch_size`` at ``pixdim``: exactly the strides after the first level of the DynUNet that
  ``shared_components.networks.nnunet_dynunet`` builds for them (``divisible_by``: their product per axis).
- ``intensity``: CT (a channel named CT, or intensities reaching air at -1000 HU): clip to the 0.5/99.5 percentiles
  of the foreground (labelled) voxels, then z-score with the foreground mean/std (``ct_zscore``; the ``ct``
  window to [0, 1] is given as an alternative). Other modalities: per-channel z-score, over the non-zero voxels
  when cropping to them removes >= 25% of the volume (``zscore``, ``nonzero``).
- ``crop_foreground``: when that non-zero crop removes >= 25% of the median volume.
- ``batch_size``: as many patches as fill 2 x ``voxel_budget`` voxels, at most 5% of the dataset's voxels, at least 2.
- ``sampling``: ``random`` when the patch covers the median image, else ``label`` (foreground-centred patches).

Dataset-wide percentiles are the medians over cases of the per-case percentiles; the pooled mean/std combine the
per-case means and standard deviations.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shared_components.data.datalist import load_datalist, resolve_entry, save_datalist, subject_of
from shared_components.data.errors import DataValidationError, Problem
from shared_components.planning import plan_unet

FINGERPRINT_FILE = "fingerprint.json"


def _plain(x: Any) -> Any:
    """JSON-able copy of DataAnalyzer output (StrEnum keys, numpy/torch numbers)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if hasattr(x, "tolist"):
        return _plain(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _items(data: dict[str, Any], base_dir: str | None, sections: Sequence[str], max_cases: int | None) -> list[dict]:
    entries = [resolve_entry(e, base_dir) for s in sections for e in data.get(s, []) if isinstance(e, dict)]
    if max_cases and len(entries) > max_cases:
        idx = np.linspace(0, len(entries) - 1, max_cases).round().astype(int)
        entries = [entries[i] for i in sorted(set(idx.tolist()))]
    return entries


def _files(value: Any) -> list[str]:
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


def _transforms(with_label: bool, label_map: dict | None) -> list:
    """DataAnalyzer's default loading, plus the datalist's raw -> class ``label_map`` so that label statistics and
    the foreground intensities are those of the classes a bundle trains on."""
    import torch
    from monai.apps.auto3dseg.transforms import EnsureSameShaped
    from monai.transforms import EnsureTyped, LoadImaged, Orientationd

    from shared_components.transforms.labels import RemapLabelsd

    keys = ["image", "label"] if with_label else ["image"]
    t: list = [
        LoadImaged(keys, ensure_channel_first=True, image_only=True),
        EnsureTyped(keys, data_type="tensor", dtype=torch.float),
        Orientationd(keys, axcodes="RAS", labels=None),
    ]
    if with_label:
        t.append(EnsureSameShaped("label", source_key="image", allowed_shape_difference=5))
        if label_map:
            t.append(RemapLabelsd("label", label_map))
            t.append(EnsureTyped("label", data_type="tensor", dtype=torch.float))
    return t


def _target_spacing(spacings: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    target = np.median(spacings, axis=0)
    sizes = np.median(shapes * spacings / target, axis=0)
    worst = int(np.argmax(target))
    others = [i for i in range(3) if i != worst]
    if target[worst] > 3 * min(target[others]) and sizes[worst] * 3 < min(sizes[others]):
        t = float(np.percentile(spacings[:, worst], 10))
        target[worst] = max(t, max(target[others]) + 1e-5)
    return target


def plan(
    spacings: np.ndarray, shapes: np.ndarray, cropped_shapes: np.ndarray | None = None, voxel_budget: int = 128**3
) -> dict[str, Any]:
    """Spacing, patch size, poolings and batch size from per-case spacings and shapes ``[N, 3]`` (module doc)."""
    spacings, shapes = np.asarray(spacings, float), np.asarray(shapes, float)
    crop = cropped_shapes is not None and np.median(np.prod(cropped_shapes, 1) / np.prod(shapes, 1)) < 0.75
    use = np.asarray(cropped_shapes, float) if crop else shapes
    target = _target_spacing(spacings, use)
    pixdim = [round(float(t), 4) for t in target]  # what a bundle config gets, so what the network is planned for
    at_target = use * spacings / target
    median_shape = np.median(at_target, axis=0)
    patch = np.maximum(median_shape, 1.0)
    while np.prod(patch) > voxel_budget:
        axis = int(np.argmax(patch * target))
        patch[axis] = max(patch[axis] * 0.9, 8)
    first = plan_unet(patch.tolist(), pixdim, exact=False)  # nnU-Net: plan the patch, then pad it to fit the plan
    div = np.array(first.divisible_by)
    patch_size = np.array(first.patch_size, int)
    while np.prod(patch_size) > voxel_budget and np.any(patch_size > div):
        axis = int(np.argmax(np.where(patch_size > div, patch_size * target, -1)))
        patch_size[axis] -= div[axis]
    final = plan_unet(patch_size.tolist(), pixdim)  # re-planned as the network is when built for this patch
    total = float(np.sum(np.prod(at_target, axis=1)))
    batch = int(max(2, min(2 * voxel_budget // np.prod(patch_size), 0.05 * total // np.prod(patch_size))))
    return {
        "pixdim": pixdim,
        "patch_size": patch_size.tolist(),
        "strides": final.poolings,
        "divisible_by": final.divisible_by,
        "batch_size": batch,
        "crop_foreground": bool(crop),
        "median_shape_at_pixdim": [round(float(s), 1) for s in median_shape],
        "sampling": "random" if np.all(patch_size >= median_shape) else "label",
    }


def _pooled(stats: list[dict[str, float]]) -> dict[str, float]:
    means = np.array([s["mean"] for s in stats], float)
    stds = np.array([s["stdev"] for s in stats], float)
    return {
        "p00_5": float(np.median([s["percentile_00_5"] for s in stats])),
        "p10": float(np.median([s["percentile_10_0"] for s in stats])),
        "median": float(np.median([s["median"] for s in stats])),
        "p90": float(np.median([s["percentile_90_0"] for s in stats])),
        "p99_5": float(np.median([s["percentile_99_5"] for s in stats])),
        "min": float(np.min([s["min"] for s in stats])),
        "max": float(np.max([s["max"] for s in stats])),
        "mean": float(means.mean()),
        "std": float(np.sqrt(np.mean(stds**2) + means.var())),
    }


def _is_ct(names: Sequence[str], image_p00_5: float) -> tuple[bool, bool]:
    """(CT?, guessed?) from the channel names, else from intensities reaching air (-1000 HU)."""
    known = [n for n in names if n and n.lower() != "unknown"]
    if known:
        return any(n.strip().upper() == "CT" for n in known), False
    return image_p00_5 < -500, True


def fingerprint(
    datalist: str | os.PathLike | dict[str, Any],
    base_dir: str | None = None,
    out: str | os.PathLike | None = None,
    sections: Sequence[str] = ("training",),
    max_cases: int | None = None,
    voxel_budget: int = 128**3,
    device: str = "cpu",
    do_ccp: bool = False,
    num_threads: int = 1,
) -> dict[str, Any]:
    """Analyse the datalist's cases with MONAI's ``DataAnalyzer`` and recommend preprocessing (module doc).

    Args:
        datalist: datalist file or content; relative paths resolve against ``base_dir`` (default: the datalist's
            ``dataset_dir``, else its folder).
        out: where to write the fingerprint JSON (default: ``fingerprint.json`` next to a datalist file; nothing is
            written for a datalist given as a dict without ``out``).
        max_cases: analyse at most this many cases (evenly spread) for very large datasets.
        do_ccp: also count connected components per label (slower).
        num_threads: torch threads during the analysis (1 is fastest for per-case statistics on CPU).

    Returns the fingerprint: ``warnings`` (heterogeneous intensity scales or spacings, labels absent from some
    cases), ``spacing``, ``shape``, ``intensity`` (per channel, whole image and foreground),
    ``labels``, ``recommended`` (``pixdim``, ``patch_size``, ``intensity`` spec for ``preprocessing_args``, ...)
    and ``datastats`` (DataAnalyzer's summary).
    """
    import torch
    from monai.apps.auto3dseg import DataAnalyzer

    data = load_datalist(datalist) if not isinstance(datalist, dict) else datalist
    if base_dir is None:
        base_dir = data.get("dataset_dir") or (str(Path(datalist).parent) if not isinstance(datalist, dict) else None)
    entries = _items(data, base_dir, sections, max_cases)
    if not entries:
        raise ValueError(f"the datalist has no cases in {list(sections)} to fingerprint.")
    with_label = all("label" in e for e in entries)
    items = [{"image": e["image"], **({"label": e["label"]} if with_label else {})} for e in entries]
    analyzer = DataAnalyzer(
        {"training": items},
        dataroot="",
        output_path="",
        average=False,
        do_ccp=do_ccp,
        device=device,
        worker=0,
        label_key="label" if with_label else None,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, num_threads))  # per-case stats on small tensors: extra threads only spin (14x slower
    try:  # on a loaded 2-core machine with 2 threads than with 1)
        result = analyzer.get_all_case_stats(transform_list=_transforms(with_label, data.get("label_map")))
    finally:
        torch.set_num_threads(threads)
    by_case = result["stats_by_cases"]
    done = set()  # the file name DataAnalyzer records (one of the channel files for multi-file images)
    for c in by_case:
        f = _plain(c["image_filepath"])
        done.update(map(str, f) if isinstance(f, list) else [str(f)])
    failed = [e for e, it in zip(entries, items, strict=True) if not done.intersection(_files(it["image"]))]
    if failed:
        raise DataValidationError(
            [
                Problem(
                    subject_of(e),
                    str(e["image"]),
                    "MONAI's DataAnalyzer could not read this case",
                    "run `prepare_data.py check --level full` to find what is wrong with it",
                )
                for e in failed
            ],
            source="fingerprint",
        )
    spacings = np.array([c["image_stats"]["spacing"] for c in by_case], float)
    shapes = np.array([c["image_stats"]["shape"][0] for c in by_case], float)
    cropped = np.array([c["image_stats"]["cropped_shape"][0] for c in by_case], float)
    n_ch = int(by_case[0]["image_stats"]["channels"])
    image_int = [_pooled([_plain(c["image_stats"]["intensity"][k]) for c in by_case]) for k in range(n_ch)]
    fg_int = (
        [_pooled([_plain(c["image_foreground_stats"]["intensity"][k]) for c in by_case]) for k in range(n_ch)]
        if with_label
        else image_int
    )
    names = [str(v) for _, v in sorted(data.get("modality", {}).items(), key=lambda kv: int(kv[0]))] or [""] * n_ch
    is_ct, guessed = _is_ct(names, image_int[0]["p00_5"])
    rec = plan(spacings, shapes, cropped, voxel_budget)
    ct = {"kind": "ct", "a_min": round(fg_int[0]["p00_5"], 1), "a_max": round(fg_int[0]["p99_5"], 1)}
    if is_ct:
        intensity = {**ct, "kind": "ct_zscore", "mean": round(fg_int[0]["mean"], 3), "std": round(fg_int[0]["std"], 3)}
        alternatives = {"ct": ct}
    else:
        intensity, alternatives = {"kind": "zscore", "nonzero": rec["crop_foreground"]}, {}
    labels = _label_summary(by_case, data) if with_label else {}
    recommended = {
        "pixdim": rec["pixdim"],
        "orientation": "RAS",
        "intensity": intensity,
        "intensity_alternatives": alternatives,
        "crop_foreground": rec["crop_foreground"],
        "patch_size": rec["patch_size"],
        "strides": rec["strides"],
        "divisible_by": rec["divisible_by"],
        "batch_size": rec["batch_size"],
        "sampling": rec["sampling"],
        **{k: labels[k] for k in ("num_classes", "multilabel") if k in labels},
    }
    fp = {
        "warnings": _warnings(by_case, spacings, labels, is_ct),
        "datalist": str(datalist) if not isinstance(datalist, dict) else None,
        "dataset_dir": base_dir,
        "n_cases": len(by_case),
        "modality": "CT" if is_ct else "MRI/other",
        "modality_guessed": guessed,
        "channels": names,
        "spacing": _axis_stats(spacings),
        "shape": _axis_stats(shapes),
        "cropped_shape": _axis_stats(cropped),
        "median_shape_at_pixdim": rec["median_shape_at_pixdim"],
        "intensity": [
            {"channel": names[k] if k < len(names) else str(k), "image": image_int[k], "foreground": fg_int[k]}
            for k in range(n_ch)
        ],
        "labels": labels,
        "recommended": recommended,
        "method": "MONAI DataAnalyzer statistics; nnU-Net-like heuristics (shared_components/data/fingerprint.py)",
        "datastats": _plain(result["stats_summary"]),
    }
    if out is None and not isinstance(datalist, dict):
        out = Path(datalist).parent / FINGERPRINT_FILE
    if out is not None:
        save_datalist(fp, out)  # atomic JSON write
    return fp


def _warnings(by_case: list[dict], spacings: np.ndarray, labels: dict[str, Any], is_ct: bool) -> list[str]:
    """Dataset traits a user should know before training."""
    out = []
    high = np.array([[ch["percentile_99_5"] for ch in _plain(c["image_stats"]["intensity"])] for c in by_case], float)
    for k in range(high.shape[1]):
        lo, hi = np.percentile(np.abs(high[:, k]), [5, 95])
        if not is_ct and lo > 0 and hi / lo > 5:
            out.append(
                f"channel {k}: the 99.5th intensity percentile varies {hi / lo:.0f}x between cases (5th-95th "
                "percentile of cases): normalise per case (zscore), not with dataset-wide constants"
            )
    ratio = spacings.max(0) / spacings.min(0)
    for axis in np.flatnonzero(ratio > 1.5):
        out.append(
            f"axis {axis}: spacing ranges {spacings[:, axis].min():.3g}-{spacings[:, axis].max():.3g} mm: resample "
            "to the recommended pixdim"
        )
    for value, n in labels.get("missing_in_cases", {}).items():
        if value != "0":
            out.append(f"label {value} is absent from {n} of {len(by_case)} cases")
    return out


def _axis_stats(a: np.ndarray) -> dict[str, list[float]]:
    return {
        "median": np.round(np.median(a, 0), 4).tolist(),
        "p10": np.round(np.percentile(a, 10, 0), 4).tolist(),
        "min": np.round(a.min(0), 4).tolist(),
        "max": np.round(a.max(0), 4).tolist(),
    }


def _label_summary(by_case: list[dict], data: dict[str, Any]) -> dict[str, Any]:
    per_label: dict[int, list[float]] = {}
    for c in by_case:
        ls = c["label_stats"]
        for value, stats in zip(ls["labels"], ls["label"], strict=True):
            per_label.setdefault(int(value), []).append(float(stats["foreground_percentage"]))
    values = sorted(per_label)
    n = len(by_case)
    names = data.get("labels", {})
    out: dict[str, Any] = {
        "values": values,
        "names": {str(v): names.get(str(v), "") for v in values},
        "cases_with_label": {str(v): len(per_label[v]) for v in values},
        "median_percentage": {str(v): round(100 * float(np.median(per_label[v])), 4) for v in values},
        "missing_in_cases": {str(v): n - len(per_label[v]) for v in values if len(per_label[v]) < n},
    }
    if data.get("regions"):
        out.update(num_classes=len(data["regions"]), multilabel=True)
    elif data.get("label_map"):
        out.update(num_classes=len({int(v) for v in data["label_map"].values()} | {0}), multilabel=False)
    elif names:
        out.update(num_classes=max(int(k) for k in names) + 1, multilabel=False)
    else:
        out.update(num_classes=max(values) + 1, multilabel=False)
    return out


def recommended(source: str | os.PathLike) -> dict[str, Any]:
    """The ``recommended`` block of a fingerprint, from ``fingerprint.json``, the datalist next to it, or their
    folder (for bundle configs: ``$shared_components.data.recommended(@datalist)['patch_size']``)."""
    path = Path(source)
    if path.is_dir():
        path = path / FINGERPRINT_FILE
    elif path.name != FINGERPRINT_FILE and not path.name.endswith(".fingerprint.json"):
        path = path.parent / FINGERPRINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no fingerprint at {path}: run `segbundles prepare fingerprint <datalist.json>`.")
    return json.loads(path.read_text())["recommended"]


def summary(fp: dict[str, Any]) -> str:
    """A few lines for the command line."""
    r = fp["recommended"]
    chans = ", ".join(
        f"{c['channel']}: fg p0.5-p99.5 {c['foreground']['p00_5']:.4g}..{c['foreground']['p99_5']:.4g}"
        for c in fp["intensity"]
    )
    return "\n".join(
        [
            f"{fp['n_cases']} cases, {fp['modality']}; spacing median {fp['spacing']['median']}, "
            f"shape median {fp['shape']['median']}",
            f"intensity {chans}",
            f"labels {fp['labels'].get('values')} (median % of voxels {fp['labels'].get('median_percentage')})",
            f"recommended: pixdim {r['pixdim']}, patch_size {r['patch_size']}, intensity {r['intensity']}, "
            f"batch_size {r['batch_size']}, crop_foreground {r['crop_foreground']}, sampling {r['sampling']}",
            *[f"warning: {w}" for w in fp.get("warnings", [])],
        ]
    )
