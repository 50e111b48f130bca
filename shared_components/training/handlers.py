"""Training handlers: scheduler stepping that understands ReduceLROnPlateau, and a per-epoch history CSV."""

from __future__ import annotations

import csv
import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.handlers import LrScheduleHandler, ValidationHandler
from torch.optim.lr_scheduler import ReduceLROnPlateau

from shared_components.files import atomic_path
from shared_components.training.presets import refit_scheduler

logger = logging.getLogger(__name__)


class LrSchedule:
    """Step an LR scheduler once per training epoch; a ``ReduceLROnPlateau`` scheduler is instead stepped after
    each validation run with the validator's key metric, so stale metrics never count as stalled epochs."""

    def __init__(self, lr_scheduler: Any, validator: Engine | None = None, print_lr: bool = True):
        self.lr_scheduler = lr_scheduler
        self.validator = validator
        self.print_lr = print_lr

    def attach(self, engine: Engine) -> None:
        if isinstance(self.lr_scheduler, ReduceLROnPlateau):
            if self.validator is None:
                raise ValueError("scheduler 'plateau' needs a validator (validate#evaluator) to read its metric from.")
            LrScheduleHandler(
                self.lr_scheduler,
                print_lr=self.print_lr,
                step_transform=lambda e: e.state.metrics[e.state.key_metric_name],
            ).attach(self.validator)
        else:
            LrScheduleHandler(self.lr_scheduler, print_lr=self.print_lr, epoch_level=True).attach(engine)


def peak_ram_mb() -> float:
    """Peak resident memory of this process in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


class EpochHistory:
    """Write ``history.csv`` (epoch, loss, lr, seconds, validation metrics, peak RAM/VRAM) after every epoch and
    log a one-line summary; the file is rewritten atomically, so a killed run leaves a complete history."""

    FILE = "history.csv"

    def __init__(self, log_dir: str, validator: Engine | None = None, filename: str = FILE):
        self.path = Path(log_dir) / filename
        self.validator = validator
        self.rows: list[dict[str, Any]] = []
        self._losses: list[float] = []
        self._t0 = 0.0
        self._validated_epoch = -1

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)
        if self.validator is not None:
            self.validator.add_event_handler(
                Events.COMPLETED, lambda _: setattr(self, "_validated_epoch", engine.state.epoch)
            )

    def _start(self, engine: Engine) -> None:
        self._losses, self._t0 = [], time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def _iteration(self, engine: Engine) -> None:
        out = engine.state.output
        loss = out[0]["loss"] if isinstance(out, list) else out.get("loss") if isinstance(out, dict) else None
        if loss is not None:
            self._losses.append(float(loss.detach() if isinstance(loss, torch.Tensor) else loss))

    def _epoch(self, engine: Engine) -> None:
        opt = getattr(engine, "optimizer", None)
        row: dict[str, Any] = {
            "epoch": engine.state.epoch,
            "loss": sum(self._losses) / max(len(self._losses), 1),
            "lr": opt.param_groups[0]["lr"] if opt is not None else float("nan"),
            "epoch_seconds": time.perf_counter() - self._t0,
            "peak_ram_mb": peak_ram_mb(),
            "peak_vram_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0,
        }
        v = self.validator
        validated = v is not None and self._validated_epoch == engine.state.epoch
        if validated:
            row.update({k: float(m) for k, m in v.state.metrics.items() if _is_scalar(m)})
        self.rows.append(row)
        self._write()
        msg = f"epoch {row['epoch']}/{engine.state.max_epochs} loss {row['loss']:.4f} lr {row['lr']:.2e} "
        msg += f"{row['epoch_seconds']:.1f}s"
        if validated and v.state.key_metric_name in v.state.metrics:
            msg += f" {v.state.key_metric_name} {v.state.metrics[v.state.key_metric_name]:.4f}"
            msg += f" (best {v.state.best_metric:.4f} at epoch {v.state.best_metric_epoch})"
        logger.info(msg)

    def _write(self) -> None:
        fields: list[str] = []
        for r in self.rows:
            fields += [k for k in r if k not in fields]
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(self.rows)


def _is_scalar(v: Any) -> bool:
    return isinstance(v, int | float) or (isinstance(v, torch.Tensor) and v.numel() == 1)


def attached_handler(engine: Engine, cls: type) -> Any:
    """The first ``cls`` instance attached to ``engine``: as a bound method handling one of its events (e.g.
    ``TimeBudget``) or as the callable itself, also behind an event filter (MONAI's ``ValidationHandler``)."""
    for handlers in engine._event_handlers.values():
        for handler, *_ in handlers:
            handler = getattr(handler, "__wrapped__", handler)  # ignite wraps filtered handlers
            for owner in (handler, getattr(handler, "__self__", None)):
                if isinstance(owner, cls):
                    return owner
    return None


class TimeBudget:
    """Fit training into ``minutes`` of wall time (``None``: no budget).

    After every epoch the run is re-planned from the mean epoch time so far (validation included): the number of
    epochs shrinks to what still fits (never past the configured ``max_epochs``), and ``lr_scheduler`` is refitted
    to that length with :func:`refit_scheduler`. Every model under a
    common budget thus completes its schedule (warm-up to final decay) instead of being cut off at a high learning
    rate. Training stops once the next epoch would not
    fit. Under ``torch.distributed`` the ranks agree on the plan and the stop, so no rank waits forever.

    With or without a budget, the last epoch is validated when the interval skips it (a budget that fits fewer
    epochs than ``val_interval``, or ``max_epochs`` not a multiple of it): every run ends with evaluated weights, so
    its best checkpoint exists.
    """

    def __init__(self, minutes: float | None = None, lr_scheduler: Any = None, val_interval: int = 1):
        self.seconds = None if minutes is None else float(minutes) * 60.0
        self.lr_scheduler = lr_scheduler
        self.val_interval = max(int(val_interval), 1)
        self._t0 = 0.0
        self._configured = 0

    def attach(self, engine: Engine) -> None:
        if self.seconds is not None:
            engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._check)

    def _validate_last(self, engine: Engine) -> None:
        """Run the trainer's ValidationHandler on this (final) epoch unless its interval just did."""
        validation = attached_handler(engine, ValidationHandler)
        if validation is not None and engine.state.epoch % self.val_interval != 0:
            logger.info(f"validating the final epoch {engine.state.epoch} (val_interval {self.val_interval} skips it)")
            validation(engine)

    def _start(self, engine: Engine) -> None:
        self._t0, self._configured = time.perf_counter(), engine.state.max_epochs

    def _check(self, engine: Engine) -> None:
        elapsed, done = time.perf_counter() - self._t0, engine.state.epoch
        if done >= engine.state.max_epochs:
            self._validate_last(engine)
            return
        if self.seconds is None:
            return
        # every epoch that fits is trained: the last one is validated even where the interval skips it
        fits = done + int((self.seconds - elapsed) // (elapsed / done)) if elapsed < self.seconds else done
        plan = torch.tensor([float(elapsed > self.seconds), float(max(min(fits, self._configured), done))])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(plan[:1], op=torch.distributed.ReduceOp.MAX)
            torch.distributed.all_reduce(plan[1:], op=torch.distributed.ReduceOp.MIN)
        over, planned = plan[0].item() > 0, int(plan[1].item())
        if over or planned <= done:
            why = "spent" if over else "too short for another epoch"
            logger.info(f"time budget of {self.seconds / 60:.1f} min {why}: stopping after epoch {done}")
            self._validate_last(engine)
            engine.terminate()
        elif planned != engine.state.max_epochs:
            logger.info(f"time budget: {planned} epochs fit in {self.seconds / 60:.1f} min; schedule refitted")
            engine.state.max_epochs = planned
            if self.lr_scheduler is not None:
                refit_scheduler(self.lr_scheduler, planned)
