"""A network that averages the probabilities of several trained copies (e.g. the models of all cross-validation
folds), usable as ``network`` in any bundle's ``inference.yaml``."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn


def load_weights(path: str | Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """A checkpoint's state dict, whether saved bare (``CheckpointSaver`` with one object), under ``model``, or from
    a DistributedDataParallel network (``module.`` prefixes)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist: train the fold first.")
    state = torch.load(path, map_location=device, weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    return {k.removeprefix("module."): v for k, v in state.items()}


class FoldEnsemble(nn.Module):
    """Average the softmax (or, with ``multilabel``, sigmoid) probabilities of copies of ``network`` loaded from
    ``checkpoints``. The output is the log of the averaged probabilities (the logit for sigmoid), so the bundle's
    usual softmax/sigmoid post-processing recovers exactly the averaged probabilities."""

    def __init__(
        self,
        network: nn.Module,
        checkpoints: Sequence[str | Path],
        device: torch.device | str = "cpu",
        multilabel: bool = False,
    ):
        super().__init__()
        if not checkpoints:
            raise ValueError("FoldEnsemble needs at least one checkpoint.")
        self.multilabel = multilabel
        self.members = nn.ModuleList()
        for path in checkpoints:
            member = copy.deepcopy(network)
            member.load_state_dict(load_weights(path, device))
            self.members.append(member.to(device).eval())

    def _prob(self, logits: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(logits, list | tuple):  # deep supervision: the full-resolution output comes first
            logits = logits[0]
        if logits.ndim == 6:  # stacked deep-supervision outputs [B, N, C, ...]
            logits = logits[:, 0]
        return torch.sigmoid(logits.float()) if self.multilabel else torch.softmax(logits.float(), dim=1)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.stack([self._prob(m(x)) for m in self.members]).mean(0).clamp(1e-7, 1 - 1e-7)
        return torch.logit(p) if self.multilabel else torch.log(p)
