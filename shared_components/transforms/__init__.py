"""Transform chains shared by every bundle: load, reorient, resample, normalise, sample, augment, post-process."""

from shared_components.transforms.chains import (
    infer_transforms,
    post_transforms,
    preprocessing,
    train_transforms,
    val_transforms,
)
from shared_components.transforms.labels import LabelToRegionsd, RegionsToLabeld, TakeFirstOutputd

__all__ = [
    "LabelToRegionsd",
    "RegionsToLabeld",
    "TakeFirstOutputd",
    "infer_transforms",
    "post_transforms",
    "preprocessing",
    "train_transforms",
    "val_transforms",
]
