"""Transform chains shared by every bundle: load, reorient, resample, normalise, sample, augment, post-process."""

from typing import TYPE_CHECKING

from shared_components.lazy import lazy_exports

if TYPE_CHECKING:  # imported on first use, see shared_components.lazy
    from shared_components.transforms.batch import BatchAugmentation, PrepareBatch, prepare_batch
    from shared_components.transforms.chains import (
        infer_transforms,
        post_transforms,
        preprocessing,
        train_transforms,
        val_transforms,
    )
    from shared_components.transforms.labels import LabelToRegionsd, RegionsToLabeld, TakeFirstOutputd

__all__ = [
    "BatchAugmentation",
    "LabelToRegionsd",
    "PrepareBatch",
    "RegionsToLabeld",
    "TakeFirstOutputd",
    "infer_transforms",
    "post_transforms",
    "prepare_batch",
    "preprocessing",
    "train_transforms",
    "val_transforms",
]

lazy_exports(__name__)
