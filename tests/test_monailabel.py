"""A real MONAI Label server (monaibundle app) serves, infers with and trains the hippocampus bundle and its export,
and serves the aneurysm detector's export (the boxes it returns are the stock bundle inference's).

Needs the MONAI Label environment (.venv-monailabel): `bash scripts/monailabel_check.sh --setup_only` creates it
(CI does, before pytest). Without it the test is skipped locally and fails under CI.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from shared_components.bundle.runner import INFER, TRAIN, output_overrides, run_bundle
from shared_components.data.converters.adam import convert_adam
from shared_components.data.synthetic.mra import write_adam
from shared_components.paths import REPO_ROOT
from tests.helpers import DETECTOR, HIPPO, TINY_DETECTOR, bundle_with_values, one_epoch

pytestmark = [pytest.mark.slow, pytest.mark.monailabel]

VENV = Path(os.environ.get("MONAILABEL_VENV", REPO_ROOT / ".venv-monailabel"))


def _wait_for_setup(timeout: float = 1200.0) -> None:
    """CI sets the environment up in the background (``.ci/run``): wait while that setup is running."""
    mark = VENV.with_name(VENV.name + ".installing")
    deadline = time.monotonic() + timeout
    while mark.is_file() and not (VENV / ".installed").is_file() and time.monotonic() < deadline:
        try:
            os.kill(int(mark.read_text().strip() or 0), 0)
        except (ValueError, ProcessLookupError, PermissionError, FileNotFoundError):
            return  # a stale marker: no setup is running
        time.sleep(5)


def _require_environment() -> None:
    _wait_for_setup()
    if not (VENV / ".installed").is_file():
        log = VENV.with_name(VENV.name + ".setup.log")
        msg = f"no MONAI Label environment at {VENV}: run `bash scripts/monailabel_check.sh --setup_only`"
        if log.is_file():
            msg += f"\nsetup log {log}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


def _check(args: list[str], env: dict[str, str] | None = None) -> dict:
    """``scripts/monailabel_check.sh ARGS``: its JSON summary (the check failing fails the test)."""
    cmd = ["bash", str(REPO_ROOT / "scripts" / "monailabel_check.sh"), *args]
    r = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**os.environ, "MONAILABEL_VENV": str(VENV), **(env or {})},
        timeout=900,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return json.loads(r.stdout[r.stdout.index("{") :])


def test_monailabel_server_infers_and_trains(tmp_path, hippo_dir):
    _require_environment()
    shipped = REPO_ROOT / "bundles" / HIPPO / "models" / "model.pt"
    before = hashlib.sha256(shipped.read_bytes()).hexdigest()
    work = tmp_path / "ml"
    summary = _check(["--bundle", HIPPO, "--keep", str(work)], {"SEG_DATA_DIR": str(hippo_dir.parent)})
    assert set(summary["models"]) == {HIPPO, "hippocampus_mri_unet_segmentation"}  # the bundle and its zoo export
    for name, res in summary["models"].items():
        assert res["labels"] == {"anterior": 1, "posterior": 2}, name
        assert res["infer"]["labels"] == [0, 1, 2] and res["infer"]["dice"] > 0.7, (name, res["infer"])
        assert res["train"]["tensors_loaded"] > 0, name  # new weights written by the 1-epoch training, and loadable
        assert res["infer_after_train"]["dice"] > 0.5, (name, res["infer_after_train"])
    # training wrote to the app's copy; the repository's shipped weights were never touched
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == before
    assert hashlib.sha256((work / "app" / "model" / HIPPO / "models" / "model.pt").read_bytes()).hexdigest() != before


def test_monailabel_server_detects_with_the_detector_export(tmp_path):
    """The tiny detector, trained one epoch on synthetic ADAM data with the stock CLI, exported and served: MONAI
    Label's detection path (``detector`` and ``detector_ops`` of the config) returns the boxes that the bundle's own
    inference writes for the same image."""
    _require_environment()
    src = write_adam(tmp_path / "ADAM", n=4, seed=0, shape=(64, 64, 48))
    datalist = convert_adam(src, src, folds=2, seed=0)
    small = {k: TINY_DETECTOR[k] for k in ("patch_size", "val_patch_size", "anchor_shapes", "backbone_depth")}
    bundle = bundle_with_values(DETECTOR, tmp_path / "bundle" / DETECTOR.name, {**small, "fpn_channels": 32})
    run = tmp_path / "run"
    run_bundle(bundle, TRAIN, {**one_epoch(src, datalist), **output_overrides(run)}, log_file=tmp_path / "cli.log")
    (bundle / "models").mkdir(exist_ok=True)
    shutil.copy(run / "models" / "model.pt", bundle / "models" / "model.pt")
    (case,) = sorted(p.parent.parent.name for p in src.glob("*/pre/TOF.nii.gz"))[:1]
    image = src / case / "pre" / "TOF.nii.gz"
    infer = {"dataset_dir": str(src), "input_data": str(image), "output_dir": str(tmp_path / "pred"), "num_workers": 0}
    run_bundle(bundle, INFER, infer, log_file=tmp_path / "cli.log")
    (written,) = (tmp_path / "pred").glob("*_detections.json")  # named for the image file
    stock = json.loads(written.read_text())["detections"]

    summary = _check(["--bundle", str(bundle), "--dataset", str(src), "--cases", "1", "--keep", str(tmp_path / "ml")])
    (name,) = summary["models"]  # the export only: the repository folder's name does not say "detection"
    assert name == "aneurysm_mra_retinanet_detection" and summary["models"][name]["image"] == case
    served = summary["models"][name]
    assert served["labels"] == {"aneurysm": 0} and served["infer"]["labels"] == [0] * len(stock)
    assert stock, "the one-epoch detector found nothing: the comparison would be empty"
    ours = sorted(d["box"] for d in stock)
    theirs = sorted(served["infer"]["boxes"])
    assert np.allclose(ours, theirs, atol=1e-3), (ours[:3], theirs[:3])
