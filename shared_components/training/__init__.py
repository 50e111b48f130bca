"""Losses, optimizers and LR schedulers by name, and the training handlers every bundle attaches."""

from shared_components.training.handlers import EpochHistory, LrSchedule, TimeBudget
from shared_components.training.presets import (
    LOSSES,
    OPTIMIZERS,
    SCHEDULERS,
    build_loss,
    build_optimizer,
    build_scheduler,
    prepare_network,
    refit_scheduler,
)

__all__ = [
    "LOSSES",
    "OPTIMIZERS",
    "SCHEDULERS",
    "EpochHistory",
    "LrSchedule",
    "TimeBudget",
    "build_loss",
    "build_optimizer",
    "build_scheduler",
    "prepare_network",
    "refit_scheduler",
]
