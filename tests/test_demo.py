"""The README's demo, end to end on synthetic MSD-layout data (small settings: few cases, few epochs)."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from shared_components.demo import DEMO_EPOCHS, EXPECTED_DICE, Progress
from shared_components.paths import REPO_ROOT


@pytest.mark.slow
def test_demo_runs_a_fixed_amount_of_work_end_to_end(tmp_path):
    """Exactly ``--max_epochs`` epochs (no time budget), progress on the console, the Dice line, then the outputs."""
    out = tmp_path / "demo"
    cmd = [sys.executable, "scripts/demo.py", "--out", str(out), "--max_epochs", "4", "--n_train", "8"]
    r = subprocess.run([*cmd, "--val_interval", "2"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = r.stdout.splitlines()
    history = list(csv.DictReader(io.StringIO((out / "logs" / "history.csv").read_text())))
    assert [int(h["epoch"]) for h in history] == [1, 2, 3, 4]  # the planned work, whatever the machine's speed
    progress = [ln for ln in lines if re.match(r"\s+epoch [1-4]/4  loss \d\.\d{4}", ln)]
    assert [ln.split()[1] for ln in progress] == ["1/4", "2/4", "4/4"]  # first, validated and last epochs
    assert all("ETA" in ln for ln in progress) and "val Dice" in progress[1]
    assert "for 4 epochs on 6 cases, validating on 2" in r.stdout and "trained 4 epochs" in r.stdout
    dice_at = next(i for i, ln in enumerate(lines) if ln.startswith("mean foreground Dice: "))
    assert re.fullmatch(r"mean foreground Dice: [01]\.\d{3}", lines[dice_at])
    assert lines[dice_at + 1] == f"outputs: {out}" and all(ln.startswith("  ") for ln in lines[dice_at + 2 :])
    assert "anterior" in r.stdout and "posterior" in r.stdout
    assert (out / "models" / "model.pt").is_file()
    assert (out / "overlay.png").stat().st_size > 10_000
    preds = sorted((out / "predictions").glob("*_seg.nii.gz"))
    assert len(preds) == 2 and "inference on the 2 validation images" in r.stdout
    image = out / "data" / "Task04_Hippocampus_synthetic" / "imagesTr" / preds[0].name.replace("_seg", "")
    assert nib.load(preds[0]).shape == nib.load(image).shape
    assert set(np.unique(np.asarray(nib.load(preds[0]).dataobj)).tolist()) <= {0, 1, 2}


def test_demo_defaults_state_the_expected_result():
    """The default demo is a fixed number of epochs and says, up front, the Dice it was measured to reach."""
    import inspect

    from shared_components.demo import run_demo

    params = inspect.signature(run_demo).parameters
    assert params["max_epochs"].default == DEMO_EPOCHS and params["minutes"].default is None
    assert 0.5 < EXPECTED_DICE < 1


def test_progress_lines_from_the_training_log():
    """``EpochHistory``'s log lines become progress lines with loss, validation Dice and an ETA."""
    out = io.StringIO()
    progress = Progress(out)
    prefix = "2026-01-01 00:00:00,000 - shared_components.training.handlers - INFO - "
    progress(prefix + "epoch 1/10 loss 2.1138 lr 1.71e-03 5.0s")
    progress(prefix + "epoch 2/10 loss 1.8773 lr 1.00e-03 5.0s val_mean_dice 0.0612 (best 0.0612 at epoch 2)")
    progress(prefix + "epoch 3/10 loss 1.7000 lr 1.00e-03 5.0s")  # not validated: not printed off a terminal
    progress("Engine run resuming from iteration 0")
    assert out.getvalue().splitlines() == [
        "      epoch  1/10  loss 2.1138  0:05 elapsed, ETA 0:45",
        "      epoch  2/10  loss 1.8773  val Dice 0.061 (best 0.061 at 2)  0:10 elapsed, ETA 0:40",
    ]
    assert progress.epochs == 3


@pytest.mark.slow
def test_demo_reports_bad_data_folder(tmp_path):
    r = subprocess.run(
        [sys.executable, "scripts/demo.py", "--data", str(tmp_path), "--out", str(tmp_path / "o")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "dataset.json" in r.stderr and "Traceback" not in r.stderr


def test_overlay_names_the_classes_gives_the_dice_and_cuts_through_the_structure(tmp_path):
    """The overlay's legend names each class, its title gives the case's Dice per class, and each view shows the
    slice with the most labelled voxels (matplotlib objects, not pixels)."""
    import matplotlib.pyplot as plt

    from shared_components.evaluation.plots import overlay_figure

    ref = np.zeros((20, 24, 16), np.uint8)
    ref[4:10, 5:15, 9:12] = 1  # most labelled voxels in x 4-9, y 5-14, z 9-11
    ref[12:14, 5:15, 2:4] = 2
    pred = ref.copy()
    pred[4:10, 5:15, 11] = 0  # anterior: 120 of 180 voxels found -> Dice 240 / 300 = 0.8
    rng = np.random.default_rng(0)
    files = {}
    for name, data in (("image", rng.normal(size=ref.shape).astype(np.float32)), ("ref", ref), ("pred", pred)):
        files[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), files[name])
    fig = overlay_figure(files["image"], files["pred"], files["ref"], "unet: case_1", {1: "anterior", 2: "posterior"})
    try:
        assert [t.get_text() for t in fig.legends[0].get_texts()] == ["1 anterior", "2 posterior"]
        assert fig._suptitle.get_text() == "unet: case_1\nDice anterior 0.800, posterior 1.000, mean 0.900"
        views = [ax.texts[0].get_text() for ax in fig.axes if ax.texts]
        assert views == ["axial 10", "coronal 10", "sagittal 7"]  # the middle of tied slices
        assert [ax.get_title() for ax in fig.axes[:3]] == ["image", "reference", "prediction"]
    finally:
        plt.close(fig)
