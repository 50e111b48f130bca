"""Figures researchers look at rather than read: image / reference / prediction overlays."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from shared_components.files import atomic_path  # noqa: E402


def _load(path: str | Path) -> np.ndarray:
    img = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asarray(img.dataobj)
    return data[..., 0] if data.ndim == 4 else data


def overlay_png(
    image: str | Path,
    pred: str | Path,
    out_png: str | Path,
    label: str | Path | None = None,
    title: str | None = None,
) -> Path:
    """Save axial, coronal and sagittal slices through the prediction's centre of mass: the image, and the
    reference (when given) and prediction as coloured overlays on it."""
    img, seg = _load(image), _load(pred).astype(int)
    ref = _load(label).astype(int) if label is not None else None
    if img.shape != seg.shape:
        raise ValueError(f"{pred} has shape {seg.shape}, but its image {image} has {img.shape}.")
    fg = np.argwhere(seg > 0) if seg.any() else np.argwhere(ref > 0) if ref is not None and ref.any() else None
    centre = fg.mean(0).astype(int) if fg is not None else np.array(img.shape) // 2
    lo, hi = np.percentile(img, [1, 99])
    n_classes = max(int(seg.max()), int(ref.max()) if ref is not None else 0, 1)
    cmap = plt.get_cmap("tab10", 10)
    columns = [("image", None)] + ([("reference", ref)] if ref is not None else []) + [("prediction", seg)]
    fig, axes = plt.subplots(3, len(columns), figsize=(3.2 * len(columns), 9), squeeze=False)
    views = [
        ("axial", lambda a: a[:, :, centre[2]]),
        ("coronal", lambda a: a[:, centre[1], :]),
        ("sagittal", lambda a: a[centre[0], :, :]),
    ]
    for r, (view, cut) in enumerate(views):
        for c, (name, mask) in enumerate(columns):
            ax = axes[r][c]
            ax.imshow(np.rot90(cut(img)), cmap="gray", vmin=lo, vmax=hi)
            if mask is not None:
                m = np.rot90(cut(mask)).astype(float)
                ax.imshow(np.ma.masked_where(m == 0, m), cmap=cmap, vmin=0, vmax=9, alpha=0.5, interpolation="none")
            ax.set_axis_off()
            if r == 0:
                ax.set_title(name)
        axes[r][0].text(-0.05, 0.5, view, transform=axes[r][0].transAxes, rotation=90, va="center", ha="right")
    fig.suptitle(title or Path(str(image)).name + f"  ({n_classes} foreground label(s))")
    fig.tight_layout()
    return _save(fig, out_png)


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
