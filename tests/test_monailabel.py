"""A real MONAI Label server (monaibundle app) serves, infers with and trains the hippocampus bundle and its export.

Needs the MONAI Label environment (.venv-monailabel): `bash scripts/monailabel_check.sh --setup_only` creates it
(CI does, before pytest). Without it the test is skipped locally and fails under CI.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from shared_components.paths import REPO_ROOT
from tests.helpers import HIPPO

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


def test_monailabel_server_infers_and_trains(tmp_path, hippo_dir):
    _wait_for_setup()
    if not (VENV / ".installed").is_file():
        log = VENV.with_name(VENV.name + ".setup.log")
        msg = f"no MONAI Label environment at {VENV}: run `bash scripts/monailabel_check.sh --setup_only`"
        if log.is_file():
            msg += f"\nsetup log {log}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    shipped = REPO_ROOT / "bundles" / HIPPO / "models" / "model.pt"
    before = hashlib.sha256(shipped.read_bytes()).hexdigest()
    work = tmp_path / "ml"
    cmd = ["bash", str(REPO_ROOT / "scripts" / "monailabel_check.sh"), "--bundle", HIPPO, "--keep", str(work)]
    env = {**os.environ, "MONAILABEL_VENV": str(VENV), "SEG_DATA_DIR": str(hippo_dir.parent)}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    summary = json.loads(r.stdout[r.stdout.index("{") :])
    assert set(summary["models"]) == {HIPPO, "hippocampus_mri_unet_segmentation"}  # the bundle and its zoo export
    for name, res in summary["models"].items():
        assert res["labels"] == {"anterior": 1, "posterior": 2}, name
        assert res["infer"]["labels"] == [0, 1, 2] and res["infer"]["dice"] > 0.7, (name, res["infer"])
        assert res["train"]["tensors_loaded"] > 0, name  # new weights written by the 1-epoch training, and loadable
        assert res["infer_after_train"]["dice"] > 0.5, (name, res["infer_after_train"])
    # training wrote to the app's copy; the repository's shipped weights were never touched
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == before
    assert hashlib.sha256((work / "app" / "model" / HIPPO / "models" / "model.pt").read_bytes()).hexdigest() != before
