"""Optuna search over bundle overrides: search-space parsing and checks, samplers, the worker loop with a test
objective, ``best`` as a bundle config MONAI merges like the trial's overrides, the benchmark's work queue, the
processes of a run, and (slow) a real 3-trial study on SQLite with pruning, MLflow, report and a held-out fold."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
import yaml

from shared_components.bundle.runner import OUTPUT_KEYS, TRAIN, bundle_command
from shared_components.data.converters.msd import msd_datalist
from shared_components.experiments import tune
from shared_components.experiments.runs import resolve_bundle
from shared_components.experiments.search_space import SearchSpace, load_space
from shared_components.experiments.workqueue import WorkQueue
from shared_components.workflow.invocation import parse_run_args
from tests.helpers import HIPPO, tiny_overrides

SPACE = {
    "loss_name": {"choices": ["dice_ce", "focal", "tversky"]},
    "learning_rate": {"low": "1e-4", "high": 1.0e-2, "log": True},  # YAML 1.1 reads 1e-4 as a string
    "batch_size": {"low": 2, "high": 8, "step": 2},
    "network_def#channels": {"choices": [[16, 32, 64, 128], [32, 64, 128, 256]]},
    "optimizer_name": "default",
    "loss_args#gamma": {},
}


@pytest.fixture(scope="module")
def hippo() -> Path:
    return resolve_bundle(HIPPO)


# ---- the search space -------------------------------------------------------------------------------------------


def test_space_forms_defaults_and_conditions(hippo):
    space = load_space(SPACE, hippo)
    p = space.params
    assert list(p)[:2] == ["loss_name", "optimizer_name"]  # preset keys first: the others depend on them
    assert p["learning_rate"].low == 1e-4 and p["learning_rate"].log and not p["learning_rate"].integer
    assert p["batch_size"].integer and p["batch_size"].grid() == [2, 4, 6, 8]
    assert p["network_def#channels"].encoded and p["network_def#channels"].grid() == [
        "[16, 32, 64, 128]",
        "[32, 64, 128, 256]",
    ]
    assert (
        p["optimizer_name"].choices == ("adam", "adamw", "sgd", "rmsprop") and p["optimizer_name"].source == "registry"
    )
    # focal declares gamma (0.5-4) in the registry; only focal of the searched losses takes it
    assert (p["loss_args#gamma"].low, p["loss_args#gamma"].high) == (0.5, 4.0)
    assert p["loss_args#gamma"].when == ("loss_name", ("focal",))
    assert space.defaults["loss_name"] == "dice_ce" and space.defaults["network_def#channels"] == [16, 32, 64, 128]
    assert space.default_params() == {
        "loss_name": "dice_ce",
        "optimizer_name": "adamw",
        "learning_rate": 0.004,  # the tuned default (bundles.unet of the hippocampus dataset spec)
        "batch_size": 2,
        "network_def#channels": "[16, 32, 64, 128]",
    }
    # the registry's range of a key every optimizer declares: that of the bundle's optimizer, or the union
    assert load_space({"learning_rate": "default"}, hippo).params["learning_rate"].high == 1e-2  # adamw
    wide = load_space({"optimizer_name": {}, "learning_rate": {}, "weight_decay": None}, hippo).params
    assert (wide["learning_rate"].low, wide["learning_rate"].high) == (1e-5, 1e-1)  # adam ... sgd
    assert wide["learning_rate"].when is None and wide["weight_decay"].high == 1e-1
    assert load_space({"loss_name": ["dice_ce", "focal"]}, hippo).params["loss_name"].choices == ("dice_ce", "focal")
    # round trip through the study's stored settings
    again = SearchSpace.from_dict(json.loads(json.dumps(space.to_dict())))
    assert again.params == space.params and again.defaults == space.defaults


def test_space_sampling_decodes_lists_and_resets_loss_arguments(hippo):
    space = load_space(SPACE, hippo)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=3))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        values = space.sample(trial)
        assert values["network_def#channels"] in ([16, 32, 64, 128], [32, 64, 128, 256])
        assert ("loss_args#gamma" in values) == (values["loss_name"] == "focal")
        ov = space.overrides(values)
        if values["loss_name"] != "dice_ce":  # another loss: the old loss's arguments go, its own come
            assert "loss_args#gamma" not in ov and ov["loss_args"] == (
                {"gamma": values["loss_args#gamma"]} if values["loss_name"] == "focal" else {}
            )
        seen.add(values["loss_name"])
        study.tell(trial, 0.5)
    assert seen == {"dice_ce", "focal", "tversky"}
    assert space.decode({"network_def#channels": "[32, 64, 128, 256]"}) == {"network_def#channels": [32, 64, 128, 256]}


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"learnin_rate": {"low": 0.1, "high": 1}}, "did you mean --learning_rate"),
        ({"network_def#chanels": {"choices": [1, 2]}}, "did you mean --network_def#channels"),
        ({"loss_name": ["dice_ce", "nope"]}, "Unknown loss 'nope'"),
        ({"loss_args#gamma": {}}, "applies to loss_name in {dice_focal, focal} only"),
        ({"loss_name": ["dice_ce", "tversky"], "loss_args#gamma": {}}, "none of which the space searches"),
        ({"batch_size": {}}, "no preset declares a default range"),
        ({"learning_rate": {"low": 0.1, "high": 0.01}}, "need low < high"),
        ({"learning_rate": {"low": 0, "high": 0.1, "log": True}}, "low > 0 with log"),
        ({"learning_rate": {"low": 0.1, "hi": 1}}, "unknown field"),
        ({"learning_rate": {"choices": []}}, "non-empty list"),
        ({"loss_name": {"choices": ["dice", "dice"]}}, "duplicate choices"),
        ({"batch_size": "wide"}, "expected {low, high}"),
    ],
)
def test_space_errors(hippo, space, message):
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}").replace("(", r"\(")):
        load_space(space, hippo)


def test_space_file_and_grid(hippo, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("loss_name: {choices: [dice_ce, dice]}\nbatch_size: {low: 2, high: 4, step: 2}\n")
    space = load_space(path, hippo)
    assert space.grid_space() == {"loss_name": ["dice_ce", "dice"], "batch_size": [2, 4]}
    with pytest.raises(ValueError, match="discrete values"):
        load_space({"learning_rate": {"low": 1e-4, "high": 1e-2}}, hippo).grid_space()
    with pytest.raises(FileNotFoundError, match="No search space file"):
        load_space(tmp_path / "missing.yaml", hippo)


def test_trial_seeded_samplers_reproduce_and_differ_between_workers(tmp_path):
    def draws(storage: str, n: int) -> list[float]:
        study = optuna.create_study(study_name="s", storage=storage, sampler=tune.make_sampler("random", 7))
        out = []
        for _ in range(n):
            t = study.ask()
            out.append(t.suggest_float("x", 0, 1))
            study.tell(t, 0.0)
        return out

    assert draws(f"sqlite:///{tmp_path / 'a.db'}", 3) == draws(f"sqlite:///{tmp_path / 'b.db'}", 3)
    # two workers, same seed, one study: trials 0 and 1 draw different values
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    a = optuna.create_study(study_name="s", storage=url, sampler=tune.make_sampler("tpe", 0, trials=20))
    b = optuna.load_study(study_name="s", storage=url, sampler=tune.make_sampler("tpe", 0, trials=20))
    ta, tb = a.ask(), b.ask()
    assert ta.suggest_float("x", 0, 1) != tb.suggest_float("x", 0, 1)
    with pytest.raises(ValueError, match="Unknown sampler"):
        tune.make_sampler("annealing", 0)
    with pytest.raises(ValueError, match="Unknown pruner"):
        tune.make_pruner("percentile")
    assert tune.storage_url("postgresql://u@h/db").startswith("postgresql+psycopg2://u@h/db")
    assert tune.storage_url(tmp_path / "x.db") == f"sqlite:///{tmp_path / 'x.db'}"


# ---- the worker loop with a test objective, and `best` ----------------------------------------------------------


def quick_objective(trial: Any, overrides: dict[str, Any], run_dir: Path) -> float:
    """Test objective: a smooth function of the overrides, reported over three steps."""
    score = 1.0 - abs(__import__("math").log10(overrides["learning_rate"]) + 2.5) / 3
    for step in (1, 2, 3):
        trial.report(score * step / 3, step)
    return score


def test_study_continues_and_best_is_a_config_monai_merges_like_the_trial(hippo, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    fixed = {"batch_size": 2, "augmentation_args#num_samples": 2, "loss_args#lambda_ce": 0.5}
    kwargs = {
        "bundle": HIPPO,
        "space": {
            "learning_rate": {"low": 1e-4, "high": 1e-1, "log": True},
            "network_def#channels": SPACE["network_def#channels"],
        },
        "study": "quick",
        "storage": storage,
        "out": str(tmp_path / "runs"),
        "mlflow": False,
        "max_epochs": 7,
        "overrides": fixed,
        "objective": quick_objective,
        "heartbeat": 2,
    }
    first = tune.run_study(trials=3, **kwargs)
    assert first["trials"] == 3 and first["states"] == {"COMPLETE": 3}
    st = optuna.load_study(study_name="quick", storage=storage)
    assert st.trials[0].params == {"learning_rate": 0.004, "network_def#channels": "[16, 32, 64, 128]"}  # defaults
    assert tune.run_study(trials=3, **kwargs)["trials"] == 3  # rerun: the study is complete, nothing runs
    assert tune.run_study(trials=5, **kwargs)["trials"] == 5  # more trials: it goes on
    st = optuna.load_study(study_name="quick", storage=storage)
    assert [t.user_attrs["run_dir"] for t in st.trials] == [str(tmp_path / "runs" / f"trial_{i:04d}") for i in range(5)]
    with pytest.raises(ValueError, match="other settings"):
        tune.run_study(trials=5, **{**kwargs, "max_epochs": 8})
    with pytest.raises(ValueError, match="both searched and fixed"):
        tune.run_study(trials=5, **{**kwargs, "overrides": {"learning_rate": 0.1}})

    out = tune.write_best("quick", storage, str(tmp_path / "tuned.yaml"))
    best = st.best_trial
    tuned = yaml.safe_load(out.read_text())
    assert tuned["learning_rate"] == pytest.approx(best.params["learning_rate"])
    assert tuned["network_def#channels"] == json.loads(best.params["network_def#channels"])
    assert tuned["max_epochs"] == 7 and tuned["fold"] == 0 and tuned["loss_args#lambda_ce"] == 0.5
    # train.yaml + tuned.yaml == train.yaml + the trial's command line (parsed the way fire does)
    from monai.bundle import ConfigParser

    train = str(hippo / "configs" / "train.yaml")
    merged = ConfigParser(ConfigParser.load_config_files([train, str(out)]))
    run_dir = tmp_path / "runs" / "trial_x"
    cmd = bundle_command(TRAIN, {**tune.trial_overrides(st.user_attrs["setup"], best), **tune_outputs(run_dir)})
    cli = parse_run_args(cmd[cmd.index("run") + 1 :])
    by_cli = ConfigParser(ConfigParser.load_config_files(train))
    by_cli.update({k: v for k, v in cli.items() if k not in ("config_file", *OUTPUT_KEYS)})
    assert merged.get() == by_cli.get()
    assert merged["network_def"]["channels"] == tuned["network_def#channels"]
    assert merged["loss_args"] == {"lambda_ce": 0.5}


def tune_outputs(run_dir: Path) -> dict[str, str]:
    from shared_components.bundle.runner import output_overrides

    return output_overrides(run_dir)


def test_grid_visits_each_point_once_and_hyperband_prunes(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    common = {"bundle": HIPPO, "storage": storage, "out": str(tmp_path / "runs"), "mlflow": False}
    space = {"loss_name": ["dice", "dice_ce"], "batch_size": {"low": 2, "high": 4, "step": 2}}
    result = tune.run_study(
        space=space, trials=10, study="grid", sampler="grid", objective=lambda t, o, r: 1.0, **common
    )
    assert result["trials"] == 4  # the grid's size
    st = optuna.load_study(study_name="grid", storage=storage)
    assert sorted((t.params["loss_name"], t.params["batch_size"]) for t in st.trials) == [
        ("dice", 2),
        ("dice", 4),
        ("dice_ce", 2),
        ("dice_ce", 4),
    ]

    def climbing(trial: Any, overrides: dict[str, Any], run_dir: Path) -> float:
        for epoch in range(1, 10):
            trial.report(overrides["learning_rate"] * epoch, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return overrides["learning_rate"]

    lr = {"learning_rate": {"low": 1e-4, "high": 1e-1, "log": True}}
    result = tune.run_study(
        space=lr, trials=8, study="hb", pruner="hyperband", max_epochs=9, objective=climbing, **common
    )
    assert result["trials"] == 8 and result["states"].get("PRUNED", 0) >= 1


def test_surplus_trials_run_nothing_and_do_not_count(hippo, tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    kwargs = {"bundle": HIPPO, "space": {"learning_rate": {"low": 1e-4, "high": 1e-1, "log": True}}, "study": "s"}
    kwargs |= {"storage": storage, "out": str(tmp_path / "runs"), "mlflow": False, "objective": quick_objective}
    tune.run_study(trials=2, defaults_first=False, **kwargs)
    st = optuna.load_study(study_name="s", storage=storage)
    setup = st.user_attrs["setup"]
    # a third trial started by a worker that saw one trial missing, after another worker had started it
    objective = tune.make_objective(setup, lambda t: {"learning_rate": 0.01}, quick_objective)
    st.optimize(objective, n_trials=1, catch=(tune.Surplus,))
    extra = st.trials[-1]
    assert extra.state == optuna.trial.TrialState.FAIL and extra.user_attrs["surplus"]
    assert "overrides" not in extra.user_attrs and len(tune._counted(st.trials)) == 2


def test_run_trial_reports_prunes_and_retries_an_interrupted_trial(tmp_path, monkeypatch):
    """The trial loop around a bundle run, with the run faked: a history that grows, then an evaluation."""
    import _thread
    import threading

    from shared_components.evaluation.report import write_evaluation
    from shared_components.experiments import runs

    monkeypatch.setattr(tune, "POLL_SECONDS", 0.1)
    calls = []

    def fake_run(bundle_dir, run_dir, fold, overrides=None, train_overrides=None, *args, **kwargs):
        lr = overrides["learning_rate"]
        calls.append((run_dir.name, lr))
        if run_dir.name == "trial_0002" and len(calls) == 3:
            threading.Timer(0.5, _thread.interrupt_main).start()  # Ctrl-C while this trial trains
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        rows = ["epoch,loss,val_mean_dice"]
        for epoch in range(1, 5):
            rows.append(f"{epoch},1.0,{(0.2 if lr > 1e-5 else 0.05) * epoch}")
            (run_dir / "logs" / "history.csv").write_text("\n".join(rows) + "\n")
            time.sleep(0.3)
        cases = [{"case": "c1", "fold": "0", "centre": "", "class": "a", "metric": "dice", "value": 0.8}]
        write_evaluation(run_dir / "eval", cases)
        return {"status": "done", "train_seconds": 1.2, "epochs": 4}

    monkeypatch.setattr(runs, "train_and_evaluate", fake_run)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    kwargs = {"bundle": HIPPO, "space": {"learning_rate": {"low": 1e-8, "high": 1e-1, "log": True}}, "study": "loop"}
    kwargs |= {"storage": storage, "out": str(tmp_path / "runs"), "mlflow": str(tmp_path / "mlruns"), "trials": 3}
    kwargs |= {"pruner": "median", "startup_trials": 1, "warmup_epochs": 0, "defaults_first": False}
    kwargs |= {"enqueue": [{"learning_rate": 1e-3}, {"learning_rate": 1e-7}, {"learning_rate": 1e-2}]}
    with pytest.raises(KeyboardInterrupt):
        tune.run_study(**kwargs)
    st = optuna.load_study(study_name="loop", storage=storage)
    good, bad, stopped = st.trials
    assert good.state.name == "COMPLETE" and good.value == pytest.approx(0.8)
    assert good.intermediate_values == pytest.approx({1: 0.2, 2: 0.4, 3: 0.6, 4: 0.8})
    assert good.user_attrs["case_dice"] == {"c1": {"a": 0.8}} and good.user_attrs["epochs"] == 4
    assert (
        bad.state.name == "PRUNED" and bad.user_attrs["pruned_at_epoch"] == 1 and bad.intermediate_values == {1: 0.05}
    )
    assert stopped.state.name == "FAIL" and stopped.user_attrs["interrupted"]
    # the next run queues the interrupted trial again, in its folder (a bundle run would resume there)
    assert tune.run_study(**kwargs)["states"] == {"COMPLETE": 2, "PRUNED": 1, "FAIL": 1}
    st = optuna.load_study(study_name="loop", storage=storage)
    retry = st.trials[3]
    assert retry.params == stopped.params and retry.user_attrs["retry_of"] == 2
    assert retry.user_attrs["run_dir"] == str(tmp_path / "runs" / "trial_0002") and calls[-1] == ("trial_0002", 1e-2)
    table = tune.trials_table(st, st.user_attrs["setup"])
    assert "retried as trial 3" in table.loc[2, "reason"]


# ---- the processes of a run, the history, the work queue --------------------------------------------------------


def test_run_processes_are_found_and_stopped(tmp_path):
    run_dir = tmp_path / "trial_0003"
    code = "import signal, sys, time; time.sleep(120)"
    proc = subprocess.Popen([sys.executable, "-c", code, "--run_dir", str(run_dir), "--fold", "0"])
    other = subprocess.Popen([sys.executable, "-c", code, "--run_dir", str(run_dir) + "0"])
    try:
        deadline = time.time() + 20
        while not tune.run_processes(run_dir) and time.time() < deadline:
            time.sleep(0.1)
        assert tune.run_processes(run_dir) == [proc.pid]
        assert tune.run_processes(run_dir, parent=1) == []  # not an orphan
        tune.stop_processes([proc.pid], timeout=10)
        assert proc.wait(timeout=10) == -15  # SIGTERM
        assert tune.run_processes(run_dir) == [] and other.poll() is None
    finally:
        proc.kill()
        other.kill()


def test_history_rows_are_read_once(tmp_path):
    path = tmp_path / "history.csv"
    h = tune.History(path)
    assert h.new_rows() == []
    path.write_text("epoch,loss,val_mean_dice\n1,0.9,\n2,0.8,0.5\n")
    rows = h.new_rows()
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["val_mean_dice"] == 0.5 and rows[0]["val_mean_dice"] != 0.5
    path.write_text("epoch,loss,val_mean_dice\n1,0.9,\n2,0.8,0.5\n3,0.7,\n")
    assert [r["epoch"] for r in h.new_rows()] == [3] and h.new_rows() == []


def test_work_queue_claims_each_run_once_and_takes_over_dead_workers(tmp_path):
    url = f"sqlite:///{tmp_path / 'grid.db'}"
    a, b = WorkQueue(url, "hippocampus_mri/abc", heartbeat=1), WorkQueue(url, "hippocampus_mri/abc", heartbeat=1)
    b.worker = "other-host:1"
    assert a.claim("unet", 0) and not b.claim("unet", 0) and not a.claim("unet", 0)
    assert WorkQueue(url, "hippocampus_mri/other").claim("unet", 0)  # another grid
    run_dir = tmp_path / "a" / "unet" / "fold_0"
    (run_dir / "eval").mkdir(parents=True)
    (run_dir / "eval" / "metrics_per_case.csv").write_text("case,fold,centre,class,metric,value\nc1,0,,x,dice,0.5\n")
    a.finish("unet", 0, {"status": "done", "bundle": "unet", "fold": 0}, run_dir)
    assert not b.claim("unet", 0) and not b.claim("unet", 0, force=True)  # done by this invocation's time
    # results of other workers land in this machine's run folders
    n = b.materialize(lambda results, bundle, fold: Path(results) / bundle / f"fold_{fold}", tmp_path / "b")
    assert n == 1 and (tmp_path / "b" / "unet" / "fold_0" / "eval" / "metrics_per_case.csv").is_file()
    assert json.loads((tmp_path / "b" / "unet" / "fold_0" / "run.json").read_text())["worker"] == a.worker
    b.since = time.time() + 1  # a later invocation with --force redoes runs finished before it
    assert b.claim("unet", 0, force=True)
    # a claim whose heartbeat stopped (3 beats) is taken over, once
    assert a.claim("segresnet", 0)
    with a.holding("segresnet", 0):
        time.sleep(2.5)
        assert not b.claim("segresnet", 0)  # beating
    time.sleep(3.5)
    assert b.busy() == [("segresnet", 0, True)]
    assert b.claim("segresnet", 0) and not a.claim("segresnet", 0)
    # a failed run is retried by a later invocation, not by the one that saw it fail
    assert a.claim("dynunet", 1)
    a.finish("dynunet", 1, {"status": "failed"}, tmp_path / "none")
    assert not a.claim("dynunet", 1)
    time.sleep(0.05)
    assert WorkQueue(url, "hippocampus_mri/abc").claim("dynunet", 1)


# ---- a real study ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def six_cases(tmp_path_factory, hippo_dir) -> Path:
    """6 real hippocampus cases, 2 per fold (folds 0, 1, 2)."""
    cases = msd_datalist(hippo_dir, folds=5, seed=0)["training"][:6]
    for i, e in enumerate(cases):
        e["fold"] = i // 2
    path = tmp_path_factory.mktemp("tune") / "datalist.json"
    path.write_text(json.dumps({"training": cases}, indent=4))
    return path


TINY = {
    **tiny_overrides("unet"),
    "batch_size": 1,
    "augmentation_args#num_samples": 4,  # 16 iterations an epoch: a pruned run is stopped mid-training
    "scheduler_name": "constant",
    "num_workers": 0,
    "cache": "memory",
    "check_data": "quick",
    "tensorboard": False,
}


@pytest.mark.slow
def test_real_study_prunes_tracks_reports_and_checks_another_fold(
    six_cases, hippo_dir, tmp_path, monkeypatch, one_thread
):
    monkeypatch.setattr(tune, "POLL_SECONDS", 0.25)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    space = {"learning_rate": {"low": 1e-7, "high": 1.0, "log": True}, "loss_name": {"choices": ["dice_ce", "dice"]}}
    fixed = dict(TINY)
    kwargs = {
        "bundle": HIPPO,
        "space": space,
        "study": "real",
        "storage": storage,
        "pruner": "median",
        "startup_trials": 1,
        "warmup_epochs": 2,  # the first epoch's Dice barely depends on the learning rate: compare at epoch 2
        "max_epochs": 4,
        "val_interval": 1,
        "datalist": str(six_cases),
        "dataset_dir": str(hippo_dir),
        "overrides": fixed,
        "out": str(tmp_path / "runs"),
        "mlflow": str(tmp_path / "mlruns"),
        "defaults_first": False,
        "heartbeat": 5,
        # a learning rate that learns, then one too small to move the weights
        "enqueue": [{"learning_rate": 1e-3, "loss_name": "dice_ce"}, {"learning_rate": 1e-7, "loss_name": "dice_ce"}],
    }
    t0 = time.time()
    result = tune.run_study(trials=2, **kwargs)
    assert result["states"] == {"COMPLETE": 1, "PRUNED": 1}, result
    st = optuna.load_study(study_name="real", storage=storage)
    good, bad = st.trials
    assert good.value > 0 and good.value == pytest.approx(
        json.loads((tmp_path / "runs" / "trial_0000" / "eval" / "metrics_summary.json").read_text())["summary"]["all"][
            "mean"
        ]["dice"]["mean"]
    )
    assert sorted(good.intermediate_values) == [1, 2, 3, 4] and len(good.user_attrs["case_dice"]) == 2
    # pruned at its second validation: the bundle process was stopped (SIGTERM) before training to the end
    assert bad.user_attrs["pruned_at_epoch"] == 2 and "pruned at epoch 2" in bad.user_attrs["reason"]
    history = pd.read_csv(tmp_path / "runs" / "trial_0001" / "logs" / "history.csv")
    assert len(history) < 4
    state = json.loads((tmp_path / "runs" / "trial_0001" / "train_state.json").read_text())
    assert state["status"] == "stopped" and state["reason"] == "SIGTERM"
    assert not (tmp_path / "runs" / "trial_0001" / "eval").exists()
    print(f"two trials: {time.time() - t0:.0f} s")

    # rerunning the command continues the study
    assert tune.run_study(trials=3, **kwargs)["trials"] == 3
    st = optuna.load_study(study_name="real", storage=storage)
    assert st.trials[2].state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)

    # MLflow: one run per trial, per-validation metrics, pruned ones KILLED
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns' / 'mlruns.db'}")
    runs = mlflow.search_runs(experiment_names=["tune_real"]).set_index("tags.trial")
    assert len(runs) == 3 and runs.loc["0", "status"] == "FINISHED" and runs.loc["1", "status"] == "KILLED"
    assert runs.loc["1", "tags.optuna_state"] == "PRUNED" and runs.loc["0", "params.param.learning_rate"] == "0.001"
    assert runs.loc["0", "metrics.dice_mean"] == pytest.approx(good.value, rel=1e-5)
    history = mlflow.tracking.MlflowClient().get_metric_history(runs.loc["0", "run_id"], "epoch_val_mean_dice")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert runs.loc["0", "params.override.network_def/channels"] == "[8, 16, 32]"

    # best: merged after train.yaml it gives the config the best trial trained with (config.json)
    tuned = tune.write_best("real", storage, str(tmp_path / "tuned.yaml"))
    from monai.bundle import ConfigParser

    merged = ConfigParser.load_config_files([str(resolve_bundle(HIPPO) / "configs" / "train.yaml"), str(tuned)])
    ran = json.loads((tmp_path / "runs" / "trial_0000" / "config.json").read_text())["config"]
    skip = {"_meta_", "resume", "overwrite", *OUTPUT_KEYS}
    same = [{k: v for k, v in c.items() if k not in skip} for c in (merged, ran)]
    assert json.loads(json.dumps(same[0]).replace("::", "#")) == json.loads(json.dumps(same[1]).replace("::", "#"))

    # report, with the best configuration and the defaults trained and compared on fold 1
    md = tune.write_report("real", storage, str(tmp_path / "report"), eval_fold=1)
    text = md.read_text()
    table = pd.read_csv(tmp_path / "report" / "trials.csv")
    assert list(table["state"][:2]) == ["COMPLETE", "PRUNED"] and "pruned at epoch 2" in table.loc[1, "reason"]
    for png in ("optimization_history", "intermediate_values", "parallel_coordinate"):
        assert (tmp_path / "report" / "plots" / f"{png}.png").stat().st_size > 5000, png
        assert f"plots/{png}.png" in text
    assert "parameter importances" in text
    assert "## Held-out check on fold 1" in text and "Wilcoxon p" in text
    held = pd.read_csv(tmp_path / "report" / "eval_fold_1.csv")
    assert len(held) == 2 and set(held.columns) == {"case", "tuned", "default", "diff"}
    assert (tmp_path / "runs" / "eval_fold_1" / "default" / "eval" / "metrics_per_case.csv").is_file()
    with pytest.raises(ValueError, match="must differ"):
        tune.write_report("real", storage, str(tmp_path / "report"), eval_fold=0)
    print(f"whole test: {time.time() - t0:.0f} s")
