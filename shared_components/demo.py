"""The end-to-end demo: data -> datalist -> train -> evaluate -> infer -> Dice table and an overlay PNG.

Everything runs through the stock ``python -m monai.bundle run`` CLI on the hippocampus bundle, exactly as a
user would run it; only the data, output folders and training length are overridden.
"""

from __future__ import annotations

import csv
from pathlib import Path

from shared_components.bundle.runner import EVALUATE, INFER, TRAIN, run_bundle
from shared_components.bundle.scaffold import BUNDLES_DIR
from shared_components.data.datalist import describe, split
from shared_components.data.msd import convert_msd
from shared_components.data.synthetic import write_msd_hippocampus
from shared_components.evaluation.plots import overlay_png


def dice_table(raw_csv: str | Path, class_names: tuple[str, ...] = ("anterior", "posterior")) -> str:
    """A per-class Dice table (mean, std, n) from MONAI's ``MetricsSaver`` per-case CSV
    (columns ``filename, class0, class1, ..., mean``; foreground classes only)."""
    import numpy as np

    with open(raw_csv) as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    values = np.array([[float(v) for v in r[1:-1]] for r in body])
    names = [class_names[i] if i < len(class_names) else h for i, h in enumerate(header[1:-1])]
    out = [f"{'class':<12}{'Dice mean':>10}{'std':>8}{'n':>5}"]
    for name, col in [*zip(names, values.T, strict=True), ("mean", np.nanmean(values, axis=1))]:
        col = col[~np.isnan(col)]
        out.append(f"{name:<12}{col.mean():>10.4f}{col.std():>8.4f}{len(col):>5}")
    return "\n".join(out)


def run_demo(
    data: str | None = None,
    out: str = "work/demo",
    max_epochs: int = 150,
    minutes: float = 2.5,
    fold: int = 0,
    folds: int = 5,
    seed: int = 0,
    bundle: str = "hippocampus_mri_unet",
) -> None:
    """Run the demo, writing everything below ``out``. ``data`` is an MSD task folder (default: synthetic)."""
    out_dir = Path(out).resolve()
    bundle_dir = BUNDLES_DIR / bundle
    if data is None:
        print(f"[1/6] writing a synthetic MSD-layout hippocampus dataset to {out_dir / 'data'}")
        data_dir = write_msd_hippocampus(out_dir / "data" / "Task04_Hippocampus_synthetic", n_train=24, n_test=4)
    else:
        data_dir = Path(data).resolve()
        print(f"[1/6] using the MSD task folder {data_dir}")
    datalist = convert_msd(data_dir, out_dir / "datalist.json", folds=folds, seed=seed)
    print(f"[2/6] datalist {datalist}\n{describe(datalist)}")
    log = out_dir / "demo.log"
    common = {
        "dataset_dir": str(data_dir),
        "datalist": str(datalist),
        "fold": fold,
        "seed": seed,
        "ckpt_dir": str(out_dir / "models"),
        "log_dir": str(out_dir / "logs"),
        "output_dir": str(out_dir / "eval"),
    }
    print(f"[3/6] training {bundle} (fold {fold}, up to {max_epochs} epochs or {minutes} min); log: {log}")
    seconds = run_bundle(
        bundle_dir,
        TRAIN,
        {**common, "max_epochs": max_epochs, "val_interval": 2, "time_budget_minutes": minutes},
        log_file=log,
    )
    print(f"      trained in {seconds / 60:.1f} min -> {out_dir / 'models' / 'model.pt'}")
    print("[4/6] evaluating the best checkpoint on the validation fold")
    run_bundle(bundle_dir, EVALUATE, common, log_file=log)
    val = split(datalist, fold, "val", str(data_dir))
    print(f"[5/6] inference on the {len(val)} validation images -> {out_dir / 'predictions'}")
    infer = {
        "dataset_dir": str(data_dir),
        "ckpt_path": str(out_dir / "models" / "model.pt"),
        "input_data": [e["image"] for e in val],
        "output_dir": str(out_dir / "predictions"),
    }
    run_bundle(bundle_dir, INFER, infer, log_file=log)
    case = val[0]
    pred = out_dir / "predictions" / (Path(case["image"]).name.replace(".nii.gz", "") + "_seg.nii.gz")
    png = overlay_png(
        case["image"], pred, out_dir / "overlay.png", label=case["label"], title=f"{bundle}: {Path(case['image']).name}"
    )
    print("[6/6] validation Dice (best checkpoint):")
    print(dice_table(out_dir / "eval" / "val_mean_dice_raw.csv"))
    print(
        f"\noutputs: {out_dir}\n  weights     {out_dir / 'models' / 'model.pt'}\n  metrics     {out_dir / 'eval'}"
        f"\n  predictions {out_dir / 'predictions'}\n  overlay PNG {png}\n  TensorBoard {out_dir / 'logs'}"
    )
