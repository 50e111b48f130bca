"""Figures researchers look at rather than read: image / reference / prediction overlays."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from shared_components.files import atomic_path  # noqa: E402


def _load(path: str | Path) -> np.ndarray:
    return _volume(path)[0]


def _volume(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The volume in RAS orientation (first channel of a 4D file) and its voxel spacing in mm."""
    img = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asarray(img.dataobj)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    return (data[..., 0] if data.ndim == 4 else data), zooms  # type: ignore[return-value]


def dice_per_class(pred: np.ndarray, ref: np.ndarray, classes: list[int]) -> dict[int, float]:
    """Dice of each class value (both empty: 1, as the evaluation's BraTS convention)."""
    out = {}
    for c in classes:
        p, r = pred == c, ref == c
        total = int(p.sum() + r.sum())
        out[c] = 1.0 if total == 0 else 2.0 * float(np.logical_and(p, r).sum()) / total
    return out


def _colour(value: int) -> tuple[float, float, float]:
    return plt.get_cmap("tab10").colors[(value - 1) % 10]


def _rgba(mask: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    rgba = np.zeros((*mask.shape, 4))
    for v in np.unique(mask[mask > 0]):
        rgba[mask == v] = (*_colour(int(v)), alpha)
    return rgba


def _busiest_slice(mask: np.ndarray, axis: int) -> int:
    """The slice along ``axis`` with the most voxels of ``mask`` (the middle one of ties; the centre when empty)."""
    counts = mask.sum(axis=tuple(a for a in range(mask.ndim) if a != axis))
    if not counts.any():
        return mask.shape[axis] // 2
    best = np.flatnonzero(counts == counts.max())
    return int(best[len(best) // 2])


def overlay_figure(
    image: str | Path,
    pred: str | Path,
    label: str | Path | None = None,
    title: str | None = None,
    class_names: dict[int, str] | None = None,
) -> plt.Figure:
    """Axial, coronal and sagittal slices of the image, the reference (when given) and the prediction as coloured
    overlays. Each view shows the slice with the most labelled voxels (reference or prediction); a legend names
    the classes and, with a reference, the title gives the case's Dice per class and their mean."""
    (img, zooms), seg = _volume(image), _load(pred).astype(int)
    ref = _load(label).astype(int) if label is not None else None
    if img.shape != seg.shape:
        raise ValueError(f"{pred} has shape {seg.shape}, but its image {image} has {img.shape}.")
    if ref is not None and ref.shape != seg.shape:
        raise ValueError(f"{label} has shape {ref.shape}, but the prediction {pred} has {seg.shape}.")
    labelled = (seg > 0) | (ref > 0) if ref is not None else seg > 0
    centre = [_busiest_slice(labelled, axis) for axis in range(3)]
    names = dict(class_names or {})
    values = sorted(
        {*names, *np.unique(seg[seg > 0]).tolist(), *(np.unique(ref[ref > 0]).tolist() if ref is not None else [])}
    )
    lo, hi = np.percentile(img, [1, 99])
    columns = [("image", None)] + ([("reference", ref)] if ref is not None else []) + [("prediction", seg)]
    fig, axes = plt.subplots(3, len(columns), figsize=(3.2 * len(columns), 9.6), squeeze=False)
    # (name, slice of a volume, aspect = height / width of a displayed pixel after rot90)
    views = [
        (f"axial {centre[2]}", lambda a: a[:, :, centre[2]], zooms[1] / zooms[0]),
        (f"coronal {centre[1]}", lambda a: a[:, centre[1], :], zooms[2] / zooms[0]),
        (f"sagittal {centre[0]}", lambda a: a[centre[0], :, :], zooms[2] / zooms[1]),
    ]
    for r, (view, cut, aspect) in enumerate(views):
        for c, (name, mask) in enumerate(columns):
            ax = axes[r][c]
            ax.imshow(np.rot90(cut(img)), cmap="gray", vmin=lo, vmax=hi, aspect=aspect)
            if mask is not None:
                ax.imshow(_rgba(np.rot90(cut(mask))), aspect=aspect, interpolation="none")
            ax.set_axis_off()
            if r == 0:
                ax.set_title(name)
        axes[r][0].text(-0.05, 0.5, view, transform=axes[r][0].transAxes, rotation=90, va="center", ha="right")
    text = title or Path(str(image)).name
    if ref is not None:
        dice = dice_per_class(seg, ref, values)
        parts = [f"{names.get(v, f'label {v}')} {d:.3f}" for v, d in dice.items()]
        mean = f", mean {np.mean(list(dice.values())):.3f}" if len(dice) > 1 else ""
        text += "\nDice " + ", ".join(parts) + mean
    fig.suptitle(text)
    handles = [
        Patch(color=_colour(v), alpha=0.8, label=f"{v} {names[v]}" if v in names else f"label {v}") for v in values
    ]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), frameon=False)
    fig.tight_layout(rect=(0, 0.04 if handles else 0, 1, 1))
    return fig


def overlay_png(
    image: str | Path,
    pred: str | Path,
    out_png: str | Path,
    label: str | Path | None = None,
    title: str | None = None,
    class_names: dict[int, str] | None = None,
) -> Path:
    """Save :func:`overlay_figure` as a PNG: slices through the labelled structure, a legend of the classes and,
    with a reference, the case's Dice in the title."""
    return _save(overlay_figure(image, pred, label, title, class_names), out_png)


def learning_curves_png(histories: dict[str, str | Path], out_png: str | Path, metric: str = "val_mean_dice") -> Path:
    """Training loss and validation ``metric`` against epoch (and wall time) for one or more runs, from the
    ``history.csv`` files ``EpochHistory`` writes."""
    import pandas as pd

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, path in histories.items():
        h = pd.read_csv(path)
        h["minutes"] = h["epoch_seconds"].cumsum() / 60
        axes[0].plot(h["epoch"], h["loss"], label=name)
        if metric in h:
            v = h.dropna(subset=[metric])
            axes[1].plot(v["epoch"], v[metric], marker=".", label=name)
            axes[2].plot(v["minutes"], v[metric], marker=".", label=name)
    axes[0].set(xlabel="epoch", ylabel="training loss", title="training loss")
    axes[1].set(xlabel="epoch", ylabel=metric, title=f"validation {metric}")
    axes[2].set(xlabel="training time (min)", ylabel=metric, title=f"validation {metric} vs time")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out_png)


def _save(fig: plt.Figure, out_png: str | Path) -> Path:
    """Save ``fig`` as a PNG atomically and close it."""
    try:
        with atomic_path(out_png) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return Path(out_png)


def case_boxplot_png(per_case, out_png: str | Path, metric: str = "dice", models: list[str] | None = None) -> Path:
    """Box plots of a per-case metric, one box per model and one panel per class (and the per-case class mean),
    with every case drawn as a point. ``per_case`` has columns ``model, case, fold, class, metric, value``."""
    import pandas as pd

    from shared_components.evaluation.report import with_case_means

    df = per_case[per_case["metric"] == metric]
    models = models or list(dict.fromkeys(df["model"]))
    parts = [with_case_means(g.drop(columns="model")).assign(model=m) for m, g in df.groupby("model", sort=False)]
    df = pd.concat(parts, ignore_index=True) if parts else df
    classes = list(dict.fromkeys(df["class"]))
    fig, axes = plt.subplots(1, len(classes), figsize=(max(4.0, 1.1 * len(models)) * len(classes), 4.5), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, cls in zip(axes[0], classes, strict=True):
        data = [df[(df["class"] == cls) & (df["model"] == m)]["value"].to_numpy() for m in models]
        ax.boxplot(data, showmeans=True, widths=0.6)
        for i, vals in enumerate(data, start=1):
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(vals)), vals, s=8, alpha=0.5, color="k", zorder=3)
        ax.set_xticks(range(1, len(models) + 1), models, rotation=30, ha="right")
        ax.set_title(f"{metric} - {cls}")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, out_png)


def cost_scatter_png(table, out_png: str | Path, metric: str = "dice_mean") -> Path:
    """Accuracy against cost: ``metric`` (with its confidence interval as error bars) against total training time
    and against the number of parameters, one labelled point per model. ``table`` has columns ``model``,
    ``metric``, ``metric_ci_low``/``_ci_high``, ``train_minutes`` and ``parameters``."""
    t = table.dropna(subset=[metric])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    err = np.vstack([t[metric] - t[f"{metric}_ci_low"], t[f"{metric}_ci_high"] - t[metric]]).clip(min=0)
    for ax, col, label in (
        (axes[0], "train_minutes", "training time per run (min)"),
        (axes[1], "parameters", "parameters (millions)"),
    ):
        x = t[col] / (1e6 if col == "parameters" else 1)
        ax.errorbar(x, t[metric], yerr=err, fmt="o", capsize=3)
        for xi, yi, name in zip(x, t[metric], t["model"], strict=True):
            ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(5, 5), fontsize=8)
        name = "Dice (mean over classes)" if metric == "dice_mean" else metric.replace("_", " ")
        ax.set(xlabel=label, ylabel=f"{name}, 95% CI", title=f"{name} vs {label.split(' (')[0]}")
        if col == "parameters" and len(x) > 1 and x.max() > 10 * x.min() > 0:
            ax.set_xscale("log")
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return _save(fig, out_png)


def froc_png(summary, out_png: str | Path, title: str | None = None) -> Path:
    """The FROC curve of a :func:`shared_components.evaluation.froc.froc` summary: sensitivity against false
    positives per scan (log scale, 1/8 to 8), the sensitivity at each summary rate with its bootstrap CI, the CPM
    in the title."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    fps = np.asarray(summary["curve"]["fp_per_scan"], dtype=float)
    sens = np.asarray(summary["curve"]["sensitivity"], dtype=float)
    order = np.argsort(fps, kind="stable")
    ax.step(np.clip(fps[order], 1 / 16, None), sens[order], where="post", color="C0", label="FROC")
    rates = [s["fp_per_scan"] for s in summary["sensitivity"]]
    vals = np.asarray([s["sensitivity"] for s in summary["sensitivity"]], dtype=float)
    lo = np.asarray([s["ci_low"] for s in summary["sensitivity"]], dtype=float)
    hi = np.asarray([s["ci_high"] for s in summary["sensitivity"]], dtype=float)
    err = np.vstack([vals - lo, hi - vals])
    err = np.where(np.isfinite(err), err, 0).clip(min=0)
    ax.errorbar(rates, vals, yerr=err, fmt="o", color="C1", capsize=3, label="sensitivity at rate (95% CI)")
    ax.set_xscale("log", base=2)
    ax.set_xlim(1 / 16, 16)
    ax.set_xticks(rates, [f"1/{int(round(1 / r))}" if r < 1 else f"{r:g}" for r in rates])
    ax.set_ylim(0, 1.02)
    ax.set(xlabel="false positives per scan", ylabel="sensitivity")
    cpm = summary.get("cpm")
    head = title or "FROC"
    ax.set_title(f"{head}: CPM {cpm:.3f}" if isinstance(cpm, float) and cpm == cpm else head)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(fig, out_png)
