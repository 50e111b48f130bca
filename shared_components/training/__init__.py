"""Losses, optimizers and LR schedulers by name, and the training handlers every bundle attaches."""

from typing import TYPE_CHECKING

from shared_components.lazy import lazy_exports

if TYPE_CHECKING:  # imported on first use, see shared_components.lazy
    from shared_components.training.autocast import (
        AutocastInferer,
        channels_last_pays,
        cpu_bf16_available,
        cpu_bf16_pays,
    )
    from shared_components.training.checkpoint import RunCheckpoint, eval_checkpoint, run_status
    from shared_components.training.guards import FailFast, TrainingAborted
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
    "AutocastInferer",
    "LOSSES",
    "OPTIMIZERS",
    "SCHEDULERS",
    "EpochHistory",
    "FailFast",
    "LrSchedule",
    "RunCheckpoint",
    "TimeBudget",
    "TrainingAborted",
    "build_loss",
    "build_optimizer",
    "build_scheduler",
    "channels_last_pays",
    "cpu_bf16_available",
    "cpu_bf16_pays",
    "eval_checkpoint",
    "prepare_network",
    "refit_scheduler",
    "run_status",
]

lazy_exports(__name__)
