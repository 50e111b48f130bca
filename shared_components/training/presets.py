"""Named presets so a bundle switches loss, optimizer or scheduler with one CLI override.

``--loss_name focal --optimizer_name sgd --learning_rate 0.01 --scheduler_name poly`` on any bundle.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from monai.losses import (
    DeepSupervisionLoss,
    DiceCELoss,
    DiceFocalLoss,
    DiceLoss,
    FocalLoss,
    GeneralizedDiceLoss,
    TverskyLoss,
)
from monai.optimizers import WarmupCosineSchedule
from torch import nn
from torch.optim import lr_scheduler as sched

LOSSES = ("dice", "dice_ce", "dice_focal", "focal", "tversky", "generalized_dice")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULERS = ("constant", "step", "plateau", "cyclic", "cosine", "poly")


def _choose(kind: str, name: str, choices: Iterable[str]) -> str:
    name = str(name).lower().replace("-", "_")
    if name not in choices:
        raise ValueError(f"Unknown {kind} {name!r}; choose one of: {', '.join(choices)}.")
    return name


class StackedDeepSupervisionLoss(nn.Module):
    """Apply ``loss`` to a plain output, or to each head of a deep-supervision output stacked on dim 1
    (``[B, heads, C, ...]``, as DynUNet returns in training), with exponentially decaying head weights."""

    def __init__(self, loss: nn.Module, weight_mode: str = "exp"):
        super().__init__()
        self.loss = loss
        self.deep = DeepSupervisionLoss(loss, weight_mode=weight_mode)

    def forward(self, input: torch.Tensor | list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(input, torch.Tensor) and input.ndim == target.ndim + 1:
            input = list(torch.unbind(input, dim=1))
        return self.deep(input, target) if isinstance(input, list | tuple) else self.loss(input, target)


def build_loss(name: str = "dice_ce", multilabel: bool = False, **kwargs: Any) -> nn.Module:
    """A segmentation loss by name: dice, dice_ce, dice_focal, focal, tversky or generalized_dice.

    ``multilabel`` selects sigmoid outputs with multi-channel targets (e.g. BraTS regions); otherwise softmax
    outputs with integer label maps. Dice terms exclude the background of softmax outputs and use batch Dice.
    ``kwargs`` reach the MONAI loss (e.g. ``gamma`` for focal, ``alpha``/``beta`` for Tversky).
    """
    name = _choose("loss", name, LOSSES)
    act = {"sigmoid": True} if multilabel else {"softmax": True, "to_onehot_y": True}
    dice = {**act, "include_background": multilabel, "batch": True, "smooth_nr": 1e-5, "smooth_dr": 1e-5}
    if name == "dice":
        loss = DiceLoss(**dice, **kwargs)
    elif name == "dice_ce":
        loss = DiceCELoss(**dice, **kwargs)
    elif name == "dice_focal":
        loss = DiceFocalLoss(**dice, **{"gamma": 2.0, **kwargs})
    elif name == "focal":
        focal = {"use_sigmoid": True} if multilabel else {"use_softmax": True, "to_onehot_y": True}
        loss = FocalLoss(**focal, **{"gamma": 2.0, **kwargs})
    elif name == "tversky":
        loss = TverskyLoss(**dice, **{"alpha": 0.3, "beta": 0.7, **kwargs})
    else:
        gd = {k: v for k, v in dice.items() if k != "smooth_nr" and k != "smooth_dr"}
        loss = GeneralizedDiceLoss(**gd, **kwargs)
    return StackedDeepSupervisionLoss(loss)


def build_optimizer(
    name: str, params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float = 1e-5, **kwargs: Any
) -> torch.optim.Optimizer:
    """An optimizer by name: adam, adamw, sgd (Nesterov, momentum 0.99 as in nnU-Net) or rmsprop."""
    name = _choose("optimizer", name, OPTIMIZERS)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **kwargs)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **kwargs)
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, weight_decay=weight_decay, **{"momentum": 0.99, "nesterov": True, **kwargs}
        )
    return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay, **{"momentum": 0.9, **kwargs})


def build_scheduler(
    name: str, optimizer: torch.optim.Optimizer, max_epochs: int, warmup_epochs: int | None = None, **kwargs: Any
) -> Any:
    """An epoch-level LR scheduler by name.

    constant; step (x0.1 at 1/3 and 2/3 of training); plateau (halve the LR when the validation metric stalls,
    stepped after each validation by :class:`LrSchedule`); cyclic (triangular between lr/10 and lr); cosine
    (linear warm-up then cosine decay); poly (nnU-Net's ``(1 - epoch/max_epochs) ** 0.9``).
    """
    name = _choose("scheduler", name, SCHEDULERS)
    max_epochs = max(int(max_epochs), 1)
    if name == "constant":
        return sched.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if name == "step":
        step = max(max_epochs // 3, 1)
        return sched.StepLR(optimizer, **{"step_size": step, "gamma": 0.1, **kwargs})
    if name == "plateau":
        return sched.ReduceLROnPlateau(optimizer, **{"mode": "max", "factor": 0.5, "patience": 2, **kwargs})
    if name == "cyclic":
        base = [g["lr"] for g in optimizer.param_groups]
        return sched.CyclicLR(
            optimizer,
            **{
                "base_lr": [b / 10 for b in base],
                "max_lr": base,
                "step_size_up": max(max_epochs // 10, 1),
                "cycle_momentum": "momentum" in optimizer.defaults and not isinstance(optimizer, torch.optim.Adam),
                **kwargs,
            },
        )
    if name == "cosine":
        warmup = max_epochs // 20 if warmup_epochs is None else warmup_epochs
        return WarmupCosineSchedule(optimizer, warmup_steps=min(warmup, max_epochs - 1), t_total=max_epochs, **kwargs)
    return sched.PolynomialLR(optimizer, total_iters=max_epochs, power=kwargs.get("power", 0.9))


def refit_scheduler(scheduler: Any, total_epochs: int) -> None:
    """Re-plan a schedule from :func:`build_scheduler` to end after ``total_epochs`` (e.g. to fit a time budget).

    cosine (warm-up capped at 5%), poly and cyclic keep their shape over the new length; step moves its next drops
    to thirds of it; constant and plateau do not depend on the length.
    """
    total = max(int(total_epochs), 1)
    if isinstance(scheduler, WarmupCosineSchedule):
        scheduler.warmup_steps = min(scheduler.warmup_steps, total // 20)
        scheduler.t_total = total
    elif isinstance(scheduler, sched.PolynomialLR):
        scheduler.total_iters = total
    elif isinstance(scheduler, sched.StepLR):
        scheduler.step_size = max(total // 3, 1)
    elif isinstance(scheduler, sched.CyclicLR):
        up = max(total // 10, 1)
        scheduler.total_size, scheduler.step_ratio = 2.0 * up, 0.5


def prepare_network(network: nn.Module, device: torch.device | str, channels_last: bool = True) -> nn.Module:
    """Move a network to ``device``, in the channels-last memory format by default: 3D convolutions run faster
    with it on CUDA (AMP) and on CPU (oneDNN), about 1.4x for the hippocampus UNet on 2 CPU cores."""
    network = network.to(torch.device(device))
    return network.to(memory_format=torch.channels_last_3d) if channels_last else network
