"""Runs you can trust: each training run keeps its own folder, a killed or stopped run resumes to bitwise the same
weights as an uninterrupted one, the best weights never get worse, and shipped weights are never overwritten.

Every real run (``slow``) goes through the stock ``python -m monai.bundle run`` CLI in a subprocess, on 4 real
hippocampus cases (3 train, 1 validates) with a tiny UNet, one thread (bitwise comparisons) and its folders in
``tmp_path``. Kills at named points use the test hook of :mod:`shared_components.training.checkpoint`
(``SEG_TRAIN_HOOK``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from ignite.engine import Engine

from shared_components.bundle.runner import TRAIN, bundle_command, output_overrides
from shared_components.training.checkpoint import (
    BEST,
    BEST_JSON,
    HOOK_ENV,
    STATE,
    STATE_JSON,
    RunCheckpoint,
    RunRefused,
    load_state,
)
from tests.helpers import HIPPO, tiny_overrides

EPOCHS = 3  # 3 iterations each (3 training cases, batch 1), validated every epoch
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def _overrides(hippo_dir: Path, datalist: Path, run_dir: Path, **extra: Any) -> dict[str, Any]:
    ov = {"dataset_dir": str(hippo_dir), "datalist": str(datalist), "max_epochs": EPOCHS, "val_interval": 1}
    ov |= {"batch_size": 1, "num_workers": 0, "cache": "memory", "check_data": "quick", "tensorboard": False}
    return ov | output_overrides(run_dir) | tiny_overrides("unet") | extra


def _cmd(overrides: dict[str, Any]) -> list[str]:
    return bundle_command(TRAIN, overrides)


def _env(hook: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != HOOK_ENV} | ENV
    return env | {HOOK_ENV: hook} if hook else env


def _run(bundle: Path, overrides: dict[str, Any], hook: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(overrides), cwd=bundle, env=_env(hook), capture_output=True, text=True, timeout=600)


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


def _state(run_dir: Path) -> dict[str, Any]:
    return load_state(run_dir / STATE)


def _assert_same_training(a: Path, b: Path) -> None:
    """The final states of two run folders: bitwise equal weights and optimizer state, same schedule and metrics."""
    sa, sb = _state(a), _state(b)
    assert sa["status"] == sb["status"] == "finished"
    assert sa["epoch"] == sb["epoch"] == EPOCHS and sa["iteration"] == sb["iteration"]
    assert sa["network"].keys() == sb["network"].keys()
    for k in sa["network"]:
        assert torch.equal(sa["network"][k], sb["network"][k]), f"weights differ in {k}"
    for i, state in sa["optimizer"]["state"].items():
        for k, v in state.items():
            assert torch.equal(v, sb["optimizer"]["state"][i][k]), f"optimizer state {i}/{k} differs"
    assert sa["lr_scheduler"] == sb["lr_scheduler"]
    dice = [[r["val_mean_dice"] for r in s["history"]] for s in (sa, sb)]
    assert dice[0] == dice[1] and len(dice[0]) == EPOCHS, dice
    assert json.loads((a / BEST_JSON).read_text())["metric"] == json.loads((b / BEST_JSON).read_text())["metric"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def bundle(bundles_dir: Path) -> Path:
    return bundles_dir / HIPPO


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory, bundle: Path, hippo_dir: Path, tiny_hippo: Path) -> Path:
    """An uninterrupted run of EPOCHS epochs."""
    run_dir = tmp_path_factory.mktemp("baseline")
    t0 = time.perf_counter()
    proc = _ok(_run(bundle, _overrides(hippo_dir, tiny_hippo, run_dir)))
    print(f"baseline run: {time.perf_counter() - t0:.1f}s")
    assert "run folder" in proc.stdout and (run_dir / BEST).is_file() and (run_dir / "config.json").is_file()
    assert _sha(run_dir / "models" / "model.pt") == _sha(run_dir / BEST)  # models/ inside the run folder: promoted
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize("point", ["iteration", "validation", "checkpoint"])
def test_kill_9_then_resume_gives_bitwise_the_same_weights(point, baseline, bundle, hippo_dir, tiny_hippo, tmp_path):
    ov = _overrides(hippo_dir, tiny_hippo, tmp_path)
    killed = _run(bundle, ov, hook=f"kill@{point}:2")
    assert killed.returncode == -signal.SIGKILL, (killed.stdout + killed.stderr)[-3000:]
    saved = json.loads((tmp_path / STATE_JSON).read_text())
    assert saved["status"] == "running" and saved["epoch"] == 1  # the last completed epoch, intact
    leftovers = list(tmp_path.glob(f".{STATE}.*.tmp"))
    assert bool(leftovers) == (point == "checkpoint")  # the write was cut short before its rename
    if point == "iteration":  # a new run must not clobber the unfinished one
        refused = _run(bundle, ov)
        assert refused.returncode == 1 and "--resume true" in refused.stderr, refused.stderr[-2000:]
    resumed = _ok(_run(bundle, ov | {"resume": True}))
    assert "resuming" in resumed.stdout and "after epoch 1/3" in resumed.stdout
    assert not list(tmp_path.glob(".*.tmp"))
    _assert_same_training(baseline, tmp_path)


@pytest.mark.slow
def test_num_workers_do_not_change_the_weights(baseline, bundle, hippo_dir, tiny_hippo, tmp_path):
    _ok(_run(bundle, _overrides(hippo_dir, tiny_hippo, tmp_path, num_workers=2)))
    _assert_same_training(baseline, tmp_path)


@pytest.mark.slow
def test_sigterm_saves_exits_143_and_resumes(baseline, bundle, hippo_dir, tiny_hippo, tmp_path):
    ov = _overrides(hippo_dir, tiny_hippo, tmp_path)
    log = tmp_path / "train.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(_cmd(ov), cwd=bundle, env=_env(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not (tmp_path / STATE_JSON).is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # until epoch 1 is saved: the run is then in epoch 2
        assert proc.poll() is None, log.read_text()[-3000:]
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)
        seconds = time.monotonic() - t0
    text = log.read_text()
    assert rc == 143, text[-3000:]
    assert seconds < 20, f"took {seconds:.1f}s to stop"
    stops = [line for line in text.splitlines() if "stopped by SIGTERM at epoch" in line]
    assert len(stops) == 1 and "resume with --resume true" in stops[0], text[-3000:]
    assert "Traceback" not in text and "terminating due to exception" not in text, text[-3000:]
    saved = json.loads((tmp_path / STATE_JSON).read_text())
    assert saved["status"] == "stopped" and 1 <= saved["epoch"] < EPOCHS
    # resuming with a different patch size is refused, naming it
    refused = _run(bundle, ov | {"resume": True, "patch_size": [48, 48, 48]})
    assert refused.returncode == 1 and "patch_size ([32, 32, 32] -> [48, 48, 48])" in refused.stderr, refused.stderr
    _ok(_run(bundle, ov | {"resume": True}))
    _assert_same_training(baseline, tmp_path)


@pytest.mark.slow
def test_a_worse_rerun_keeps_the_better_weights(baseline, bundle, hippo_dir, tiny_hippo, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(baseline, run_dir)
    best = json.loads((run_dir / BEST_JSON).read_text())
    before = {p: _sha(run_dir / p) for p in (BEST, "models/model.pt")}
    # a finished folder takes a new run with other hyperparameters; this one cannot learn, so it is worse
    _ok(_run(bundle, _overrides(hippo_dir, tiny_hippo, run_dir, learning_rate=0.0, max_epochs=1)))
    rerun = _state(run_dir)
    assert rerun["status"] == "finished" and rerun["epoch"] == 1
    assert rerun["history"][0]["val_mean_dice"] < best["metric"], "the rerun was meant to be worse"
    assert json.loads((run_dir / BEST_JSON).read_text()) == best
    assert {p: _sha(run_dir / p) for p in before} == before


@pytest.mark.slow
def test_checkpoint_final_keeps_the_last_epochs_weights(bundle, hippo_dir, tiny_hippo, tmp_path):
    """checkpoint final: nothing is chosen by validation; the last epoch's weights are the run's, promoted, and
    described as such; a best-weights rerun of that folder is refused (its metrics are not comparable)."""
    ov = _overrides(hippo_dir, tiny_hippo, tmp_path, checkpoint="final", val_interval=2)
    proc = _ok(_run(bundle, ov))
    state, kept = _state(tmp_path), json.loads((tmp_path / BEST_JSON).read_text())
    assert state["epoch"] == EPOCHS and kept["choice"] == "final" and kept["epoch"] == EPOCHS
    assert kept["metric"] == state["history"][-1]["val_mean_dice"]  # the last epoch is validated, for the record
    weights = torch.load(tmp_path / BEST, map_location="cpu", weights_only=True)
    assert all(torch.equal(weights[k], v) for k, v in state["network"].items())
    assert _sha(tmp_path / "models" / "model.pt") == _sha(tmp_path / BEST)
    assert f"final weights of epoch {EPOCHS}" in proc.stdout
    refused = _run(bundle, _overrides(hippo_dir, tiny_hippo, tmp_path))
    assert refused.returncode == 1 and "checkpoint (final -> <absent>)" in refused.stderr, refused.stderr[-2000:]


def test_checkpoint_choice_is_checked_and_names_the_run():
    from monai.bundle import ConfigParser

    with pytest.raises(ValueError, match="must be one of best, final"):
        RunCheckpoint("r", "m", torch.nn.Linear(1, 1), None, checkpoint="last")  # type: ignore[arg-type]
    parser = ConfigParser()
    parser.read_config(str(Path(__file__).resolve().parents[1] / "bundles" / HIPPO / "configs" / "train.yaml"))
    parser["checkpoint"] = "final"
    assert parser.get_parsed_content("run_name") == "fold0_seed0_final"


def _bundle_copy(bundle: Path, dest: Path) -> Path:
    shutil.copytree(bundle, dest, ignore=shutil.ignore_patterns("runs", "logs", "eval", "cache", "__pycache__"))
    return dest


@pytest.mark.slow
def test_readme_train_command_keeps_the_shipped_weights(bundle, hippo_dir, tiny_hippo, tmp_path):
    """``python -m monai.bundle run --config_file configs/train.yaml`` in the hippocampus bundle (a copy of it: the
    repository is never written), shortened to one epoch on the tiny datalist."""
    work = _bundle_copy(bundle, tmp_path / HIPPO)
    shipped = work / "models" / "model.pt"
    before = _sha(shipped)
    assert before == _sha(bundle / "models" / "model.pt")
    ov = {"dataset_dir": str(hippo_dir), "datalist": str(tiny_hippo), "max_epochs": 1, "num_workers": 0}
    proc = _ok(_run(work, ov))
    run_dir = work / "runs" / "fold0_seed0"
    assert _sha(shipped) == before, "the README's train command replaced the shipped weights"
    assert (run_dir / BEST).is_file() and (run_dir / STATE).is_file() and (run_dir / "logs" / "history.csv").is_file()
    assert not (work / "logs").exists(), "logs belong to the run folder"
    assert "run folder runs/fold0_seed0" in proc.stdout, proc.stdout[-3000:]
    assert "kept" in proc.stdout and "--resume true --promote true" in proc.stdout, proc.stdout[-3000:]
    # promoting afterwards: the same command with --resume true --promote true (no more training)
    promoted = _ok(_run(work, ov | {"resume": True, "promote": True}))
    assert _sha(shipped) == _sha(run_dir / BEST) != before
    assert "promoted to" in promoted.stdout


MONAILABEL_TRAIN = """
import sys, types
sys.modules.setdefault("monailabel", types.ModuleType("monailabel"))  # what `'monailabel' in sys.modules` sees
import monai.bundle
import torch
from monai.bundle import ConfigParser

# as monailabel.tasks.train.bundle.BundleTrainTask: CheckpointLoader(models/model.pt) first, run in this process
bundle, overrides = sys.argv[1], eval(sys.argv[2])
config = ConfigParser()
config.read_config(bundle + "/configs/train.yaml")
handlers = config.get("train#handlers", [])
handlers.insert(0, {"_target_": "CheckpointLoader", "load_path": bundle + "/models/model.pt",
                    "load_dict": {"model": "$@network"}, "strict": False})
monai.bundle.run(run_id="run", init_id=None, final_id=None, meta_file=bundle + "/configs/metadata.json",
                 config_file=bundle + "/configs/train.yaml", bundle_root=bundle, device=torch.device("cpu"),
                 **{"train#trainer#max_epochs": 1, "train#handlers": handlers, **overrides})
"""


@pytest.mark.slow
def test_monailabel_training_updates_models_model_pt(bundle, hippo_dir, tiny_hippo, tmp_path):
    """MONAI Label's in-process /train (imitated): it serves models/model.pt, so every training promotes its best
    weights there, and a /train after an interrupted one (same run folder) is not refused."""
    work = _bundle_copy(bundle, tmp_path / HIPPO)
    shipped = work / "models" / "model.pt"
    before = _sha(shipped)
    ov = {"dataset_dir": str(hippo_dir), "datalist": str(tiny_hippo), "num_workers": 0}

    def train(hook: str | None = None, **extra: Any) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-c", MONAILABEL_TRAIN, str(work), repr(ov | extra)]
        return subprocess.run(cmd, cwd=work, env=_env(hook), capture_output=True, text=True, timeout=600)

    killed = train("kill@iteration:2", val_interval=1, **{"train#trainer#max_epochs": 2})  # server down in epoch 2
    assert killed.returncode == -signal.SIGKILL, (killed.stdout + killed.stderr)[-3000:]
    first = _sha(shipped)
    assert first != before  # epoch 1's best weights, already served
    _ok(train())
    assert _sha(shipped) not in (before, first) and _sha(shipped) == _sha(work / "runs" / "fold0_seed0" / BEST)


def test_an_exception_keeps_the_last_epoch_and_later_runs_are_checked(tmp_path, caplog):
    """Without a bundle: a failure in epoch 2 leaves epoch 1's state, marked failed; a new run into the folder is
    refused, and so is a resume with another seed (named with both values)."""
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)

    def step(engine: Engine, batch: Any) -> dict:
        if engine.state.epoch == 2:
            raise RuntimeError("disk full")
        opt.zero_grad()
        loss = net(torch.ones(1, 2)).sum()
        loss.backward()
        opt.step()
        return {"loss": float(loss.detach())}

    def checkpoint(**kw: Any) -> RunCheckpoint:
        return RunCheckpoint(
            str(tmp_path / "run"), str(tmp_path / "models"), net, opt, **{"signature": {"seed": 0}, **kw}
        )

    engine = Engine(step)
    checkpoint().attach(engine)
    with caplog.at_level("INFO"), pytest.raises(RuntimeError, match="disk full"):
        engine.run([0, 1], max_epochs=3)
    saved = json.loads((tmp_path / "run" / STATE_JSON).read_text())
    assert saved["status"] == "failed" and saved["epoch"] == 1 and "disk full" in saved["reason"]
    assert "resume with --resume true" in caplog.text
    assert _state(tmp_path / "run")["iteration"] == 2
    with pytest.raises(RunRefused, match="unfinished run .* --resume true"):
        checkpoint()
    with pytest.raises(RunRefused, match=r"seed \(0 -> 1\)"):
        checkpoint(signature={"seed": 1}, resume=True)
    resumed = Engine(lambda e, b: None)
    checkpoint(resume=True).attach(resumed)
    resumed.run([0, 1], max_epochs=3)
    assert resumed.state.epoch == 3 and _state(tmp_path / "run")["status"] == "finished"
