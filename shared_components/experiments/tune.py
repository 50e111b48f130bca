"""Automated search with Optuna: studies over any bundle's overrides (losses, optimizers, schedulers, any header
key), one real bundle run per trial, pruned on its validation Dice, many workers on one database.

Each trial samples the search space (:mod:`.search_space`), then trains and evaluates the bundle with those
overrides through :func:`.runs.train_and_evaluate` (the runner the benchmark uses; its folder
``<out>/trial_<n>/``). While the run trains, its ``logs/history.csv`` is polled: every validation Dice is reported
to the trial (``trial.report``) and logged to MLflow, and when the pruner says so the bundle process is stopped with
SIGTERM (it keeps the state of its last epoch). The objective is the mean foreground Dice of the evaluated best
checkpoint on ``fold``; pruned and failed trials keep their reason in the user attribute ``reason``.

Workers need no coordinator: the same command on each (``sqlite:///file.db`` on one machine, ``postgresql://...``
across machines) loads the study (``load_if_exists``) and takes trials until the study holds ``trials``. The
storage's heartbeat marks the trial of a killed worker failed; it is retried (same parameters, same folder, so its
training resumes) by the next worker that checks, and a worker waits for the other workers' trials before it
leaves, so the study finishes as long as one worker lives.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import yaml

from shared_components.experiments.search_space import SearchSpace, load_space
from shared_components.paths import CLI

logger = logging.getLogger(__name__)

METRIC = "val_mean_dice"  # the validation column of history.csv reported to the pruner
POLL_SECONDS = 2.0  # how often a running trial's history.csv is read
HEARTBEAT = 60  # seconds between a running trial's heartbeats; it is stale (and retried) after 3 missed ones
MAX_RETRY = 3
TRAIN_KEYS = ("max_epochs", "time_budget_minutes")  # overrides of training only (evaluation reads the checkpoint)
SAMPLERS = ("tpe", "random", "grid", "cmaes")
PRUNERS = ("median", "hyperband", "none")
# study settings that every worker (and every rerun) must share; paths may differ between machines
COMPARED = ("kind", "bundle", "fold", "common", "train", "space", "variants", "seeds", "trials")
_PATH_KEYS = ("datalist", "dataset_dir")
WORKER = f"{socket.gethostname()}:{os.getpid()}"


class TrialFailed(RuntimeError):
    """The trial's bundle run failed; its reason is in the trial's user attributes."""


class Surplus(RuntimeError):
    """Another worker started the study's last trial first; this one runs nothing."""


def _quiet() -> None:
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)


# ---- storage, sampler, pruner -----------------------------------------------------------------------------------


def retry_callback() -> Any:
    """Optuna's callback re-creating a failed trial (same parameters, ``failed_trial`` names the original)."""
    return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)


def storage_url(storage: str | os.PathLike) -> str:
    """A SQLAlchemy URL: as given (``sqlite:///study.db``, ``postgresql://user@host/db``), or a file path as SQLite.
    A bare ``postgresql://`` gets the installed driver (SQLAlchemy 2.1 would pick psycopg 3; we ship psycopg2)."""
    import importlib.util

    text = str(storage)
    if "://" not in text:
        return f"sqlite:///{Path(text).resolve()}"
    scheme, rest = text.split("://", 1)
    if scheme in ("postgresql", "postgres") and importlib.util.find_spec("psycopg") is None:
        return f"postgresql+psycopg2://{rest}"
    return text


def open_storage(storage: str | os.PathLike, heartbeat: int | None = HEARTBEAT) -> Any:
    """Optuna's ``RDBStorage`` with heartbeats (``grace_period`` 3 beats) and stale trials retried up to
    :data:`MAX_RETRY` times; SQLite waits up to a minute for locks, so workers on one machine share a file."""
    from optuna.storages import RDBStorage

    _quiet()
    url = storage_url(storage)
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        engine = {"connect_args": {"timeout": 60}}
    else:
        engine = {"pool_pre_ping": True}
    beats: dict[str, Any] = {}
    if heartbeat:
        beats = {"heartbeat_interval": int(heartbeat), "grace_period": 3 * int(heartbeat)}
        beats["heartbeat_stale_trial_callback"] = retry_callback()
    for attempt in range(3):  # workers started together race to create the tables; the losers try again
        try:
            return RDBStorage(url, engine_kwargs=engine, **beats)
        except Exception:
            if attempt == 2:
                raise
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


class TrialSeeded(optuna.samplers.BaseSampler):
    """A sampler rebuilt for every trial with the seed ``seed * 1000003 + trial number``: one worker reproduces its
    study, and workers started with the same ``--seed`` (the same command on every machine) still draw different
    values. The samplers wrapped (TPE, random, CMA-ES) keep their history in the storage, not in the object."""

    def __init__(self, make: Callable[[int], Any], seed: int):
        self._make, self._seed, self._samplers = make, int(seed), {}

    def _of(self, trial: Any) -> Any:
        n = trial.number
        if n not in self._samplers:
            self._samplers[n] = self._make((self._seed * 1_000_003 + n) % 2**32)
        return self._samplers[n]

    def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
        return self._of(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
        return self._of(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: Any, trial: Any, name: str, distribution: Any) -> Any:
        return self._of(trial).sample_independent(study, trial, name, distribution)

    def before_trial(self, study: Any, trial: Any) -> None:
        self._of(trial).before_trial(study, trial)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        self._of(trial).after_trial(study, trial, state, values)
        self._samplers.pop(trial.number, None)

    def reseed_rng(self) -> None:
        pass


def make_sampler(name: str, seed: int, grid: Mapping[str, Sequence[Any]] | None = None, trials: int = 20) -> Any:
    """``tpe`` (multivariate, grouped for conditional keys, constant liar for parallel workers), ``random``,
    ``grid`` (every combination of ``grid``), ``cmaes`` (needs the ``cmaes`` package)."""
    _quiet()
    name = str(name).lower()
    if name not in SAMPLERS:
        raise ValueError(f"Unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}.")
    if name == "grid":
        if grid is None:
            raise ValueError("--sampler grid needs a discrete search space.")
        return optuna.samplers.GridSampler(dict(grid), seed=seed)
    if name == "random":
        return TrialSeeded(lambda s: optuna.samplers.RandomSampler(seed=s), seed)
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError as e:
            raise ValueError("--sampler cmaes needs the cmaes package: pip install cmaes") from e
        return TrialSeeded(lambda s: optuna.samplers.CmaEsSampler(seed=s, warn_independent_sampling=False), seed)
    startup = max(5, min(10, trials // 4))
    return TrialSeeded(
        lambda s: optuna.samplers.TPESampler(
            seed=s, n_startup_trials=startup, multivariate=True, group=True, constant_liar=True
        ),
        seed,
    )


def make_pruner(
    name: str, startup_trials: int = 5, warmup_epochs: int = 10, max_epochs: int | None = None, val_interval: int = 1
) -> Any:
    """``median`` (below the median of earlier trials at the same epoch, after ``startup_trials`` trials and
    ``warmup_epochs`` epochs), ``hyperband`` (successive halving over epochs), ``none``."""
    name = str(name).lower()
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=int(startup_trials), n_warmup_steps=int(warmup_epochs), interval_steps=1
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=max(int(val_interval), 1), max_resource=int(max_epochs) if max_epochs else "auto"
        )
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"Unknown pruner {name!r}; choose one of: {', '.join(PRUNERS)}.")


# ---- the processes of a run -------------------------------------------------------------------------------------


def run_processes(run_dir: str | Path, parent: int | None = None) -> list[int]:
    """Live processes whose command line holds ``--run_dir <run_dir>`` (the bundle runs of that folder; children
    of ``parent`` only, when given). Reads ``/proc`` (Linux); elsewhere none are found."""
    needle = b"\0--run_dir\0" + str(Path(run_dir)).encode() + b"\0"
    pids = []
    proc = Path("/proc")
    if not proc.is_dir():
        return pids
    for d in proc.iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = b"\0" + (d / "cmdline").read_bytes()
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if needle in cmd and fields[0] != "Z" and (parent is None or int(fields[1]) == parent):
            pids.append(int(d.name))
    return pids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def stop_processes(pids: Sequence[int], timeout: float = 60.0) -> None:
    """SIGTERM ``pids`` (a bundle run then stops at its next iteration, keeping its last epoch), SIGKILL what is
    still alive after ``timeout`` seconds."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


class History:
    """The rows of a growing ``history.csv`` not seen yet (one per epoch; the file is rewritten atomically)."""

    def __init__(self, path: Path):
        self.path, self.seen = Path(path), set()

    def new_rows(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
        except OSError:
            return []
        out = []
        for r in rows:
            try:
                epoch = int(float(r["epoch"]))
            except (KeyError, TypeError, ValueError):
                continue
            if epoch not in self.seen:
                self.seen.add(epoch)
                out.append({**{k: _float(v) for k, v in r.items() if k}, "epoch": epoch})
        return out


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


# ---- one trial --------------------------------------------------------------------------------------------------


def objective_value(run_dir: Path) -> float:
    """Mean over the evaluated cases of their mean foreground Dice (``eval/metrics_summary.json``)."""
    from shared_components.evaluation.report import MEAN_CLASS, SUMMARY_JSON

    summary = json.loads((Path(run_dir) / "eval" / SUMMARY_JSON).read_text())["summary"]["all"]
    return float(summary[MEAN_CLASS]["dice"]["mean"])


def case_dice(run_dir: Path) -> dict[str, dict[str, float]]:
    """Per case, the Dice of each class (``eval/metrics_per_case.csv``)."""
    from shared_components.evaluation.report import MEAN_CLASS, PER_CASE, read_per_case

    df = read_per_case(Path(run_dir) / "eval" / PER_CASE)
    df = df[(df["metric"] == "dice") & (df["class"] != MEAN_CLASS)]
    out: dict[str, dict[str, float]] = {}
    for case, cls, value in zip(df["case"], df["class"], df["value"], strict=True):
        out.setdefault(str(case), {})[str(cls)] = float(value)
    return out


def run_trial(trial: Any, setup: Mapping[str, Any], overrides: Mapping[str, Any], run_dir: Path) -> float:
    """Train and evaluate the bundle with ``overrides`` into ``run_dir``, reporting each validation Dice to
    ``trial`` and stopping the run when the trial is pruned; returns the objective."""
    from shared_components.experiments.runs import train_and_evaluate
    from shared_components.experiments.tracking import LiveRun

    run_dir = Path(run_dir)
    stop_processes(run_processes(run_dir))  # a killed worker's run of this (retried) trial, if it outlived it
    common, train = split_overrides(setup, overrides)
    live = None
    if setup.get("mlflow"):
        params = {"trial": trial.number, "bundle": setup["bundle"], "fold": setup["fold"]}
        params |= {f"param.{k}": v for k, v in trial.params.items()}
        params |= {f"override.{k}": v for k, v in {**common, **train}.items()}
        tags = {"study": setup["study"], "trial": trial.number, "run_dir": str(run_dir), "host": socket.gethostname()}
        live = LiveRun(setup["mlflow"], setup["experiment"], f"trial_{trial.number:04d}", params, tags)
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["rec"] = train_and_evaluate(Path(setup["bundle_dir"]), run_dir, setup["fold"], common, train)
        except BaseException as e:  # re-raised in the trial's thread
            result["error"] = e

    thread = threading.Thread(target=work, name=f"trial-{trial.number}", daemon=True)
    thread.start()
    history = History(run_dir / "logs" / "history.csv")
    pruned: tuple[int, float] | None = None
    try:
        while True:
            alive = thread.is_alive()  # read first: the rows read below are then complete once it has ended
            rows = history.new_rows()
            if live:
                live.log_epochs(rows)
            for r in rows if pruned is None else ():
                v = r.get(METRIC, float("nan"))
                if v != v:
                    continue
                trial.report(v, r["epoch"])
                if trial.should_prune():
                    pruned = (r["epoch"], v)
                    break
            if pruned is not None and alive:
                stop_processes(run_processes(run_dir, parent=os.getpid()), timeout=120)
            if not alive:
                break
            thread.join(POLL_SECONDS)
    except BaseException:  # the worker is interrupted (Ctrl-C, SIGTERM): stop its run, then Optuna fails the trial
        stop_processes(run_processes(run_dir, parent=os.getpid()))
        thread.join(60)
        with contextlib.suppress(Exception):  # the next worker retries it (see work)
            trial.set_user_attr("interrupted", True)
            trial.set_user_attr("reason", "worker interrupted; retried by the next worker")
        if live:
            live.finish("KILLED", tags={"optuna_state": "FAIL", "reason": "worker interrupted"})
        raise
    thread.join()
    if "error" in result:
        if live:
            live.finish("FAILED", tags={"optuna_state": "FAIL", "reason": repr(result["error"])})
        raise result["error"]
    rec = result["rec"]
    trial.set_user_attr("epochs", rec.get("epochs"))
    trial.set_user_attr(
        "train_minutes", round(rec.get("train_seconds", 0) / 60, 2) if rec.get("train_seconds") else None
    )
    if pruned is not None:
        pruner = type(trial.study.pruner).__name__
        reason = f"pruned at epoch {pruned[0]}: {METRIC} {pruned[1]:.4f} ({pruner})"
        trial.set_user_attr("reason", reason)
        trial.set_user_attr("pruned_at_epoch", pruned[0])
        if live:
            live.finish("KILLED", rec, run_dir, {"optuna_state": "PRUNED", "reason": reason})
        raise optuna.TrialPruned(reason)
    if rec.get("status") != "done":
        error = str(rec.get("error", "")).strip().splitlines()
        reason = f"failed during {rec.get('failed_stage')}: {error[-1] if error else 'unknown error'}"
        trial.set_user_attr("reason", reason[:1000])
        trial.set_user_attr("error", str(rec.get("error", ""))[-3000:])
        if live:
            live.finish("FAILED", rec, run_dir, {"optuna_state": "FAIL", "reason": reason})
        raise TrialFailed(reason)
    try:
        value = objective_value(run_dir)
        trial.set_user_attr("case_dice", case_dice(run_dir))
    except (OSError, KeyError, ValueError) as e:
        trial.set_user_attr("reason", f"no evaluation to read: {e}")
        if live:
            live.finish("FAILED", rec, run_dir, {"optuna_state": "FAIL", "reason": str(e)})
        raise TrialFailed(str(e)) from e
    if live:
        live.finish("FINISHED", rec, run_dir, {"optuna_state": "COMPLETE", "value": f"{value:.6f}"})
    return value


# ---- the worker loop --------------------------------------------------------------------------------------------


def _retried(trials: Sequence[Any]) -> set[int]:
    """Numbers of the trials that were retried (a heartbeat-stale trial re-created as a new one)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def _counted(trials: Sequence[Any]) -> list[Any]:
    """The trials that count towards the study's total: all but the retried, interrupted and surplus ones."""
    retried = _retried(trials)
    fail = optuna.trial.TrialState.FAIL
    skip = ("surplus", "interrupted")
    return [
        t for t in trials if not (t.state == fail and (t.number in retried or any(t.user_attrs.get(k) for k in skip)))
    ]


def retry_interrupted(study: Any) -> int:
    """Queue again (same parameters, same run folder) the trials whose worker was interrupted; how many."""
    trials = study.get_trials(deepcopy=False)
    retried = _retried(trials)
    retry = retry_callback()
    todo = [
        t
        for t in trials
        if t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("interrupted") and t.number not in retried
    ]
    for t in todo:
        retry(study, t)
    return len(todo)


def make_objective(
    setup: Mapping[str, Any],
    overrides_of: Callable[[Any], dict[str, Any]],
    custom: Callable[[Any, dict[str, Any], Path], float] | None = None,
) -> Callable[[Any], float]:
    """The Optuna objective: surplus check, ``overrides_of(trial)`` (samples the trial), the run folder (a retried
    trial reuses its original's, so its training resumes), user attributes, then :func:`run_trial` (or ``custom``,
    a test hook called as ``custom(trial, overrides, run_dir)``)."""

    def objective(trial: Any) -> float:
        # a trial re-created for a stale one (RetryHeartbeatStaleTrialCallback) names its original
        system = trial.study._storage.get_trial(trial._trial_id).system_attrs
        original = system.get("failed_trial")
        earlier = [t for t in _counted(trial.study.get_trials(deepcopy=False)) if t.number < trial.number]
        if original is not None:  # two workers may queue the same interrupted trial again
            twin = [t.number for t in earlier if t.system_attrs.get("failed_trial") == original]
        else:
            fixed = system.get("fixed_params")
            twin = [t.number for t in earlier if fixed is not None and t.system_attrs.get("fixed_params") == fixed]
        if twin or (original is None and len(earlier) >= int(setup["trials"])):  # another worker was first
            why = f"a copy of trial {twin[0]}" if twin else f"the study already had its {setup['trials']} trials"
            trial.set_user_attr("surplus", True)
            trial.set_user_attr("reason", f"surplus: {why}")
            raise Surplus(f"trial {trial.number}: {why}")
        overrides = overrides_of(trial)
        number = trial.number if original is None else original
        run_dir = Path(setup["out"]) / f"trial_{number:04d}"
        trial.set_user_attr("overrides", overrides)
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("worker", WORKER)
        if original is not None:
            trial.set_user_attr("retry_of", original)
        if custom is not None:
            return float(custom(trial, overrides, run_dir))
        return run_trial(trial, setup, overrides, run_dir)

    return objective


def work(
    study: Any,
    objective: Callable[[Any], float],
    trials: int,
    wait: bool = True,
    timeout: float | None = None,
    poll: float | None = None,
    on_trial: Callable[[Any], None] | None = None,
) -> None:
    """Take trials of ``study`` until it holds ``trials`` (retried and surplus trials excepted) and, with ``wait``,
    until the other workers' running trials have finished or gone stale (a stale one is retried here).
    ``timeout`` (minutes): start no trial after that long."""
    from optuna.trial import TrialState

    _quiet()
    if retry_interrupted(study):
        logger.warning("trials whose worker was interrupted are queued again (they resume in their run folders)")
    t0 = time.monotonic()
    poll = poll or max(1.0, min(30.0, float(study._storage.get_heartbeat_interval() or 10)))
    while True:
        with contextlib.suppress(AttributeError):
            optuna.storages.fail_stale_trials(study)
        all_trials = study.get_trials(deepcopy=False)
        waiting = any(t.state == TrialState.WAITING for t in all_trials)
        if waiting or len(_counted(all_trials)) < trials:
            if timeout is not None and time.monotonic() - t0 > 60 * float(timeout):
                logger.warning("worker time limit reached (%s min): no new trial started", timeout)
                return
            finished = {t.number for t in all_trials if t.state.is_finished()}
            study.optimize(objective, n_trials=1, catch=(TrialFailed, Surplus), gc_after_trial=True)
            if on_trial is not None:
                for t in study.get_trials(deepcopy=False):
                    mine = t.user_attrs.get("worker") == WORKER and not t.user_attrs.get("surplus")
                    if t.number not in finished and t.state.is_finished() and mine:
                        on_trial(t)
            continue
        if not wait or not any(t.state == TrialState.RUNNING for t in all_trials):
            return
        time.sleep(poll)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises ``KeyboardInterrupt`` in the main thread, so a stopped worker stops its bundle run too."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def bind_setup(study: Any, setup: dict[str, Any], force: bool = False) -> dict[str, Any]:
    """Store the study's settings, or check this worker's against the stored ones (a study is one experiment)."""
    old = study.user_attrs.get("setup")
    if old is None or force:
        study.set_user_attr("setup", setup)
        return setup

    def same(key: str) -> Any:
        v = old.get(key) if key in old else None
        w = setup.get(key)
        if key == "common":
            v = {k: x for k, x in (v or {}).items() if k not in _PATH_KEYS}
            w = {k: x for k, x in (w or {}).items() if k not in _PATH_KEYS}
        return json.dumps(v, sort_keys=True) == json.dumps(w, sort_keys=True)

    diff = [k for k in COMPARED if k != "trials" and not same(k)]
    if diff:
        detail = "; ".join(f"{k}: {old.get(k)!r} -> {setup.get(k)!r}" for k in diff)
        raise ValueError(
            f"Study {setup['study']!r} was started with other settings ({detail}); use another --study name."
        )
    if old.get("trials") != setup.get("trials"):  # more (or fewer) trials: the study goes on to the new total
        study.set_user_attr("setup", {**old, "trials": setup["trials"]})
    mine = ("trials", "out", "mlflow", "common", "bundle_dir")  # this machine's paths, equal settings otherwise
    return {**old, **{k: setup[k] for k in mine}}


# ---- tune.py run ------------------------------------------------------------------------------------------------


def _check_fold(bundle_dir: Path, fold: int, common: Mapping[str, Any], what: str = "--fold") -> None:
    from shared_components.data.datalist import load_datalist
    from shared_components.experiments.runs import bundle_values

    keys = {k: v for k, v in common.items() if k in _PATH_KEYS}
    datalist = bundle_values(bundle_dir, ["datalist"], keys)["datalist"]
    present = sorted({int(e["fold"]) for e in load_datalist(datalist).get("training", []) if "fold" in e})
    if int(fold) not in present:
        raise ValueError(f"{what} {fold} is not in {datalist} (folds present: {present}).")


def base_settings(
    bundle: str,
    fold: int,
    seed: int,
    max_epochs: int | None,
    time_budget: float | None,
    datalist: str | None,
    dataset_dir: str | None,
    val_interval: int | None,
    overrides: Mapping[str, Any] | str | None,
) -> tuple[Path, str, dict[str, Any], dict[str, Any]]:
    """(bundle folder, dataset name, overrides of every run, training-length overrides) of a study."""
    from shared_components.experiments.benchmark import dataset_name
    from shared_components.experiments.runs import resolve_bundle

    bundle_dir = resolve_bundle(bundle)
    if isinstance(overrides, str):
        overrides = yaml.safe_load(overrides)
    common: dict[str, Any] = {"seed": int(seed), **dict(overrides or {})}
    if datalist:
        common["datalist"] = str(Path(datalist).resolve())
    if dataset_dir:
        common["dataset_dir"] = str(Path(dataset_dir).resolve())
    if val_interval is not None:
        common["val_interval"] = int(val_interval)
    train: dict[str, Any] = {}
    if max_epochs is not None:
        train["max_epochs"] = int(max_epochs)
    if time_budget is not None:
        train["time_budget_minutes"] = float(time_budget)
    _check_fold(bundle_dir, fold, common)
    return bundle_dir, dataset_name([bundle_dir]), common, train


def study_setup(
    kind: str,
    study: str,
    bundle_dir: Path,
    dataset: str,
    fold: int,
    common: Mapping[str, Any],
    train: Mapping[str, Any],
) -> dict[str, Any]:
    """The settings every study stores (``kind`` tune or ablation): what :func:`bind_setup` holds its workers to."""
    return {
        "kind": kind,
        "study": study,
        "bundle": bundle_dir.name,
        "bundle_dir": str(bundle_dir),
        "dataset": dataset,
        "fold": int(fold),
        "common": common,
        "train": train,
    }


def mlflow_store(mlflow: bool | str | None, results: Path) -> str | None:
    """``True``: the benchmark's store ``<results>/runs``; a folder or tracking URI as given; ``False``: none."""
    if mlflow is False or mlflow is None or str(mlflow).lower() in ("false", "none", "0", "off"):
        return None
    if mlflow is True or str(mlflow).lower() == "true":
        return str(results / "runs")
    return str(mlflow) if "://" in str(mlflow) else str(Path(str(mlflow)).resolve())


def _load_objective(spec: str | None) -> Callable | None:
    if not spec:
        return None
    import importlib

    module, _, name = str(spec).partition(":")
    return getattr(importlib.import_module(module), name)


def _enqueue_list(enqueue: Any) -> list[dict[str, Any]]:
    if enqueue is None:
        return []
    if isinstance(enqueue, str):
        enqueue = yaml.safe_load(Path(enqueue).read_text() if Path(enqueue).is_file() else enqueue)
    if isinstance(enqueue, Mapping):
        enqueue = [enqueue]
    return [dict(e) for e in enqueue]


def run_study(
    bundle: str,
    space: str | Mapping[str, Any],
    trials: int = 20,
    study: str | None = None,
    storage: str | None = None,
    sampler: str = "tpe",
    pruner: str = "median",
    fold: int = 0,
    max_epochs: int | None = None,
    time_budget: float | None = None,
    datalist: str | None = None,
    dataset_dir: str | None = None,
    seed: int = 0,
    out: str | None = None,
    results: str = "results",
    val_interval: int | None = None,
    overrides: Mapping[str, Any] | str | None = None,
    enqueue: Any = None,
    defaults_first: bool = True,
    startup_trials: int = 5,
    warmup_epochs: int = 10,
    heartbeat: int = HEARTBEAT,
    mlflow: bool | str = True,
    wait: bool = True,
    timeout: float | None = None,
    objective: str | Callable | None = None,
) -> dict[str, Any]:
    """Run (or continue) an Optuna study of ``bundle`` over ``space``; start the same command on several
    machines or terminals to add workers.

    Args:
        bundle: bundle name under ``bundles/`` or a bundle folder.
        space: search space YAML (see :mod:`.search_space`).
        trials: trials of the whole study (all workers together); rerun with more to extend it.
        study: the study's name (a rerun, or another worker, with the same name continues it).
        storage: the study's database: ``sqlite:///tune.db`` (one machine), ``postgresql://user:pw@host/db``.
        sampler: tpe, random, grid (every combination), cmaes.
        pruner: median, hyperband or none (pruned on the validation Dice at every validation).
        startup_trials: trials the median pruner lets finish before it prunes.
        warmup_epochs: epochs before the median pruner prunes a trial.
        fold: fold held out; the objective is the mean foreground Dice of the evaluated best checkpoint on it.
        max_epochs: epochs per trial (the same for every trial).
        time_budget: training minutes per trial (epochs and LR schedule fitted to it).
        datalist: datalist other than the bundle's.
        dataset_dir: data folder other than the bundle's.
        seed: bundle seed of every trial, and the sampler's seed.
        out: folder of the trial runs (default ``<results>/<dataset>/runs/tune_<study>``).
        results: results root (``<results>/<dataset>/runs`` holds the default run folders and MLflow store).
        val_interval: validation interval (epochs) of every trial.
        overrides: further overrides of every trial (a dict or YAML, ``{'num_workers': 2}``).
        enqueue: parameters to try first (a list of dicts or a YAML file of them).
        defaults_first: try the bundle's defaults first (the keys whose default lies in the space).
        heartbeat: seconds between heartbeats; a trial silent for 3 of them is failed and retried.
        mlflow: True (the benchmark's store ``<results>/<dataset>/runs``, experiment ``tune_<study>``), a folder or
            tracking URI, or False.
        wait: before leaving, wait for other workers' running trials (retrying those whose worker died).
        timeout: minutes after which this worker starts no new trial.
        objective: test hook ``module:function`` replacing the bundle run (``fn(trial, overrides, run_dir)``).
    """
    if not study or not storage:
        raise ValueError("Give --study NAME and --storage URL (e.g. sqlite:///tune.db).")
    bundle_dir, dataset, common, train = base_settings(
        bundle, fold, seed, max_epochs, time_budget, datalist, dataset_dir, val_interval, overrides
    )
    space_obj = load_space(space, bundle_dir, {**common, **train})
    fixed = sorted(set(space_obj.params) & {*common, *train})
    if fixed:
        raise ValueError(f"{fixed} are both searched and fixed (--overrides/--seed/--max_epochs...): keep one.")
    grid = space_obj.grid_space() if str(sampler).lower() == "grid" else None
    if grid is not None and int(trials) > math.prod(len(v) for v in grid.values()):
        trials = math.prod(len(v) for v in grid.values())
        print(f"--sampler grid: the grid has {trials} points, so the study has {trials} trials")
    results_dir = Path(results).resolve() / dataset
    setup = {
        **study_setup("tune", study, bundle_dir, dataset, fold, common, train),
        "space": space_obj.to_dict(),
        "variants": None,
        "trials": int(trials),
        "sampler": sampler,
        "pruner": pruner,
        "seed": int(seed),
        "out": str(Path(out).resolve() if out else results_dir / "runs" / f"tune_{study}"),
        "mlflow": mlflow_store(mlflow, results_dir),
        "experiment": f"tune_{study}",
    }
    st = optuna.create_study(
        study_name=study,
        storage=open_storage(storage, heartbeat),
        sampler=make_sampler(sampler, seed, grid, trials),
        pruner=make_pruner(
            pruner, startup_trials, warmup_epochs, train.get("max_epochs"), common.get("val_interval", 1)
        ),
        direction="maximize",
        load_if_exists=True,
    )
    setup = bind_setup(st, setup)
    first = [space_obj.default_params()] if defaults_first and grid is None else []  # a grid has its own order
    for params in first + [_encode(space_obj, e) for e in _enqueue_list(enqueue)]:
        if grid is not None and set(params) != set(grid):
            raise ValueError(f"--sampler grid: an enqueued trial must give every parameter {sorted(grid)}.")
        if params:
            st.enqueue_trial(params, skip_if_exists=True)
    custom = objective if callable(objective) else _load_objective(objective)

    def overrides_of(trial: Any) -> dict[str, Any]:
        return space_obj.overrides(space_obj.sample(trial))

    print(f"study {study}: {bundle_dir.name}, fold {fold}, {trials} trials, {sampler}/{pruner}; runs in {setup['out']}")
    with sigterm_as_interrupt():
        work(st, make_objective(setup, overrides_of, custom), int(trials), wait, timeout, on_trial=_print_trial)
    return summary(st)


def _encode(space: SearchSpace, values: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(values) - set(space.params))
    if unknown:
        raise ValueError(f"--enqueue names {unknown}, which the space does not search ({sorted(space.params)}).")
    return {k: space.params[k].encode(v) for k, v in values.items()}


def _print_trial(t: Any) -> None:
    state = t.state.name.lower()
    done = t.state == optuna.trial.TrialState.COMPLETE
    value = f" Dice {t.value:.4f}" if done else ""
    reason = f" ({t.user_attrs['reason']})" if t.user_attrs.get("reason") and not done else ""
    minutes = (t.duration.total_seconds() / 60) if t.duration else 0
    print(f"trial {t.number}: {state}{value}{reason}, {minutes:.1f} min", flush=True)


def summary(study: Any) -> dict[str, Any]:
    """Trial counts by state and the best trial (number, value, parameters)."""
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    out: dict[str, Any] = {"study": study.study_name, "trials": len(trials), "states": counts}
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if done:
        best = study.best_trial
        out.update({"best_trial": best.number, "best_value": best.value, "best_params": best.params})
    return out


# ---- tune.py best -----------------------------------------------------------------------------------------------


def load(study: str, storage: str) -> tuple[Any, dict[str, Any]]:
    """A study (read-only use) and its settings."""
    _quiet()
    try:
        st = optuna.load_study(study_name=study, storage=open_storage(storage, heartbeat=None))
    except KeyError as e:
        raise ValueError(f"No study {study!r} in {storage}.") from e
    if "setup" not in st.user_attrs:
        raise ValueError(f"Study {study!r} was not made by tune.py (no settings stored).")
    return st, st.user_attrs["setup"]


def split_overrides(setup: Mapping[str, Any], overrides: Mapping[str, Any]) -> tuple[dict, dict]:
    """(overrides of training and evaluation, of training only) of a trial: the study's fixed ones with the trial's
    on top (a trial's own ``max_epochs``, e.g. an ablation level, replaces the study's)."""
    train = {**setup["train"], **{k: v for k, v in overrides.items() if k in TRAIN_KEYS}}
    common = {**setup["common"], **{k: v for k, v in overrides.items() if k not in TRAIN_KEYS}}
    return common, train


def trial_overrides(setup: Mapping[str, Any], trial: Any) -> dict[str, Any]:
    """Every override a trial's training ran with (output folders aside)."""
    common, train = split_overrides(setup, trial.user_attrs.get("overrides", {}))
    return {**common, "fold": setup["fold"], **train}


def best_trial(st: Any) -> Any:
    done = [t for t in st.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise ValueError(f"Study {st.study_name!r} has no completed trial yet.")
    return st.best_trial


def write_best(study: str, storage: str, out: str = "tuned.yaml") -> Path:
    """Write the best trial's overrides as a bundle config to merge after train.yaml:
    ``python -m monai.bundle run --config_file "['configs/train.yaml','tuned.yaml']"`` trains that trial again.

    Args:
        study: the study's name.
        storage: the study's database (``sqlite:///tune.db``, ``postgresql://...``).
        out: the YAML file to write.
    """
    from shared_components.files import write_text_atomic

    st, setup = load(study, storage)
    best = best_trial(st)
    overrides = trial_overrides(setup, best)
    head = [
        f"# Best trial of Optuna study {study!r} ({setup['bundle']}): trial {best.number}, "
        f"mean foreground Dice {best.value:.4f} on fold {setup['fold']}.",
        "# Merge after the bundle's train.yaml to train it again (command-line overrides such as --fold win):",
        f"#   cd bundles/{setup['bundle']} && python -m monai.bundle run "
        f"--config_file \"['configs/train.yaml','{Path(out).resolve()}']\"",
        "# Keys with '#' set one entry of a nested config (MONAI merges them like command-line overrides).",
    ]
    text = "\n".join(head) + "\n" + to_yaml(overrides)
    path = write_text_atomic(Path(out), text)
    print(f"{path}: trial {best.number} (Dice {best.value:.4f}), {len(overrides)} overrides")
    return path


class _Dumper(yaml.SafeDumper):
    """Block mappings, lists inline (``channels: [16, 32, 64]``)."""


_Dumper.add_representer(list, lambda d, data: d.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True))


def to_yaml(overrides: Mapping[str, Any]) -> str:
    """The overrides as YAML, one ``key: value`` line each (lists inline), in order."""
    return yaml.dump(_plain(overrides), Dumper=_Dumper, sort_keys=False, width=1000)


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


# ---- tune.py report ---------------------------------------------------------------------------------------------


def trials_table(st: Any, setup: Mapping[str, Any]) -> Any:
    """One row per trial: number, state, value, minutes, epochs, last reported Dice, pruning/failure reason,
    retries, run folder, host and the decoded parameters (``param.<key>``)."""
    import pandas as pd

    space = SearchSpace.from_dict(setup["space"]) if setup.get("space") else None
    trials = st.get_trials(deepcopy=False)
    retried_as = {n: t.number for t in trials for n in t.system_attrs.get("retry_history", [])}
    rows = []
    for t in trials:
        reason = t.user_attrs.get("reason", "")
        if t.number in retried_as:
            why = "worker interrupted" if t.user_attrs.get("interrupted") else "heartbeat lost (worker died)"
            reason = f"{why}; retried as trial {retried_as[t.number]}"
        steps = sorted(t.intermediate_values)
        row = {
            "number": t.number,
            "state": t.state.name,
            "value": t.value if t.state == optuna.trial.TrialState.COMPLETE else None,
            "minutes": round(t.duration.total_seconds() / 60, 2) if t.duration else None,
            "epochs_reported": steps[-1] if steps else None,
            "last_val_dice": t.intermediate_values[steps[-1]] if steps else None,
            "reason": reason,
            "retry_of": t.user_attrs.get("retry_of"),
            "run_dir": t.user_attrs.get("run_dir"),
            "host": t.user_attrs.get("host"),
        }
        params = space.decode(t.params) if space else dict(t.params)
        row.update({f"param.{k}": json.dumps(v) if isinstance(v, list | dict) else v for k, v in params.items()})
        rows.append(row)
    return pd.DataFrame(rows)


PLOTS = {
    "optimisation history": ("optimization_history.png", "plot_optimization_history"),
    "parameter importances": ("param_importances.png", "plot_param_importances"),
    "parallel coordinates": ("parallel_coordinate.png", "plot_parallel_coordinate"),
    "intermediate values (validation Dice per epoch)": ("intermediate_values.png", "plot_intermediate_values"),
}


def study_plots(st: Any, plots_dir: Path) -> dict[str, str]:
    """Optuna's matplotlib figures of the study; ``{title: file}``, or ``{title: "not drawn: why"}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    from shared_components.files import atomic_path

    plots_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for title, (name, fn) in PLOTS.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = getattr(ovm, fn)(st)
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.set_size_inches(max(fig.get_size_inches()[0], 8), max(fig.get_size_inches()[1], 5))
            fig.tight_layout()
            with atomic_path(plots_dir / name) as tmp:
                fig.savefig(tmp, dpi=100, format="png")
            plt.close(fig)
            out[title] = name
        except Exception as e:  # e.g. importances need two finished trials with parameters in common
            plt.close("all")
            out[title] = f"not drawn: {e}"
    return out


def write_report(
    study: str, storage: str, out: str | None = None, eval_fold: int | None = None, runs: str | None = None
) -> Path:
    """Write ``trials.csv``, ``report.md`` and ``plots/`` of a study (Optuna's matplotlib figures).

    With ``eval_fold``, the best configuration and the bundle's defaults are trained and evaluated on that other
    fold (resumable), compared by a paired Wilcoxon test on per-case Dice: the gain without the selection bias of
    the tuning fold.

    Args:
        study: the study's name.
        storage: the study's database (``sqlite:///tune.db``, ``postgresql://...``).
        out: report folder (default ``results/<dataset>/tuning/<study>``).
        eval_fold: a fold other than the tuning fold to check the best configuration on.
        runs: folder of those two runs (default ``<trial runs>/eval_fold_<k>``).
    """
    from shared_components.evaluation.formatting import fmt_num
    from shared_components.evaluation.report import write_csv
    from shared_components.files import write_text_atomic

    st, setup = load(study, storage)
    out_dir = Path(out).resolve() if out else Path("results").resolve() / setup["dataset"] / "tuning" / study
    table = trials_table(st, setup)
    write_csv(out_dir / "trials.csv", table)
    figures = study_plots(st, out_dir / "plots")
    counts = table["state"].value_counts().to_dict() if len(table) else {}
    lines = [
        f"# Optuna study `{study}`: {setup['bundle']}",
        "",
        f"Objective: mean foreground Dice of the evaluated best checkpoint on fold {setup['fold']} (maximised). "
        f"Sampler `{setup.get('sampler')}`, pruner `{setup.get('pruner')}` on `{METRIC}` at every validation; "
        f"{len(table)} trials ({', '.join(f'{v} {k.lower()}' for k, v in counts.items())}).",
        "",
        f"Fixed overrides: `{json.dumps({**setup['common'], **setup['train']})}`",
        "",
    ]
    if setup.get("space"):
        lines += ["## Search space", "", SearchSpace.from_dict(setup["space"]).markdown()]
    done = table[table["value"].notna()].sort_values("value", ascending=False) if len(table) else table
    if len(done):
        best = best_trial(st)
        lines += [
            "## Best trial",
            "",
            f"Trial {best.number}: Dice **{best.value:.4f}**. Overrides:",
            "",
            "```yaml",
            to_yaml(best.user_attrs.get("overrides", {})).strip(),
            "```",
            "",
            f"`{CLI} tune best --study {study} --storage URL --out tuned.yaml` writes them as a config "
            "to merge after `configs/train.yaml`.",
            "",
        ]
    pcols = [c for c in table.columns if c.startswith("param.")]
    if len(table):
        head = ["trial", "state", "Dice", "min", "epochs", *[c[len("param.") :] for c in pcols], "note"]
        lines += ["## Trials (best first)", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        ordered = table.assign(_v=table["value"].fillna(-1)).sort_values(["_v", "number"], ascending=[False, True])
        for r in ordered.to_dict("records"):
            cells = [r["number"], r["state"].lower(), fmt_num(r["value"], 4), fmt_num(r["minutes"], 1)]
            cells += [fmt_num(r["epochs_reported"], 0)]
            cells += [_cell(r.get(c)) for c in pcols] + [r.get("reason") or ""]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        lines.append("")
    lines += ["## Plots", ""]
    for title, f in figures.items():
        lines += [f"![{title}](plots/{f})", ""] if not f.startswith("not drawn") else [f"- {title}: {f}", ""]
    if eval_fold is not None:
        lines += evaluate_on_fold(st, setup, int(eval_fold), out_dir, runs)
    lines += [
        "Files: `trials.csv` (every trial), `plots/`; the trial runs are in "
        f"`{setup['out']}` (logs, history, evaluation), MLflow experiment `{setup.get('experiment')}`."
    ]
    write_text_atomic(out_dir / "report.md", "\n".join(lines) + "\n")
    print(f"report: {out_dir / 'report.md'}")
    return out_dir / "report.md"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def case_means(cases: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Per case, the mean Dice over its classes."""
    return {c: sum(v.values()) / len(v) for c, v in cases.items() if v}


def evaluate_on_fold(st: Any, setup: Mapping[str, Any], fold: int, out_dir: Path, runs: str | None) -> list[str]:
    """Train and evaluate the best configuration and the defaults on ``fold``; the Markdown section comparing them
    (``eval_fold_<k>.csv``: per case)."""
    import pandas as pd

    from shared_components.evaluation.formatting import fmt_ci, fmt_p
    from shared_components.evaluation.report import write_csv
    from shared_components.evaluation.statistics import bootstrap_ci, paired_wilcoxon
    from shared_components.experiments.runs import train_and_evaluate

    if fold == int(setup["fold"]):
        raise ValueError(f"--eval_fold must differ from the tuning fold {fold}: the gain would include selection bias.")
    bundle_dir = Path(setup["bundle_dir"])
    _check_fold(bundle_dir, fold, setup["common"], "--eval_fold")
    best = best_trial(st)
    root = Path(runs).resolve() if runs else Path(setup["out"]) / f"eval_fold_{fold}"
    configs = {"tuned": best.user_attrs.get("overrides", {}), "default": {}}
    dice = {}
    for name, overrides in configs.items():
        print(f"eval fold {fold}: training the {name} configuration in {root / name}", flush=True)
        rec = train_and_evaluate(bundle_dir, root / name, fold, *split_overrides(setup, overrides))
        if rec["status"] != "done":
            raise RuntimeError(f"the {name} run on fold {fold} failed: see {root / name / 'run.log'}")
        dice[name] = case_means(case_dice(root / name))
    cases = sorted(set(dice["tuned"]) & set(dice["default"]))
    t = [dice["tuned"][c] for c in cases]
    d = [dice["default"][c] for c in cases]
    diff = [a - b for a, b in zip(t, d, strict=True)]
    write_csv(out_dir / f"eval_fold_{fold}.csv", pd.DataFrame({"case": cases, "tuned": t, "default": d, "diff": diff}))
    p = paired_wilcoxon(t, d)
    mean = lambda x: sum(x) / len(x) if x else float("nan")  # noqa: E731
    return [
        f"## Held-out check on fold {fold}",
        "",
        f"The best configuration (trial {best.number}, chosen on fold {setup['fold']}) and the bundle's defaults, "
        f"each trained and evaluated on fold {fold} with the same budget and seed; {len(cases)} cases, mean "
        "foreground Dice per case [95% bootstrap CI], paired two-sided Wilcoxon signed-rank test.",
        "",
        "| configuration | Dice |",
        "|---|---|",
        f"| tuned (trial {best.number}) | {fmt_ci(mean(t), *bootstrap_ci(t))} |",
        f"| bundle defaults | {fmt_ci(mean(d), *bootstrap_ci(d))} |",
        f"| difference (tuned - defaults) | {fmt_ci(mean(diff), *bootstrap_ci(diff), digits=4)} |",
        "",
        f"Wilcoxon p = {fmt_p(p)} (n = {len(cases)}). Per case: `eval_fold_{fold}.csv`; runs in `{root}`.",
        "",
    ]
