"""Many workers, one real PostgreSQL server, no coordinator: two ``tune.py run`` workers share a study (every trial
runs once; one worker is killed with ``kill -9`` mid-trial, its trial is failed by the heartbeat, retried by the
other worker in the same run folder, and the study finishes), and two ``benchmark.py run`` workers share a grid
(each run taken once; both leaderboards hold every run).

The test starts its own cluster (``initdb``/``pg_ctl``, Debian's ``postgresql`` package: ``apt-get install -y
postgresql``) on 127.0.0.1 and a free port. PostgreSQL refuses to run as root: as root the server runs as the
``postgres`` user (``runuser -u postgres``) in a folder of /tmp it owns (pytest's tmp_path is private to root). The
trials use a test objective (:func:`sleepy_objective`, via ``--objective``) so the workers are seconds long; the
real bundle runs are tested on SQLite in ``test_experiments_tune.py``.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest

from shared_components.paths import REPO_ROOT
from tests.helpers import HIPPO

LOG_ENV = "TUNE_TEST_LOG"


def _pg_bin() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl`` (newest Debian cluster version, else ``PATH``)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name or 0))
    on_path = shutil.which("initdb")
    for d in [*reversed(found), *([str(Path(on_path).parent)] if on_path else [])]:
        if (Path(d) / "initdb").is_file() and (Path(d) / "pg_ctl").is_file():
            return Path(d)
    return None


PG_BIN = _pg_bin()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        PG_BIN is None,
        reason="PostgreSQL server binaries (initdb, pg_ctl) not found: `apt-get install -y postgresql` to run the "
        "multi-worker tests on a real server",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL cluster of this test module: its URL (superuser ``postgres``, trust auth on 127.0.0.1)."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip(
                "running as root and there is no 'postgres' user to run the server as (PostgreSQL refuses root)"
            )
        root = Path(tempfile.mkdtemp(prefix="seg-postgres-", dir="/tmp"))
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    else:
        root = tmp_path_factory.mktemp("postgres")
    os.chmod(root, 0o700)
    data, port = root / "data", _free_port()
    run = lambda *args: subprocess.run(prefix + list(args), check=True, capture_output=True, text=True)  # noqa: E731
    run(str(PG_BIN / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=100"
    run(
        str(PG_BIN / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(root / "server.log"),
        "-w",
        "-t",
        "60",
        "-o",
        options,
        "start",
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(prefix + [str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], check=False)
        shutil.rmtree(root, ignore_errors=True)


def _database(server: str, name: str) -> str:
    """A new, empty database on the server; its URL."""
    import sqlalchemy as sa

    from shared_components.experiments.tune import storage_url

    engine = sa.create_engine(storage_url(server), isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        c.execute(sa.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return server.rsplit("/", 1)[0] + f"/{name}"


def _events(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


def _event(kind: str, trial: Any, run_dir: Path, **extra: Any) -> None:
    with open(os.environ[LOG_ENV], "a") as f:
        f.write(
            json.dumps({"event": kind, "trial": trial.number, "pid": os.getpid(), "run_dir": str(run_dir), **extra})
        )
        f.write("\n")


def sleepy_objective(trial: Any, overrides: dict[str, Any], run_dir: Path) -> float:
    """Test-only objective (``--objective tests.test_experiments_tune_postgres:sleepy_objective``): logs its start
    and end to ``$TUNE_TEST_LOG`` and reports three steps 0.5 s apart; the value depends on the overrides."""
    import math

    _event("start", trial, run_dir, params=trial.params)
    score = 1.0 - abs(math.log10(overrides["learning_rate"]) + 2.5) / 3 + (overrides["loss_name"] == "dice_ce") * 0.1
    for step in (1, 2, 3):
        time.sleep(0.5)
        trial.report(score * step / 3, step)
    _event("end", trial, run_dir)
    return score


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_two_workers_one_study_and_a_killed_worker(postgres, tmp_path):
    url = _database(postgres, "tune_workers")
    space = tmp_path / "space.yaml"
    space.write_text("learning_rate: {low: 1.0e-4, high: 1.0e-1, log: true}\nloss_name: {choices: [dice_ce, dice]}\n")
    log = tmp_path / "events.jsonl"
    trials = 8
    cmd = [sys.executable, "scripts/tune.py", "run", HIPPO, "--space", str(space), "--trials", str(trials)]
    cmd += ["--study", "workers", "--storage", url, "--objective", f"{__name__}:sleepy_objective", "--heartbeat", "2"]
    cmd += ["--mlflow", "false", "--pruner", "none", "--out", str(tmp_path / "runs")]
    env = {**os.environ, LOG_ENV: str(log), "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    outs = [open(tmp_path / f"worker_{i}.log", "w") for i in range(2)]  # noqa: SIM115
    a = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=outs[0], stderr=subprocess.STDOUT)
    b = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=outs[1], stderr=subprocess.STDOUT)
    try:
        # kill -9 worker a in the middle of its second trial
        def a_in_second_trial() -> bool:
            mine = [e for e in _events(log) if e["pid"] == a.pid]
            return sum(e["event"] == "start" for e in mine) >= 2 and mine[-1]["event"] == "start"

        _wait(a_in_second_trial, 240, "worker a to start its second trial")
        os.kill(a.pid, signal.SIGKILL)
        a.wait(10)
        killed = [e for e in _events(log) if e["pid"] == a.pid][-1]
        assert killed["event"] == "start"
        assert b.wait(300) == 0, (tmp_path / "worker_1.log").read_text()[-3000:]
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
        for f in outs:
            f.close()
    from shared_components.experiments.tune import storage_url, trials_table

    study = optuna.load_study(study_name="workers", storage=storage_url(url))
    by_state: dict[str, list] = {}
    for t in study.trials:
        by_state.setdefault(t.state.name, []).append(t)
    complete, failed = by_state.get("COMPLETE", []), by_state.get("FAIL", [])
    assert len(complete) == trials, {k: len(v) for k, v in by_state.items()}
    assert not by_state.get("RUNNING") and not by_state.get("WAITING")
    stale = [t for t in failed if not t.user_attrs.get("surplus")]
    assert [t.number for t in stale] == [killed["trial"]]  # the killed worker's trial, failed by the heartbeat
    retry = [t for t in complete if t.system_attrs.get("failed_trial") == killed["trial"]]
    assert len(retry) == 1 and retry[0].params == stale[0].params and retry[0].user_attrs["retry_of"] == killed["trial"]
    assert retry[0].user_attrs["run_dir"] == killed["run_dir"]  # the same folder: a bundle run would resume there
    # every trial ran once: one start (and one end) per trial number, the killed one aside
    events = _events(log)
    starts = [e["trial"] for e in events if e["event"] == "start"]
    ends = [e["trial"] for e in events if e["event"] == "end"]
    assert sorted(starts) == sorted({*starts}) and sorted(ends) == sorted(t.number for t in complete)
    assert set(starts) - set(ends) == {killed["trial"]}
    assert {e["pid"] for e in events} == {a.pid, b.pid}
    assert "trial" in (tmp_path / "worker_1.log").read_text()
    # the table of the study says what happened to the killed trial
    table = trials_table(study, study.user_attrs["setup"]).set_index("number")
    assert "retried as trial" in table.loc[killed["trial"], "reason"]


def bench_worker(out: str, storage: str, datalist: str, dataset_dir: str, log: str) -> None:
    """One ``benchmark.py run --storage`` worker whose runs are faked (1 s, plausible evaluation files), so two of
    them share a grid in seconds."""
    from shared_components.evaluation.report import write_evaluation, write_json
    from shared_components.experiments import benchmark

    def fake_run(bundle_dir: Path, run_dir: Path, fold: int, *args: Any, **kwargs: Any) -> dict[str, Any]:
        with open(log, "a") as f:
            f.write(json.dumps({"bundle": bundle_dir.name, "fold": fold, "pid": os.getpid()}) + "\n")
        time.sleep(1.0)
        seed = (len(bundle_dir.name) + fold) % 7
        rows = [
            {"case": f"c{i}", "fold": str(fold), "centre": "", "class": cls, "metric": m, "value": v}
            for i in range(4)
            for cls in ("anterior", "posterior")
            for m, v in (("dice", 0.5 + 0.05 * ((i + seed) % 4)), ("hd95", 2.0 + i), ("msd", 0.5), ("nsd", 0.9))
        ]
        write_evaluation(run_dir / "eval", rows)
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        (run_dir / "logs" / "history.csv").write_text("epoch,loss,epoch_seconds,val_mean_dice\n1,1.0,1.0,0.5\n")
        rec = {"bundle": bundle_dir.name, "fold": fold, "status": "done", "train_seconds": 1.0, "eval_seconds": 0.1}
        rec |= {"epochs": 1, "seconds_per_epoch": 1.0, "inference_seconds_per_case": 0.1}
        write_json(run_dir / "run.json", rec)
        return rec

    benchmark.train_and_evaluate = fake_run
    benchmark.count_parameters = lambda d, overrides=None: 1000 + len(d.name)
    benchmark.run_benchmark(
        bundles=f"{HIPPO},hippocampus_mri_segresnet",
        folds="0,1",
        max_epochs=1,
        out=out,
        datalist=datalist,
        dataset_dir=dataset_dir,
        storage=storage,
        mlflow=False,
        save_predictions=False,
    )


def test_two_benchmark_workers_share_one_grid(postgres, tmp_path, tiny_hippo, hippo_dir):
    url = _database(postgres, "bench_workers")
    log = tmp_path / "runs.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    procs = []
    for i in range(2):
        args = [str(tmp_path / f"machine_{i}"), url, str(tiny_hippo), str(hippo_dir), str(log)]
        code = f"from {__name__} import bench_worker; bench_worker(*{args!r})"
        procs.append(subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, env=env))
    assert [p.wait(300) for p in procs] == [0, 0]
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted((r["bundle"], r["fold"]) for r in runs) == sorted(
        (b, f) for b in (HIPPO, "hippocampus_mri_segresnet") for f in (0, 1)
    )  # each run of the grid once
    for i in range(2):  # each machine's leaderboard has every run, its own and the other's
        table = pd.read_csv(tmp_path / f"machine_{i}" / "hippocampus_mri" / "leaderboard.csv").set_index("model")
        assert set(table.index) == {"unet", "segresnet"} and set(table["status"]) == {"done"}
        assert set(table["folds_done"]) == {2}
