"""Random streams that depend only on (seed, epoch, case), so a resumed run continues exactly.

* :class:`SeededDataset` reseeds the random part of a case's transform chain from ``(seed, epoch, index)`` before
  every item, so augmentation does not depend on what came before it: not on the data loader's workers, not on
  the order items are fetched in, not on whether the process restarted.
* :class:`SeededSampler` shuffles from ``(seed, epoch)`` (torch's ``DistributedSampler`` does; MONAI's trainer calls
  its ``set_epoch`` every epoch) and hands the epoch on to a :class:`SeededDataset`; one process (``num_replicas
  1``) unless ``torch.distributed`` is initialised, where each rank takes its share.
* :func:`rng_state` / :func:`set_rng_state`: the global torch (CPU and CUDA), numpy and Python generators (dropout,
  weight initialisation, data loader seeds), saved with a run's state and restored on resume.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import DistributedSampler
from torch.utils.data import Dataset

MAX_SEED = 2**32


def case_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of case ``index``'s random transforms in ``epoch`` (a 32-bit value from numpy's SeedSequence)."""
    return int(np.random.SeedSequence([int(seed) % MAX_SEED, int(epoch), int(index)]).generate_state(1)[0])


class SeededDataset(Dataset):
    """``dataset`` (a MONAI dataset with a ``Compose`` transform) whose item ``i`` in epoch ``e`` is transformed with
    random state ``case_seed(seed, e, i)``. Other attributes (``data``, ``transform``, ...) are the wrapped dataset's.
    """

    def __init__(self, dataset: Any, seed: int = 0):
        self.dataset = dataset
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_random_state(self, seed: int | None = None, state: Any = None) -> SeededDataset:
        """Ignored (MONAI's data loaders call it): every item is reseeded from (seed, epoch, index) anyway."""
        return self

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        transform = getattr(self.dataset, "transform", None)
        if hasattr(transform, "set_random_state"):
            transform.set_random_state(seed=case_seed(self.seed, self.epoch, int(index)))
        return self.dataset[index]

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)


class SeededSampler(DistributedSampler):
    """Shuffled (``shuffle``) or ordered indices of ``dataset``, a permutation from ``seed + epoch``.

    ``num_replicas``/``rank`` default to the ``torch.distributed`` group when one is initialised, else to one
    process; ``even_divisible`` as in MONAI's ``DistributedSampler``. ``set_epoch`` also sets the dataset's epoch
    (see :class:`SeededDataset`).
    """

    def __init__(
        self,
        dataset: Any,
        seed: int = 0,
        shuffle: bool = True,
        even_divisible: bool = True,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        if num_replicas is None and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            num_replicas, rank = 1, 0
        super().__init__(
            dataset,
            even_divisible=even_divisible,
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=int(seed) % MAX_SEED,
        )

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


def rng_state() -> dict[str, Any]:
    """The global random generators' states: torch (CPU, every CUDA device), numpy and Python."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only onto as many devices as there are)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(_tuples(state["python"]))
    cuda: Sequence[torch.Tensor] | None = state.get("cuda")
    if cuda and torch.cuda.is_available():
        for i, s in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)


def _tuples(value: Any) -> Any:
    # Python's random state must be nested tuples (a round trip through some serialisers gives lists)
    return tuple(_tuples(v) for v in value) if isinstance(value, list | tuple) else value
