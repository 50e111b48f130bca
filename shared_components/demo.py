"""The end-to-end demo: data -> datalist -> train -> evaluate -> infer -> Dice table and an overlay PNG.

Everything runs through the stock ``python -m monai.bundle run`` CLI on the hippocampus bundle, exactly as a
user would run it; only the data, output folders and training length are overridden.
"""

from __future__ import annotations

from pathlib import Path

from shared_components.bundle.runner import EVALUATE, INFER, TRAIN, output_overrides, run_bundle
from shared_components.bundle.scaffold import BUNDLES_DIR
from shared_components.data.converters.msd import convert_msd
from shared_components.data.datalist import describe, split
from shared_components.data.synthetic import write_msd_hippocampus
from shared_components.evaluation.plots import overlay_png


def metrics_table(eval_dir: str | Path) -> str:
    """The evaluation summary (``metrics_summary.csv`` written by ``configs/evaluate.yaml``) as a Markdown table:
    per class Dice, HD95, mean surface distance and normalised surface Dice, mean [95% CI] over the cases."""
    import pandas as pd

    from shared_components.evaluation.report import SUMMARY_CSV, summary_markdown

    return summary_markdown(pd.read_csv(Path(eval_dir) / SUMMARY_CSV))


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
        **output_overrides(out_dir),
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
    print("[6/6] validation Dice, HD95, surface distance and surface Dice (best checkpoint), mean [95% CI]:")
    print(metrics_table(out_dir / "eval"))
    print(
        f"\noutputs: {out_dir}\n  weights     {out_dir / 'models' / 'model.pt'}\n  metrics     {out_dir / 'eval'}"
        f"\n  predictions {out_dir / 'predictions'}\n  overlay PNG {png}\n  TensorBoard {out_dir / 'logs'}"
    )
