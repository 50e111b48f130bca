"""multi_gpu_train.yaml / multi_gpu_evaluate.yaml under torchrun: 2 processes with the gloo backend on CPU, real data."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared_components.bundle.runner import output_overrides
from tests.helpers import HIPPO

pytestmark = pytest.mark.slow


def _torchrun(bundle: Path, configs: list[str], overrides: dict, log: Path) -> None:
    files = "[" + ",".join(f"'{c}'" for c in configs) + "]"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "monai.bundle", "run", "--config_file", files]
    for k, v in overrides.items():
        cmd += [f"--{k}", str(v)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    with open(log, "a") as f:
        r = subprocess.run(cmd, cwd=bundle, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=600)
    assert r.returncode == 0, log.read_text()[-4000:]


@pytest.fixture(scope="module")
def ddp_datalist(tmp_path_factory, hippo_dir) -> Path:
    """4 real cases to train on, 2 to validate on (one per rank)."""
    from shared_components.data.converters.msd import msd_datalist

    cases = msd_datalist(hippo_dir, folds=5, seed=0)["training"][:6]
    for i, e in enumerate(cases):
        e["fold"] = 0 if i < 2 else 1
    path = tmp_path_factory.mktemp("ddp") / "datalist.json"
    path.write_text(json.dumps({"training": cases}, indent=4))
    return path


def test_two_process_gloo_train_and_evaluate(bundles_dir, hippo_dir, ddp_datalist, tmp_path):
    bundle = bundles_dir / HIPPO
    common = {"dataset_dir": hippo_dir, "datalist": ddp_datalist, **output_overrides(tmp_path)}
    log = tmp_path / "ddp.log"
    train = {**common, "max_epochs": 2, "val_interval": 1, "batch_size": 2}
    _torchrun(bundle, ["configs/train.yaml", "configs/multi_gpu_train.yaml"], train, log)
    text = log.read_text()
    # one checkpoint, one history (rank 0 alone writes), one log line per epoch
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["model.pt"]
    with open(tmp_path / "logs" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(0.0 <= float(r["val_mean_dice"]) <= 1.0 for r in rows)
    assert text.count("epoch 2/2 loss") == 1, "EpochHistory must log on rank 0 only"
    events = sorted(p.name for p in (tmp_path / "logs").glob("events.out.tfevents.*"))
    assert len(events) == 2, f"rank 0's train and validation writers only, got {events}"
    assert text.count("SupervisedTrainer - INFO - Epoch[2] Complete") == 1, "rank 1 must log warnings only"

    evaluate = ["configs/train.yaml", "configs/evaluate.yaml", "configs/multi_gpu_evaluate.yaml"]
    _torchrun(bundle, evaluate, common, log)
    tables = list((tmp_path / "eval").glob("*.csv"))
    assert tables, f"no metrics written to {tmp_path / 'eval'}"
    written = "\n".join(t.read_text() for t in tables)
    val = json.loads(ddp_datalist.read_text())["training"][:2]
    val_cases = [Path(e["image"]).name.replace(".nii.gz", "") for e in val]
    for case in val_cases:  # each rank evaluated one case; the results were gathered and written once
        assert case in written, f"{case} missing from the metrics of the 2-process evaluation"
