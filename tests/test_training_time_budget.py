"""TimeBudget fits the run into a wall-time budget: every epoch that fits, the last one validated, with the LR
schedule refitted so it still decays to its end value; with or without a budget the last epoch is validated."""

from __future__ import annotations

import time

import pytest
import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedEvaluator
from monai.handlers import ValidationHandler

from shared_components.training import TimeBudget, build_optimizer, build_scheduler, refit_scheduler


def _run(budget_min: float, epoch_s: float, max_epochs: int, scheduler_name: str, val_interval: int = 5):
    opt = build_optimizer("adamw", [torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    sched = build_scheduler(scheduler_name, opt, max_epochs)
    engine = Engine(lambda e, b: time.sleep(epoch_s / 2))
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda _: sched.step())  # as LrSchedule does, before the budget
    TimeBudget(budget_min, sched, val_interval).attach(engine)
    t0 = time.perf_counter()
    engine.run([0, 1], max_epochs=max_epochs)
    return engine, opt, time.perf_counter() - t0


@pytest.mark.parametrize("scheduler_name,final_lr", [("cosine", 0.0), ("poly", 0.0)])
def test_budget_refits_epochs_and_schedule(scheduler_name, final_lr):
    engine, opt, seconds = _run(budget_min=1.5 / 60, epoch_s=0.05, max_epochs=200, scheduler_name=scheduler_name)
    assert 10 <= engine.state.epoch < 200
    assert seconds < 1.5 + 0.2
    assert opt.param_groups[0]["lr"] == pytest.approx(final_lr, abs=1e-6)  # the schedule ran to its end


def test_no_budget_and_ample_budget_change_nothing():
    engine, opt, _ = _run(budget_min=10.0, epoch_s=0.002, max_epochs=12, scheduler_name="cosine")
    assert engine.state.epoch == 12 and engine.state.max_epochs == 12
    engine = Engine(lambda e, b: None)
    TimeBudget(None).attach(engine)
    engine.run([0], max_epochs=3)
    assert engine.state.epoch == 3 and engine.state.max_epochs == 3


class _Validator(SupervisedEvaluator):
    """An evaluator that only records the epochs it was run for."""

    def __init__(self):
        super().__init__(device=torch.device("cpu"), val_data_loader=[0], network=torch.nn.Identity())
        self.epochs: list[int] = []

    def run(self, global_epoch: int = 1, *args, **kwargs) -> None:
        self.epochs.append(global_epoch)


@pytest.mark.parametrize("budget_min,max_epochs", [(0.3 / 60, 200), (None, 7)])
def test_the_last_epoch_is_validated_when_the_interval_skips_it(budget_min, max_epochs):
    """A budget that fits fewer epochs than val_interval (2 of 5 here), or max_epochs not a multiple of it: the
    final epoch is validated anyway, so the run has a best checkpoint (the benchmark's SwinUNETR ended unvalidated)."""
    validator = _Validator()
    engine = Engine(lambda e, b: time.sleep(0.06))
    ValidationHandler(validator=validator, interval=5, epoch_level=True).attach(engine)
    TimeBudget(budget_min, None, 5).attach(engine)
    engine.run([0, 1], max_epochs=max_epochs)
    last = engine.state.epoch
    assert last % 5 != 0 and validator.epochs[-1] == last
    assert validator.epochs == [*range(5, last, 5), last]  # the interval's epochs, then the last one once


def test_every_epoch_that_fits_is_trained_and_the_last_is_validated(monkeypatch):
    """13 epochs fit (1 s each on a fake clock, 13.5 s of budget): all 13 run, not the 10 of whole validation
    intervals (val_interval 5), and epoch 13 is validated."""
    from shared_components.training import handlers

    clock = [0.0]
    monkeypatch.setattr(handlers.time, "perf_counter", lambda: clock[0])
    validator = _Validator()
    engine = Engine(lambda e, b: clock.__setitem__(0, clock[0] + 0.5))
    ValidationHandler(validator=validator, interval=5, epoch_level=True).attach(engine)
    TimeBudget(13.5 / 60, None, 5).attach(engine)
    engine.run([0, 1], max_epochs=100)
    assert engine.state.epoch == 13 and validator.epochs == [5, 10, 13]


@pytest.mark.parametrize("name", ["step", "cyclic", "constant", "plateau"])
def test_refit_keeps_every_schedule_valid(name):
    opt = build_optimizer("sgd", [torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = build_scheduler(name, opt, 90)
    for _ in range(5):
        sched.step(0.5) if name == "plateau" else sched.step()
    refit_scheduler(sched, 30)
    for _ in range(25):
        sched.step(0.5) if name == "plateau" else sched.step()
    lr = opt.param_groups[0]["lr"]
    assert 0 < lr <= 0.1
    if name == "step":
        assert sched.step_size == 10 and lr == pytest.approx(0.1 * 0.1**3)  # drops at 10, 20, 30 as at 30, 60, 90
