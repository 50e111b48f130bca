"""The README's demo, end to end on synthetic MSD-layout data (short training)."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from shared_components.paths import REPO_ROOT

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run(
        [sys.executable, "scripts/demo.py", "--out", str(out), "--max_epochs", "4", "--minutes", "1"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "validation Dice" in r.stdout and "anterior" in r.stdout and "posterior" in r.stdout
    assert (out / "models" / "model.pt").is_file()
    assert (out / "overlay.png").stat().st_size > 10_000
    val_images = [ln for ln in r.stdout.splitlines() if "inference on the" in ln]
    preds = sorted((out / "predictions").glob("*_seg.nii.gz"))
    assert val_images and len(preds) == int(val_images[0].split("inference on the ")[1].split()[0])
    image = out / "data" / "Task04_Hippocampus_synthetic" / "imagesTr" / preds[0].name.replace("_seg", "")
    assert nib.load(preds[0]).shape == nib.load(image).shape
    assert set(np.unique(np.asarray(nib.load(preds[0]).dataobj)).tolist()) <= {0, 1, 2}


def test_demo_reports_bad_data_folder(tmp_path):
    r = subprocess.run(
        [sys.executable, "scripts/demo.py", "--data", str(tmp_path), "--out", str(tmp_path / "o")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "dataset.json" in r.stderr and "Traceback" not in r.stderr
