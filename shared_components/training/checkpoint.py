"""Run folders: the full training state saved atomically, resume, best weights that only improve, promotion.

A training run writes into its run folder ``run_dir`` (default ``<bundle>/runs/fold<F>_seed<S>``):

* ``train_state.pt``: everything ``--resume true`` needs to continue exactly (network, optimizer, LR scheduler,
  trainer epoch/iteration, AMP GradScaler, TimeBudget plan, history rows, best metric, torch/numpy/Python RNG states,
  the run signature); rewritten atomically at every epoch end (after its validation), marked finished at the end.
  ``train_state.json`` is its summary (status ``running``/``stopped``/``failed``/``finished``, epoch, reason).
* ``best_model.pt``: the run's chosen weights (a bare state dict, like ``models/model.pt``) and ``best_model.json``
  (metric, epoch, iteration, time, config hash, signature, sha256 of the weights, ``choice``). With ``checkpoint``
  ``best`` (the default) they are the best by validation metric, replaced only by a strictly better one, also across
  reruns of the same folder; with ``final`` they are the weights of the last epoch, written when the run finishes
  (nnU-Net's practice: no checkpoint is chosen on any data, so every case outside the training folds stays unseen).
* ``config.json``: the merged config the run was started with and its signature (written when a run starts).
* ``logs/``: ``history.csv`` and TensorBoard events (``log_dir``).

``models/model.pt`` (``ckpt_dir``; what inference, evaluation and MONAI Label use) receives the run's best weights
("promotion") only when it did not exist when the run started, when ``ckpt_dir`` lies inside the run folder, with
``--promote true``, or under MONAI Label (whose /train must keep updating it: each MONAI Label training starts its
run folder afresh). A resumed run must match the stored signature; a new run into a folder holding an unfinished
run is refused (``--resume true``, ``--run_name NEW`` or ``--overwrite true`` say what to do instead). SIGTERM and
SIGINT stop the trainer at the next iteration and exit 143/130 with one line; the folder then holds the state of the
last completed epoch, which is where a resume continues (exactly, see :mod:`shared_components.data.seeding`).

Test hook: ``SEG_TRAIN_HOOK=<kill|term>@<point>:<epoch>`` sends this process SIGKILL or SIGTERM at a named point of
that (1-based) epoch: ``iteration`` (after its first training iteration), ``validation`` (after the first validation
case) or ``checkpoint`` (train_state.pt written to its temporary file, not yet renamed). Used by tests/test_resume.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from shared_components.data.seeding import rng_state, set_rng_state
from shared_components.files import atomic_path, write_bytes_atomic, write_text_atomic
from shared_components.training.handlers import EpochHistory, TimeBudget, attached_handler

logger = logging.getLogger(__name__)

STATE, STATE_JSON = "train_state.pt", "train_state.json"
CHOICES = ("best", "final")  # which weights a run keeps (RunCheckpoint's ``checkpoint``)
BEST, BEST_JSON = "best_model.pt", "best_model.json"
CONFIG = "config.json"
FORMAT = 1
# signature entries a rerun (without --resume) must share with the folder's best weights for their validation
# metrics to be comparable (and the weights to load into the same network)
COMPARABLE = ("network_def", "patch_size", "num_classes", "multilabel", "preprocessing_args", "val_data", "checkpoint")
# signature entries stored only when they differ from these values, so runs from before they existed still resume
SIGNATURE_DEFAULTS = {"cpu_bf16": False}
HOOK_ENV = "SEG_TRAIN_HOOK"
_EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}
_LONG = 200  # signature values longer than this (as JSON) are stored as a digest


class RunRefused(SystemExit):
    """The run folder's state does not allow this run; the message says what to do (exit status 1)."""


class Stopped(SystemExit):
    """Training stopped by a signal after its state was kept; exit status 143 (SIGTERM) or 130 (SIGINT)."""


# ---- signatures -------------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, torch.nn.Module):
        return re.sub(r"0x[0-9a-fA-F]+", "0x", repr(getattr(value, "module", value)))
    if isinstance(value, torch.Tensor | np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return re.sub(r"0x[0-9a-fA-F]+", "0x", repr(value))


def _digest(data: bytes | str, n: int = 16) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()[:n]


def normalize_signature(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """Resolved config values as plain JSON (networks by their ``repr``); long values as ``sha256:<digest>``."""
    out: dict[str, Any] = {}
    for key, value in (values or {}).items():
        plain = _plain(value)
        text = json.dumps(plain, sort_keys=True)
        out[str(key)] = plain if len(text) <= _LONG else f"sha256:{_digest(text)}"
    return out


def signature_hash(signature: Mapping[str, Any]) -> str:
    """A short hash of a normalised signature (the "config hash" of a run)."""
    return _digest(json.dumps(signature, sort_keys=True), 12)


def signature_diff(stored: Mapping[str, Any], current: Mapping[str, Any], keys: Sequence[str] | None = None) -> list:
    """``[(key, stored, current)]`` for the entries that differ (over ``keys``, default all of both)."""
    names = keys if keys is not None else sorted(set(stored) | set(current))
    return [
        (k, stored.get(k, "<absent>"), current.get(k, "<absent>")) for k in names if stored.get(k) != current.get(k)
    ]


def _describe_diff(diff: list) -> str:
    def short(v: Any) -> str:
        text = json.dumps(v) if not isinstance(v, str) else v
        return "changed" if text.startswith("sha256:") else text

    parts = []
    for key, old, new in diff:
        old_s, new_s = short(old), short(new)
        parts.append(key if "changed" in (old_s, new_s) else f"{key} ({old_s} -> {new_s})")
    return ", ".join(parts)


# ---- files ------------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def _state_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _file_sha(path: Path) -> str | None:
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """A ``train_state.pt`` (our own file: numpy and Python RNG states need the full unpickler)."""
    return torch.load(path, map_location="cpu", weights_only=False)


def run_status(run_dir: str | os.PathLike) -> str | None:
    """The status of the run in ``run_dir`` (``running``, ``stopped``, ``failed``, ``finished``), ``None`` if none."""
    run_dir = Path(run_dir)
    if not (run_dir / STATE).is_file():
        return None
    return _read_json(run_dir / STATE_JSON).get("status") or "running"


def under_monailabel() -> bool:
    """Whether MONAI Label runs this training: in its process, or through the ``monailabel_train.json`` it writes
    for multi-GPU training."""
    return "monailabel" in sys.modules or any("monailabel_train.json" in str(a) for a in sys.argv)


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _calling_config() -> Any:
    """The merged config of the ``ConfigParser`` instantiating the caller, if any (for ``config.json``)."""
    from monai.bundle import ConfigParser

    frame = sys._getframe(1)
    while frame is not None:
        parser = frame.f_locals.get("self")
        if isinstance(parser, ConfigParser):
            return parser.get()
        frame = frame.f_back
    return None


def _hook(point: str, epoch: int) -> None:
    """The test hook of the module docstring (``SEG_TRAIN_HOOK``)."""
    spec = os.environ.get(HOOK_ENV)
    if not spec:
        return
    action, _, where = spec.partition("@")
    name, _, at = where.partition(":")
    if name == point and at.isdigit() and int(at) == epoch:
        os.environ.pop(HOOK_ENV)  # once
        os.kill(os.getpid(), signal.SIGKILL if action == "kill" else signal.SIGTERM)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _rank() -> int:
    return torch.distributed.get_rank() if _distributed() else 0


def _unwrap(network: torch.nn.Module) -> torch.nn.Module:
    return getattr(network, "module", network)


# ---- the handler ------------------------------------------------------------------------------------------------


class RunCheckpoint:
    """Keep a training run's folder (see the module docstring); attach it last, after the handlers whose state it
    saves (validation, LR scheduler, ``TimeBudget``, ``EpochHistory``).

    Args:
        run_dir: the run folder.
        ckpt_dir: the folder of ``model_filename`` (``models/model.pt``), the promotion target.
        network, optimizer, lr_scheduler: what the trainer trains (``network`` may be DDP-wrapped).
        validator: the evaluator whose key metric picks the best weights.
        signature: the config values a resume must match (``run_signature`` of train.yaml), resolved.
        resume: continue the run in ``run_dir`` (starts one when there is none).
        promote: write the best weights to ``models/model.pt`` even if it existed before the run.
        overwrite: discard ``run_dir``'s earlier run (state and best weights) instead of refusing.
        checkpoint: ``best`` (validation metric picks the weights) or ``final`` (the last epoch's weights).
    """

    def __init__(
        self,
        run_dir: str,
        ckpt_dir: str,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_scheduler: Any = None,
        validator: Engine | None = None,
        signature: Mapping[str, Any] | None = None,
        resume: bool = False,
        promote: bool = False,
        overwrite: bool = False,
        model_filename: str = "model.pt",
        checkpoint: str = "best",
    ):
        if checkpoint not in CHOICES:
            raise ValueError(f"checkpoint={checkpoint!r} must be one of {', '.join(CHOICES)}.")
        self.choice = checkpoint
        self.run_dir, self.ckpt_dir = Path(run_dir), Path(ckpt_dir)
        self.model_path = self.ckpt_dir / model_filename
        self.network, self.optimizer, self.lr_scheduler, self.validator = network, optimizer, lr_scheduler, validator
        self.signature = normalize_signature(signature)
        if checkpoint != "best":  # only then: the signatures of earlier (best-weights) runs stay valid for resume
            self.signature["checkpoint"] = checkpoint
        for key, default in SIGNATURE_DEFAULTS.items():  # likewise: entries newer than some runs, kept when set
            if self.signature.get(key, default) == default:
                self.signature.pop(key, None)
        self.config_hash = signature_hash(self.signature)
        self.monailabel = under_monailabel()
        self.resume = bool(resume) and not self.monailabel
        self.promote = bool(promote) or self.monailabel
        self.overwrite = bool(overwrite) or self.monailabel
        self.config = _calling_config()
        self.engine: Engine | None = None
        self.best: dict[str, Any] = {}  # best_model.json of the folder
        self.promoting = False
        self._signal = 0
        self._previous: dict[int, Any] = {}
        self._val_epoch, self._val_metric, self._val_partial = -1, None, False
        self._t0 = time.time()
        self._elapsed0 = 0.0
        self._resume_from = self._check()

    @property
    def state_path(self) -> Path:
        return self.run_dir / STATE

    # -- before training: what the folder allows
    def _check(self) -> dict[str, Any] | None:
        """The state to resume from, or ``None`` for a new run; raises :class:`RunRefused`."""
        path = self.state_path
        if self.overwrite and not self.resume:
            return None
        prev = None
        if path.is_file():
            try:
                prev = load_state(path)
            except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
                raise RunRefused(
                    f"{path} cannot be read ({type(e).__name__}: {e}); pass --overwrite true to start the run over, "
                    "or --run_name NEW for a new folder."
                ) from e
        if self.resume:
            if prev is None:
                logger.info(f"--resume true: no run in {self.run_dir} yet, starting it")
                return None
            diff = signature_diff(prev.get("signature", {}), self.signature)
            if diff:
                raise RunRefused(
                    f"cannot resume {self.run_dir}: its run was started with a different config: "
                    f"{_describe_diff(diff)}. Resume with the original values, or start a new run with --run_name NEW "
                    "(or --overwrite true to discard that one)."
                )
            return prev
        if prev is not None and prev.get("status") != "finished":
            raise RunRefused(
                f"{self.run_dir} holds an unfinished run (saved after epoch {prev.get('epoch')}/"
                f"{prev.get('max_epochs')}). Continue it with --resume true, start another with --run_name NEW, or "
                "discard it with --overwrite true."
            )
        best = _read_json(self.run_dir / BEST_JSON)
        if best and (self.run_dir / BEST).is_file():
            diff = signature_diff(best.get("signature", {}), self.signature, COMPARABLE)
            if diff:
                raise RunRefused(
                    f"{self.run_dir / BEST} comes from a run with a different {_describe_diff(diff)}: its validation "
                    "metric is not comparable with this run's. Start a new run with --run_name NEW, or discard the old "
                    "one with --overwrite true."
                )
        return None

    # -- wiring
    def attach(self, engine: Engine) -> None:
        self.engine = engine
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)
        engine.add_event_handler(Events.COMPLETED, self._completed)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._exception)
        engine.logger.addFilter(self._quiet_stop)
        if self.validator is not None:
            self.validator.add_event_handler(Events.ITERATION_COMPLETED, self._val_iteration)
            self.validator.add_event_handler(Events.COMPLETED, self._validated)

    def _quiet_stop(self, record: logging.LogRecord) -> bool:
        # ignite logs every exception leaving a run; a Stopped exit already said what happened in one line
        return not (self._signal and "terminating due to exception" in record.getMessage())

    # -- events
    def _started(self, engine: Engine) -> None:
        self._install_signals()
        state, self._resume_from = self._resume_from, None
        rank0 = _rank() == 0
        if state is not None:
            self._restore(engine, state)
            logger.info(
                f"resuming {self.run_dir} after epoch {engine.state.epoch}/{engine.state.max_epochs} "
                f"(iteration {engine.state.iteration})"
            )
        else:
            inside = _inside(self.ckpt_dir, self.run_dir)
            self.promoting = self.promote or inside or not self.model_path.exists()
            if rank0:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                # the state always describes the latest run (a finished one's is replaced); best weights stay
                # unless discarded (--overwrite true)
                for name in (STATE, STATE_JSON, BEST, BEST_JSON) if self.overwrite else (STATE, STATE_JSON):
                    (self.run_dir / name).unlink(missing_ok=True)
                config = {"run_dir": str(self.run_dir), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
                config |= {"argv": sys.argv, "config_hash": self.config_hash, "signature": self.signature}
                _write_json(self.run_dir / CONFIG, config | {"config": self.config})
            where = "promoted to" if self.promoting else "kept apart from"
            logger.info(f"run folder {self.run_dir} (best weights {where} {self.model_path})")
        if rank0:
            for name in (STATE, STATE_JSON, BEST, BEST_JSON, CONFIG):  # temporaries of a killed write
                for stale in self.run_dir.glob(f".{name}.*.tmp"):
                    stale.unlink(missing_ok=True)
        self.best = _read_json(self.run_dir / BEST_JSON) if (self.run_dir / BEST).is_file() else {}
        self._t0 = time.time()

    def _restore(self, engine: Engine, state: dict[str, Any]) -> None:
        _unwrap(self.network).load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.lr_scheduler is not None and state.get("lr_scheduler") is not None:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        scaler = getattr(engine, "scaler", None)
        if scaler is not None and state.get("scaler"):  # empty when AMP is off
            scaler.load_state_dict(state["scaler"])
        engine.load_state_dict(state["trainer"])
        budget, plan = attached_handler(engine, TimeBudget), state.get("time_budget")
        if budget is not None and plan:
            budget._t0 = time.perf_counter() - plan["elapsed"]
            budget._configured = plan["configured"]
        history = attached_handler(engine, EpochHistory)
        if history is not None and state.get("history") is not None:
            history.rows = [dict(r) for r in state["history"]]
        if self.validator is not None and state.get("validator_best"):
            self.validator.state.best_metric, self.validator.state.best_metric_epoch = state["validator_best"]
        self.promoting = bool(state.get("promoting")) or self.promote or _inside(self.ckpt_dir, self.run_dir)
        self._elapsed0 = float(state.get("elapsed_seconds", 0.0))
        set_rng_state(state["rng"])  # last: nothing above may draw from the generators

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signal = signum
        self._restore_signals()  # a second signal acts at once
        if not _distributed():  # under DDP the ranks agree first (see _agree), so none waits on the others
            if self.engine is not None:
                self.engine.terminate()
            if self.validator is not None:
                self.validator.terminate()

    def _agree(self) -> None:
        if not _distributed():
            return
        device = (
            torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" else None
        )
        flag = torch.tensor([float(self._signal)], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item() > 0:
            self._signal = self._signal or int(flag.item())
            self.engine.terminate()

    def _iteration(self, engine: Engine) -> None:
        if engine.state.iteration == (engine.state.epoch - 1) * (engine.state.epoch_length or 0) + 1:
            _hook("iteration", engine.state.epoch)
        self._agree()

    def _val_iteration(self, validator: Engine) -> None:
        if validator.state.iteration == 1 and self.engine is not None:
            _hook("validation", self.engine.state.epoch)

    def _validated(self, validator: Engine) -> None:
        self._val_epoch = self.engine.state.epoch if self.engine is not None else -1
        self._val_partial = bool(validator.should_terminate)
        name = validator.state.key_metric_name
        value = validator.state.metrics.get(name) if name else None
        self._val_metric = float(value) if value is not None else None

    def _epoch(self, engine: Engine) -> None:
        validated = self._val_epoch == engine.state.epoch
        if validated and self._val_partial:
            return  # validation cut short by a signal: resume redoes this epoch from the last saved one
        if validated and self.choice == "best":
            self._update_best(engine)
        self._save(engine, "running")
        self._agree()

    def _completed(self, engine: Engine) -> None:
        if self._signal:
            self._stop(engine)
        if self.choice == "final":
            self._keep(engine, self._val_metric if self._val_epoch == engine.state.epoch else None)
        self._save(engine, "finished")
        self._restore_signals()
        if _rank() != 0:
            return
        best_file, key = self.run_dir / BEST, self.best.get("metric_name", "metric")
        what = f"best {key} {self.best['metric']:.4f} at epoch {self.best.get('epoch')}" if self.best else "no best"
        if self.choice == "final":
            metric = self.best.get("metric")
            what = f"final weights of epoch {self.best.get('epoch')}" + (
                f" ({key} {metric:.4f})" if metric is not None else ""
            )
        if self.promoting and best_file.is_file():
            if _file_sha(self.model_path) != _file_sha(best_file):
                write_bytes_atomic(self.model_path, best_file.read_bytes())
            logger.info(f"run {self.run_dir} finished: {what}, promoted to {self.model_path}")
        elif best_file.is_file():
            logger.info(
                f"run {self.run_dir} finished: {what} in {best_file}; {self.model_path} kept (it existed before "
                "this run). To use these weights, run the same command with --resume true --promote true."
            )
        else:
            logger.info(f"run {self.run_dir} finished: no validation ran, so no best weights; state in {STATE}")

    def _stop(self, engine: Engine) -> None:
        name = signal.Signals(self._signal).name
        saved = _read_json(self.run_dir / STATE_JSON)
        if _rank() == 0:
            if saved:
                _write_json(self.run_dir / STATE_JSON, saved | {"status": "stopped", "reason": name})
            at = f"epoch {engine.state.epoch}"
            kept = f"state of epoch {saved.get('epoch')} kept" if saved else "nothing saved yet"
            logger.warning(f"stopped by {name} at {at} ({kept} in {self.run_dir}); resume with --resume true")
        self._restore_signals()
        raise Stopped(_EXIT_CODES.get(self._signal, 128 + self._signal))

    def _exception(self, engine: Engine, e: BaseException) -> None:
        self._restore_signals()
        if isinstance(e, SystemExit):
            raise e
        if isinstance(e, KeyboardInterrupt):  # a second Ctrl-C
            self._signal = signal.SIGINT
            self._stop(engine)
        saved = _read_json(self.run_dir / STATE_JSON)
        if _rank() == 0 and saved:
            error = f"{type(e).__name__}: {e}"[:2000]
            _write_json(self.run_dir / STATE_JSON, saved | {"status": "failed", "reason": error})
            logger.error(
                f"training failed in epoch {engine.state.epoch} ({type(e).__name__}); the state of epoch "
                f"{saved.get('epoch')} is kept in {self.run_dir}: resume with --resume true once fixed"
            )
        raise e

    # -- saving
    def _update_best(self, engine: Engine) -> None:
        metric = self._val_metric
        if metric is None or not math.isfinite(metric):
            return
        cmp = getattr(self.validator, "metric_cmp_fn", lambda a, b: a > b)
        if self.best and not cmp(metric, float(self.best["metric"])):
            return
        self._keep(engine, metric)

    def _keep(self, engine: Engine, metric: float | None) -> None:
        """Write the network's current weights as the run's chosen ones (best_model.pt/.json), promoted if so."""
        self.best = {
            "choice": self.choice,
            "metric_name": self.validator.state.key_metric_name if self.validator is not None else None,
            "metric": metric,
            "epoch": engine.state.epoch,
            "iteration": engine.state.iteration,
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "config_hash": self.config_hash,
        }
        if _rank() != 0:
            return
        data = _state_bytes(_unwrap(self.network).state_dict())
        sha = hashlib.sha256(data).hexdigest()
        # the metric first: a kill between the two writes leaves weights no better than the stored metric says
        _write_json(self.run_dir / BEST_JSON, self.best | {"sha256": sha, "signature": self.signature})
        write_bytes_atomic(self.run_dir / BEST, data)
        if self.promoting:
            write_bytes_atomic(self.model_path, data)

    def _save(self, engine: Engine, status: str) -> None:
        if _rank() != 0:
            return
        budget = attached_handler(engine, TimeBudget)
        history = attached_handler(engine, EpochHistory)
        scaler = getattr(engine, "scaler", None)
        v = self.validator
        elapsed = self._elapsed0 + time.time() - self._t0
        state = {
            "format": FORMAT,
            "status": status,
            "epoch": engine.state.epoch,
            "iteration": engine.state.iteration,
            "max_epochs": engine.state.max_epochs,
            "trainer": engine.state_dict(),
            "network": _unwrap(self.network).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict() if self.lr_scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "time_budget": (
                {"elapsed": time.perf_counter() - budget._t0, "configured": budget._configured}
                if budget is not None and budget.seconds is not None
                else None
            ),
            "history": [dict(r) for r in history.rows] if history is not None else None,
            "validator_best": (v.state.best_metric, v.state.best_metric_epoch) if v is not None else None,
            "best": dict(self.best),
            "promoting": self.promoting,
            "signature": self.signature,
            "config_hash": self.config_hash,
            "elapsed_seconds": elapsed,
            "saved": time.strftime("%Y-%m-%d %H:%M:%S"),
            "rng": rng_state(),
        }
        with atomic_path(self.state_path) as tmp:
            torch.save(state, tmp)
            _hook("checkpoint", engine.state.epoch)
        summary = {k: state[k] for k in ("status", "epoch", "iteration", "max_epochs", "config_hash", "saved")}
        _write_json(self.run_dir / STATE_JSON, summary | {"elapsed_seconds": round(elapsed, 1), "best": self.best})

    # -- signals
    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # e.g. a server running training in a worker thread: it handles signals itself
        for sig in _EXIT_CODES:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def _restore_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        while self._previous:
            sig, handler = self._previous.popitem()
            signal.signal(sig, handler)


def eval_checkpoint(run_dir: str, ckpt_dir: str, model_filename: str = "model.pt") -> str:
    """The weights evaluation loads: the run folder's best weights when the run exists, else ``models/model.pt``;
    logs which file and the metric stored with it."""
    run_dir, model = Path(run_dir), Path(ckpt_dir) / model_filename
    best = run_dir / BEST
    path = best if best.is_file() else model
    sha = _file_sha(path)
    info = _read_json(run_dir / BEST_JSON) if path == best else {}
    if not info and sha is not None and run_dir.parent.is_dir():  # promoted weights: find the run they came from
        for candidate in sorted(run_dir.parent.glob(f"*/{BEST_JSON}"))[:200]:
            found = _read_json(candidate)
            if found.get("sha256") == sha:
                info = found | {"run": str(candidate.parent)}
                break
    if info and info.get("sha256") not in (None, sha):
        detail = "its best_model.json describes other weights (interrupted write)"
    elif info:
        source = f", from {info['run']}" if "run" in info else ""
        metric = info.get("metric")
        scored = f"{info.get('metric_name') or 'metric'} {metric:.4f}" if metric is not None else "no validation"
        what = "final weights" if info.get("choice") == "final" else "best weights"
        detail = f"{what}, {scored} at epoch {info.get('epoch')}{source}"
    else:
        detail = "no stored validation metric"
    if _rank() == 0:
        logger.info(f"evaluating {path} ({detail}); choose another file with --eval_checkpoint PATH")
    return str(path)
