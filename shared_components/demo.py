"""The end-to-end demo: data -> datalist -> train -> evaluate -> infer -> Dice table and an overlay PNG.

Everything runs through the stock ``python -m monai.bundle run`` CLI on the hippocampus bundle, exactly as a
user would run it; only the data, output folders and training length are overridden. The training is a fixed
number of epochs (seeded), so the demo reaches the same Dice however busy the machine; load only changes how long
it takes.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, TextIO

from shared_components.bundle.runner import EVALUATE, INFER, TRAIN, output_overrides, run_bundle
from shared_components.bundle.scaffold import BUNDLES_DIR
from shared_components.data.converters.msd import convert_msd
from shared_components.data.datalist import describe, load_datalist, split
from shared_components.data.synthetic import write_msd_hippocampus
from shared_components.evaluation.plots import overlay_png

DEMO_EPOCHS = 100
DEMO_CASES = 24
# measured with the defaults (synthetic phantoms; max_epochs, n_train, fold, folds, seed, val_interval, bundle as
# below): the same on every run, however busy the machine, since the training is seeded and of fixed length
MEASURED_SETTINGS = (DEMO_EPOCHS, DEMO_CASES, 0, 5, 0, 5, "hippocampus_mri_unet")
EXPECTED_DICE = 0.899
# the whole demo on 2 idle CPU cores: 2 min 25 s measured 2026-12-02 (`time .venv/bin/segbundles demo`, the other
# work on the machine stopped; 22 min with a load of 8 on the same 2 cores, 2026-12-01)
EXPECTED_MINUTES = 2.5
DICE_LINE = "mean foreground Dice: {:.3f}"
_EPOCH = re.compile(
    r"epoch (?P<epoch>\d+)/(?P<total>\d+) loss (?P<loss>\S+) lr \S+ (?P<seconds>[\d.]+)s"
    r"(?: (?P<metric>\S+) (?P<value>[\d.]+) \(best (?P<best>[\d.]+) at epoch (?P<best_epoch>\d+)\))?"
)


def metrics_table(eval_dir: str | Path) -> str:
    """The evaluation summary (``metrics_summary.csv`` written by ``configs/evaluate.yaml``) as a Markdown table:
    per class Dice, HD95, mean surface distance and normalised surface Dice, mean [95% CI] over the cases."""
    import pandas as pd

    from shared_components.evaluation.report import SUMMARY_CSV, summary_markdown

    return summary_markdown(pd.read_csv(Path(eval_dir) / SUMMARY_CSV))


def mean_dice(eval_dir: str | Path) -> float:
    """The mean over cases of the per-case mean foreground Dice, from ``metrics_summary.csv``."""
    import pandas as pd

    from shared_components.evaluation.report import MEAN_CLASS, SUMMARY_CSV

    df = pd.read_csv(Path(eval_dir) / SUMMARY_CSV)
    row = df[(df["group"] == "all") & (df["class"] == MEAN_CLASS) & (df["metric"] == "dice")]
    return float(row["mean"].iloc[0])


def median_case(eval_dir: str | Path) -> tuple[str, float] | None:
    """The case whose mean foreground Dice is the median of the evaluated cases, and that Dice."""
    import pandas as pd

    from shared_components.evaluation.report import PER_CASE

    df = pd.read_csv(Path(eval_dir) / PER_CASE, dtype={"case": str})
    dice = df[df["metric"] == "dice"].groupby("case")["value"].mean().sort_values()
    if dice.empty:
        return None
    case = dice.index[(len(dice) - 1) // 2]
    return case, float(dice[case])


class Progress:
    """Training progress on the console from the bundle's per-epoch log lines (``EpochHistory``): epoch, loss,
    validation Dice, elapsed time and ETA. Validated epochs get a line each; on a terminal the line of the current
    epoch is updated in place between them."""

    def __init__(self, stream: TextIO | None = None, indent: str = "      "):
        self.stream = stream or sys.stdout
        self.indent = indent
        self.tty = self.stream.isatty()
        self.seconds = 0.0
        self.epochs = 0
        self._partial = False

    def __call__(self, line: str) -> None:
        m = _EPOCH.search(line)
        if m is None:
            if "time budget" in line:
                self._print(self.indent + line.split(" - ")[-1], final=True)
            return
        epoch, total = int(m["epoch"]), int(m["total"])
        self.seconds += float(m["seconds"])
        self.epochs = epoch
        eta = self.seconds / epoch * (total - epoch)
        text = f"{self.indent}epoch {epoch:>{len(str(total))}}/{total}  loss {float(m['loss']):.4f}"
        if m["value"] is not None:
            text += f"  val Dice {float(m['value']):.3f} (best {float(m['best']):.3f} at {m['best_epoch']})"
        text += f"  {_clock(self.seconds)} elapsed, ETA {_clock(eta)}"
        if m["value"] is not None or epoch in (1, total):
            self._print(text, final=True)
        elif self.tty:
            self._print(text, final=False)

    def _print(self, text: str, final: bool) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + text + ("\n" if final else ""))
        elif final:
            self.stream.write(text + "\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}"


def run_demo(
    data: str | None = None,
    out: str = "work/demo",
    max_epochs: int = DEMO_EPOCHS,
    minutes: float | None = None,
    n_train: int = DEMO_CASES,
    fold: int = 0,
    folds: int = 5,
    seed: int = 0,
    val_interval: int = 5,
    bundle: str = "hippocampus_mri_unet",
) -> None:
    """End-to-end demo: phantoms -> train -> evaluate -> infer -> Dice table, overlay PNG.

    The training is a fixed amount of work (``max_epochs``, seeded): the result is the same on every run, a busy
    machine only takes longer. It ends with the line ``mean foreground Dice: 0.NNN`` and where every output went.

    Args:
        data: an MSD task folder with ``dataset.json`` (default: synthetic hippocampus phantoms in the MSD layout).
        out: the folder that receives everything (data, datalist, weights, metrics, predictions, overlay, log).
        max_epochs: training epochs.
        minutes: optional wall-time cap of the training (then the result depends on the machine's speed).
        n_train: synthetic training cases (with the default ``data``).
        fold: the cross-validation fold held out and evaluated.
        folds: number of folds of the datalist.
        seed: seed of the data, the folds and the training.
        val_interval: validate every this many epochs.
        bundle: the bundle to train (a name under ``bundles/``).
    """
    out_dir = Path(out).resolve()
    bundle_dir = BUNDLES_DIR / bundle
    if not (bundle_dir / "configs" / "train.yaml").is_file():
        raise FileNotFoundError(f"no bundle {bundle!r} in {BUNDLES_DIR}.")
    settings = (max_epochs, n_train, fold, folds, seed, val_interval, bundle)
    measured = data is None and minutes is None and settings == MEASURED_SETTINGS
    if data is None:
        print(f"[1/6] writing {n_train} + 4 synthetic MSD-layout hippocampus phantoms to {out_dir / 'data'}")
        data_dir = write_msd_hippocampus(out_dir / "data" / "Task04_Hippocampus_synthetic", n_train=n_train, n_test=4)
    else:
        data_dir = Path(data).resolve()
        print(f"[1/6] using the MSD task folder {data_dir}")
    datalist = convert_msd(data_dir, out_dir / "datalist.json", folds=folds, seed=seed)
    print(f"[2/6] datalist {datalist}\n{describe(datalist)}")
    log = out_dir / "demo.log"
    common = {"dataset_dir": str(data_dir), "datalist": str(datalist), "fold": fold, "seed": seed}
    common.update(output_overrides(out_dir))
    n_train_cases, n_val = len(split(datalist, fold, "train")), len(split(datalist, fold, "val"))
    cap = f", at most {minutes} min" if minutes else ""
    print(
        f"[3/6] training {bundle} for {max_epochs} epochs{cap} on {n_train_cases} cases, validating on {n_val} "
        f"(fold {fold}, seed {seed}); full log: {log}"
    )
    if measured and EXPECTED_DICE:
        print(
            f"      expected: mean foreground Dice {EXPECTED_DICE:.3f} (seeded, fixed length: a busy machine only "
            f"takes longer); the whole demo about {EXPECTED_MINUTES:g} min on 2 idle CPU cores"
        )
    train: dict[str, Any] = {"max_epochs": max_epochs, "val_interval": val_interval, "overwrite": True}
    if minutes:
        train["time_budget_minutes"] = minutes
    progress = Progress()
    seconds = run_bundle(bundle_dir, TRAIN, {**common, **train}, log_file=log, on_line=progress)
    print(f"      trained {progress.epochs} epochs in {_clock(seconds)} -> {out_dir / 'models' / 'model.pt'}")
    print(f"[4/6] evaluating the best checkpoint on the {n_val} validation cases")
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
    png = _overlay(out_dir, val, bundle, load_datalist(datalist).get("labels", {}))
    print("[6/6] validation Dice, HD95, surface distance and surface Dice (best checkpoint), mean [95% CI]:")
    print(metrics_table(out_dir / "eval"))
    print(f"\n{DICE_LINE.format(mean_dice(out_dir / 'eval'))}")
    print(
        f"outputs: {out_dir}\n  weights     {out_dir / 'models' / 'model.pt'}\n  metrics     {out_dir / 'eval'}"
        f"\n  predictions {out_dir / 'predictions'}\n  overlay PNG {png}\n  TensorBoard {out_dir / 'logs'}"
        f"\n  log         {log}"
    )


def _overlay(out_dir: Path, val: list[dict[str, Any]], bundle: str, labels: dict[str, str]) -> Path:
    """The overlay PNG of the validation case with the median Dice."""
    stem = lambda e: Path(e["image"]).name.removesuffix(".gz").removesuffix(".nii")  # noqa: E731
    picked = median_case(out_dir / "eval")
    case = next((e for e in val if picked and stem(e) == picked[0]), val[0])
    pred = out_dir / "predictions" / f"{stem(case)}_seg.nii.gz"
    names = {int(k): v for k, v in labels.items() if str(k).isdigit() and int(k) > 0}
    title = f"{bundle}: {stem(case)} (median validation case)"
    return overlay_png(
        case["image"], pred, out_dir / "overlay.png", label=case["label"], title=title, class_names=names
    )
