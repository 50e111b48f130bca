"""MLflow tracking: workers of one study that open a new SQLite store at the same moment all track their runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from shared_components.paths import REPO_ROOT

WORKER = textwrap.dedent(
    """
    import sys, time
    from shared_components.experiments.tracking import LiveRun
    store, name, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
    time.sleep(max(0.0, start - time.time()))  # every worker opens the new store at the same moment
    run = LiveRun(store, "race", name, {"worker": name}, {"study": "race"})
    assert run.client is not None, "tracking off"
    run.log_epochs([{"epoch": 1, "val_mean_dice": 0.5}])
    run.finish("FINISHED")
    """
)


def test_workers_opening_a_new_store_together_all_track(tmp_path: Path):
    from mlflow.tracking import MlflowClient

    from shared_components.experiments.tracking import tracking_uri

    store, start = tmp_path / "runs", time.time() + 8.0  # after the workers' imports
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(store), f"w{i}", str(start)],
            cwd=REPO_ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    errors = [w.communicate(timeout=300)[1] for w in workers]
    for w, err in zip(workers, errors, strict=True):
        assert w.returncode == 0 and "tracking off" not in err, err[-2000:]
    client = MlflowClient(tracking_uri(store))
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["w0", "w1", "w2"]
    assert all(r.info.status == "FINISHED" and r.data.metrics["epoch_val_mean_dice"] == 0.5 for r in runs)
