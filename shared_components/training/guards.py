"""Fail-fast guards of a training run: stop at once with a message naming the case, instead of training on nothing
or on NaN and keeping a model.

:class:`FailFast` is the first of ``train#handlers`` (so it acts before validation and before ``RunCheckpoint``
saves; under ``multi_gpu_train.yaml`` it runs on every rank). It stops the run with :class:`TrainingAborted` (exit
status 1; ``RunCheckpoint`` marks the last saved state ``failed`` and keeps it) when

* the training data yields no batch, or there is no validation case (checked when the trainer is built: MONAI
  would skip the run, or never validate, and exit 0);
* a data-loading thread raised (MONAI's ``ThreadDataLoader`` prints the traceback, ends the epoch early and ignite
  restarts the loader, so batches are dropped silently): caught through ``threading.excepthook`` and reported with
  the case (:class:`~shared_components.data.datasets.CaseLoadError`);
* an epoch or a validation ran fewer iterations than its data loader holds (zero included);
* the loss is NaN/Inf, naming the cases of the batch (their image files, from the batch's metadata);
* the weights are no longer finite at an epoch end (checked before validation, so such weights are never kept).

Any other error in an iteration is logged with the batch's cases before the traceback.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events

from shared_components.data.datasets import FIX_LOAD, CaseLoadError

logger = logging.getLogger(__name__)

# threads whose death means lost data (MONAI's ThreadBuffer, torch's pin-memory thread)
LOADER_THREADS = ("enqueue_values", "_pin_memory_loop")
MAX_NAMED = 8  # cases named in a message


class TrainingAborted(RuntimeError):
    """The run cannot be trusted: stopped before anything of the failing epoch was kept."""


def batch_files(batch: Any, keys: Sequence[str] = ("image", "label")) -> list[str]:
    """The files of a batch's ``keys`` (a collated dict or a decollated list of dicts), each once, in order."""
    items = batch if isinstance(batch, list | tuple) else [batch]
    files: list[str] = []

    def add(name: Any) -> None:
        if isinstance(name, list | tuple):
            for n in name:
                add(n)
        elif name and str(name) not in files:
            files.append(str(name))

    for item in items:
        for key in keys if isinstance(item, Mapping) else ():
            meta = getattr(item.get(key), "meta", None) or item.get(f"{key}_meta_dict") or {}
            add(meta.get("filename_or_obj") if isinstance(meta, Mapping) else None)
    return files


def _describe(files: Sequence[str]) -> str:
    if not files:
        return "the batch (its files are unknown: the images carry no metadata)"
    shown = ", ".join(files[:MAX_NAMED]) + (f" and {len(files) - MAX_NAMED} more" if len(files) > MAX_NAMED else "")
    return f"the batch of {shown}"


def _loss(output: Any) -> Any:
    if isinstance(output, list | tuple):
        output = output[0] if output else None
    return output.get("loss") if isinstance(output, Mapping) else None


def _finite(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value.detach()).all())
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True


def _length(obj: Any) -> int | None:
    try:
        return len(obj)
    except TypeError:  # no length (an iterable dataset) or no object
        return None


def _error_text(error: BaseException) -> str:
    if isinstance(error, CaseLoadError) and error.case:
        return str(error)
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]  # a DataLoader worker's traceback
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"


class FailFast:
    """Stop a training run at the first sign that it cannot be trusted (see the module docstring).

    Args:
        validator: the evaluator run by ``ValidationHandler`` (its data and iterations are checked too).
        finite_loss: stop on a NaN/Inf loss.
        finite_weights: stop when a weight is NaN/Inf at an epoch end.
    """

    def __init__(self, validator: Engine | None = None, finite_loss: bool = True, finite_weights: bool = True):
        self.validator = validator
        self.finite_loss, self.finite_weights = bool(finite_loss), bool(finite_weights)
        self._count = self._val_count = 0
        self._thread_errors: list[tuple[str, BaseException]] = []
        self._lock = threading.Lock()
        self._previous_hook: Any = None
        self.engine: Engine | None = None
        self._reported: BaseException | None = None  # ignite fires EXCEPTION_RAISED twice for one error

    # -- wiring
    def attach(self, engine: Engine) -> None:
        self._check_data(engine)
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.DATALOADER_STOP_ITERATION, self._loader_stopped)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self._completed)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._exception)
        if self.validator is not None:
            self.validator.add_event_handler(Events.STARTED, self._val_started)
            self.validator.add_event_handler(Events.ITERATION_COMPLETED, self._val_iteration)
            self.validator.add_event_handler(Events.DATALOADER_STOP_ITERATION, self._val_loader_stopped)
            self.validator.add_event_handler(Events.COMPLETED, self._val_completed)

    def _check_data(self, engine: Engine) -> None:
        loader = getattr(engine, "data_loader", None)
        if _length(loader) == 0:
            cases = _length(getattr(loader, "dataset", None))
            size = getattr(loader, "batch_size", None)
            drop = ", drop_last" if getattr(loader, "drop_last", False) else ""
            raise TrainingAborted(
                f"the training data loader yields no batch ({cases} training case(s), batch size {size}{drop}): "
                "nothing would train. Check the fold and the datalist (--fold, --datalist), or lower --batch_size."
            )
        if self.validator is not None:
            val_loader = getattr(self.validator, "data_loader", None)
            # the whole validation set: under DDP one rank's share may be empty when there are fewer cases than ranks
            if _length(getattr(val_loader, "dataset", val_loader)) == 0:
                raise TrainingAborted(
                    "there are no validation cases: the run would never validate and keep no best model. Check "
                    "--fold and the datalist (--datalist)."
                )

    # -- data-loading threads
    def _thread_exception(self, args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread is not None else "?"
        error = args.exc_value
        if error is not None and (isinstance(error, CaseLoadError) or any(t in name for t in LOADER_THREADS)):
            with self._lock:
                self._thread_errors.append((name, error))
        (self._previous_hook or threading.__excepthook__)(args)

    def _install_hook(self) -> None:
        if self._previous_hook is None:
            self._previous_hook = threading.excepthook
            threading.excepthook = self._thread_exception

    def _restore_hook(self) -> None:
        if self._previous_hook is not None:
            threading.excepthook = self._previous_hook
            self._previous_hook = None

    def _raise_thread_error(self, engine: Engine, what: str) -> None:
        with self._lock:
            if not self._thread_errors:
                return
            name, error = self._thread_errors[0]
        where = f"epoch {self._epoch(engine)}, {what}"
        raise TrainingAborted(f"data loading failed ({where}, thread {name}): {_error_text(error)} -> {FIX_LOAD}")

    def _epoch(self, engine: Engine) -> int:
        trainer = self.engine if engine is self.validator else engine
        return int(trainer.state.epoch) if trainer is not None else 0

    # -- training events
    def _started(self, engine: Engine) -> None:
        self.engine = engine
        with self._lock:
            self._thread_errors.clear()
        self._install_hook()

    def _epoch_started(self, engine: Engine) -> None:
        self._count = 0

    def _iteration(self, engine: Engine) -> None:
        self._count += 1
        self._raise_thread_error(engine, "training")
        if self.finite_loss:
            loss = _loss(engine.state.output)
            if loss is not None and not _finite(loss):
                value = float(loss.detach().float().mean()) if isinstance(loss, torch.Tensor) else loss
                raise TrainingAborted(
                    f"the loss is {value} at epoch {engine.state.epoch}, iteration {engine.state.iteration}, on "
                    f"{_describe(batch_files(engine.state.batch))}: check their intensities (huge or NaN values; "
                    "`segbundles prepare check <datalist> --level full`) or lower the learning rate; nothing of this "
                    "epoch is kept"
                )

    def _loader_stopped(self, engine: Engine) -> None:
        self._raise_thread_error(engine, "training")
        expected = engine.state.epoch_length
        if self._count and expected == _length(getattr(engine, "data_loader", None)):
            raise TrainingAborted(
                f"the training data loader stopped after {self._count} of the {expected} batches of epoch "
                f"{engine.state.epoch}: cases were dropped"
            )

    def _epoch_completed(self, engine: Engine) -> None:
        self._raise_thread_error(engine, "training")
        expected = engine.state.epoch_length
        if (
            expected
            and self._count < expected
            and not (engine.should_terminate or engine.should_terminate_single_epoch)
        ):
            raise TrainingAborted(
                f"epoch {engine.state.epoch} ran {self._count} of its {expected} iterations: the training data loader "
                "stopped early, so cases were not trained on"
            )
        network = getattr(engine, "network", None)
        if self.finite_weights and isinstance(network, torch.nn.Module):
            params = [p for p in network.parameters() if p.is_floating_point()]
            if params and not bool(torch.stack([torch.isfinite(p.detach()).all() for p in params]).all()):
                bad = [n for n, p in network.named_parameters() if p.is_floating_point() and not _finite(p)]
                raise TrainingAborted(
                    f"the weights are NaN/Inf after epoch {engine.state.epoch} ({', '.join(bad[:3])}"
                    f"{', ...' if len(bad) > 3 else ''}): lower the learning rate; nothing of this epoch is kept"
                )

    def _completed(self, engine: Engine) -> None:
        self._restore_hook()

    def _exception(self, engine: Engine, error: BaseException) -> None:
        self._restore_hook()
        quiet = isinstance(error, TrainingAborted | SystemExit | KeyboardInterrupt) or error is self._reported
        if not quiet and engine.state.batch is not None:
            self._reported = error
            logger.error(
                f"training failed at epoch {engine.state.epoch}, iteration {engine.state.iteration}, on "
                f"{_describe(batch_files(engine.state.batch))} ({type(error).__name__}: {error})"
            )
        handlers = engine._event_handlers.get(Events.EXCEPTION_RAISED, [])
        if not handlers or getattr(handlers[-1][0], "__self__", None) is self:
            raise error  # no handler after this one re-raises it (ignite would swallow it)

    # -- validation events
    def _val_started(self, validator: Engine) -> None:
        self._val_count = 0

    def _val_iteration(self, validator: Engine) -> None:
        self._val_count += 1
        self._raise_thread_error(validator, "validation")

    def _val_loader_stopped(self, validator: Engine) -> None:
        self._raise_thread_error(validator, "validation")
        raise TrainingAborted(
            f"the validation data loader stopped after {self._val_count} of its {validator.state.epoch_length} "
            f"cases (epoch {self._epoch(validator)}): cases were not validated"
        )

    def _val_completed(self, validator: Engine) -> None:
        self._raise_thread_error(validator, "validation")
        expected = validator.state.epoch_length
        if expected and self._val_count < expected and not validator.should_terminate:
            raise TrainingAborted(
                f"the validation of epoch {self._epoch(validator)} ran {self._val_count} of its {expected} cases: "
                "its metric would not be comparable"
            )
