"""The transform chains of every bundle, built from a few dataset-specific values.

A bundle says what is specific to its data (spacing, orientation, intensity normalisation, patch size, label
mapping) and gets the standard chain: the deterministic part is cached by ``CacheDataset``/``PersistentDataset``,
the random part (sampling, augmentation) runs each epoch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    BorderPadd,
    CastToTyped,
    Compose,
    CropForegroundd,
    EnsureTyped,
    Invertd,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
    RandAdjustContrastd,
    RandAffined,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandRotated,
    RandScaleIntensityd,
    RandScaleIntensityFixedMeand,
    RandShiftIntensityd,
    RandSimulateLowResolutiond,
    RandSpatialCropSamplesd,
    RandZoomd,
    SaveImaged,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
    SpatialPadd,
)

from shared_components.training.registry import get, names, register
from shared_components.transforms.batch import DEFAULT_MODE, AugmentationSeedd, BatchAugmentation, check_mode
from shared_components.transforms.labels import LabelToRegionsd, RegionsToLabeld, RemapLabelsd, TakeFirstOutputd
from shared_components.transforms.spacing import Spacingd

IMAGE, LABEL, PRED = "image", "label", "pred"


def intensity_transforms(intensity: str | Mapping[str, Any] | None, key: str = IMAGE) -> list:
    """Intensity normalisation from a spec: ``zscore`` (MRI), ``ct`` (HU window to [0, 1]), ``ct_zscore``
    (nnU-Net CT: clip to percentiles then dataset mean/std), ``percentile`` or ``none``."""
    spec = {"kind": intensity} if isinstance(intensity, str) or intensity is None else dict(intensity)
    kind = spec.pop("kind", None) or "none"
    if kind == "zscore":
        return [NormalizeIntensityd(key, nonzero=spec.get("nonzero", True), channel_wise=True)]
    if kind == "ct":
        return [ScaleIntensityRanged(key, a_min=spec["a_min"], a_max=spec["a_max"], b_min=0.0, b_max=1.0, clip=True)]
    if kind == "ct_zscore":
        lo, hi = spec["a_min"], spec["a_max"]
        return [
            ScaleIntensityRanged(key, a_min=lo, a_max=hi, b_min=lo, b_max=hi, clip=True),
            NormalizeIntensityd(key, subtrahend=spec["mean"], divisor=spec["std"]),
        ]
    if kind == "percentile":
        lo, hi = spec.get("lower", 0.5), spec.get("upper", 99.5)
        return [ScaleIntensityRangePercentilesd(key, lo, hi, b_min=0.0, b_max=1.0, clip=True, channel_wise=True)]
    if kind == "none":
        return []
    raise ValueError(f"Unknown intensity normalisation {kind!r}: use zscore, ct, ct_zscore, percentile or none.")


def preprocessing(
    pixdim: Sequence[float] | None = None,
    orientation: str | None = "RAS",
    intensity: str | Mapping[str, Any] | None = "zscore",
    label_map: Mapping[int, int] | None = None,
    regions: Mapping[str, Sequence[int]] | None = None,
    crop_foreground: bool = False,
    with_label: bool = True,
) -> list:
    """Deterministic chain: load (multi-channel file lists are stacked), reorient, resample, map labels,
    normalise intensity and optionally crop to the non-zero image region."""
    keys = [IMAGE, LABEL] if with_label else [IMAGE]
    t: list = [LoadImaged(keys, ensure_channel_first=True, image_only=True)]
    t.append(EnsureTyped(IMAGE, dtype=torch.float32, track_meta=True))
    if orientation:
        t.append(Orientationd(keys, axcodes=orientation, labels=None))
    if pixdim is not None:
        modes = ("bilinear", "nearest") if with_label else ("bilinear",)
        t.append(Spacingd(keys, pixdim=pixdim, mode=modes))
    if with_label:
        if label_map:
            t.append(RemapLabelsd(LABEL, label_map))
        else:
            t.append(CastToTyped(LABEL, dtype=torch.uint8))
        if regions:
            t.append(LabelToRegionsd(LABEL, regions))
    t += intensity_transforms(intensity)
    if crop_foreground:
        t.append(CropForegroundd(keys, source_key=IMAGE, allow_smaller=True, margin=0))
    return t


# ---- augmentation presets (``augmentation_args#augmentation``): builder(flip_axes, keys) -> random transforms
def _mirror_and_intensity(flip_axes: Sequence[int] | None, keys: list[str]) -> list:
    t: list = [RandFlipd(keys, prob=0.5, spatial_axis=a) for a in flip_axes or ()]
    return t + [RandScaleIntensityd(IMAGE, factors=0.1, prob=0.5), RandShiftIntensityd(IMAGE, offsets=0.1, prob=0.5)]


def _affine_and_noise(keys: list[str], rot: float, scale: float, prob: float) -> list:
    affine = RandAffined(
        keys,
        prob=prob,
        rotate_range=(rot, rot, rot),
        scale_range=(scale, scale, scale),
        mode=("bilinear", "nearest")[: len(keys)],
        padding_mode="zeros",
    )
    return [affine, RandGaussianNoised(IMAGE, prob=0.15, std=0.1)]


@register("augmentation", "none", description="none", search={})
def _no_augmentation(flip_axes: Sequence[int] | None, keys: list[str]) -> list:
    return []


@register("augmentation", "light", description="mirroring, intensity scale/shift (p 0.5)", search={})
def _light(flip_axes: Sequence[int] | None, keys: list[str]) -> list:
    return _mirror_and_intensity(flip_axes, keys)


@register(
    "augmentation",
    "default",
    description="mirroring, intensity scale/shift (p 0.5), small rotations/scaling (p 0.2), Gaussian noise (p 0.15)",
    search={},
)
def _default(flip_axes: Sequence[int] | None, keys: list[str]) -> list:
    return _mirror_and_intensity(flip_axes, keys) + _affine_and_noise(keys, rot=0.26, scale=0.1, prob=0.2)


@register(
    "augmentation",
    "strong",
    description="mirroring, intensity scale/shift (p 0.5), rotations up to 30 degrees and scaling +-25% (p 0.3), "
    "Gaussian noise (p 0.15), blur (p 0.2), gamma (p 0.3)",
    search={},
)
def _strong(flip_axes: Sequence[int] | None, keys: list[str]) -> list:
    t = _mirror_and_intensity(flip_axes, keys) + _affine_and_noise(keys, rot=0.52, scale=0.25, prob=0.3)
    t.append(RandGaussianSmoothd(IMAGE, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0), prob=0.2))
    t.append(RandAdjustContrastd(IMAGE, gamma=(0.7, 1.5), prob=0.3))
    return t


@register(
    "augmentation",
    "nnunet",
    description="nnU-Net's default set: rotations up to 30 degrees (p 0.2), scaling 0.7-1.4 (p 0.2), Gaussian noise "
    "(p 0.1), blur (p 0.2), brightness (p 0.15), contrast (p 0.15), low resolution (p 0.25), gamma (p 0.1 inverted, "
    "p 0.3), mirroring",
    search={},
)
def _nnunet(flip_axes: Sequence[int] | None, keys: list[str]) -> list:
    # nnU-Net v2's get_training_transforms with MONAI's per-sample transforms (its batch form: transforms.batch)
    spatial = {"mode": ("bilinear", "nearest")[: len(keys)], "padding_mode": "zeros"}
    zoom = {"mode": ("trilinear", "nearest")[: len(keys)], "padding_mode": "constant", "keep_size": True}
    rot, sigma, gamma = math.pi / 6, (0.5, 1.0), (0.7, 1.5)
    return [
        RandRotated(keys, range_x=rot, range_y=rot, range_z=rot, prob=0.2, **spatial),
        RandZoomd(keys, prob=0.2, min_zoom=1 / 1.4, max_zoom=1 / 0.7, **zoom),  # nnU-Net's scale s is a zoom of 1/s
        RandGaussianNoised(IMAGE, prob=0.1, std=0.1),
        RandGaussianSmoothd(IMAGE, sigma_x=sigma, sigma_y=sigma, sigma_z=sigma, prob=0.2),
        RandScaleIntensityd(IMAGE, factors=(-0.25, 0.25), prob=0.15, channel_wise=True),
        RandScaleIntensityFixedMeand(IMAGE, factors=0.25, preserve_range=True, prob=0.15, channel_wise=True),
        RandSimulateLowResolutiond(IMAGE, prob=0.25, zoom_range=(0.5, 1.0)),
        RandAdjustContrastd(IMAGE, prob=0.1, gamma=gamma, invert_image=True, retain_stats=True),
        RandAdjustContrastd(IMAGE, prob=0.3, gamma=gamma, retain_stats=True),
        *(RandFlipd(keys, prob=0.5, spatial_axis=a) for a in flip_axes or ()),
    ]


AUGMENTATIONS = names("augmentation")


def augmentations(level: str = "default", flip_axes: Sequence[int] | None = (0, 1, 2), keys=(IMAGE, LABEL)) -> list:
    """Random augmentations at a named strength (see :data:`AUGMENTATIONS`), applied to sampled patches.

    ``light``: mirroring and intensity scale/shift; ``default`` adds small rotations/scaling and noise;
    ``strong`` (nnU-Net-like) adds larger affine ranges, blur and contrast (gamma) changes.
    """
    return get("augmentation", level).builder(flip_axes, list(keys))


def train_transforms(
    patch_size: Sequence[int],
    pixdim: Sequence[float] | None = None,
    orientation: str | None = "RAS",
    intensity: str | Mapping[str, Any] | None = "zscore",
    label_map: Mapping[int, int] | None = None,
    regions: Mapping[str, Sequence[int]] | None = None,
    crop_foreground: bool = False,
    sampling: str = "label",
    num_samples: int = 1,
    pos_neg: Sequence[float] = (1.0, 1.0),
    augmentation: str = "default",
    flip_axes: Sequence[int] | None = (0, 1, 2),
    mode: str = DEFAULT_MODE,
) -> Compose:
    """Training chain: :func:`preprocessing`, padding to the patch, patch sampling and augmentation.

    ``sampling='label'`` draws patches centred on foreground/background with ratio ``pos_neg``
    (``RandCropByPosNegLabeld``); ``'random'`` draws them uniformly (best when the patch covers the image).
    ``mode='sample'`` augments each patch here (in the data loader); ``mode='batch'`` leaves the augmentation to the
    trainer's ``prepare_batch`` on the training device (:mod:`shared_components.transforms.batch`): the patches are
    sampled with the context its resampling needs (the image padded by that margin first, so the patch centres are
    drawn as in ``sample`` mode) and carry their augmentation seed.
    """
    keys = [IMAGE, LABEL]
    t = preprocessing(pixdim, orientation, intensity, label_map, regions, crop_foreground, with_label=True)
    size = list(patch_size)
    if check_mode(mode) == "batch":
        get("augmentation", augmentation)  # the same message for an unknown preset in both modes
        on_device = BatchAugmentation(patch_size, augmentation, flip_axes)
        size = on_device.input_size
        if any(on_device.margin):
            t.append(BorderPadd(keys, spatial_border=on_device.margin))
    t.append(SpatialPadd(keys, spatial_size=size))
    if sampling == "label":
        t.append(
            RandCropByPosNegLabeld(
                keys,
                LABEL,
                spatial_size=size,
                pos=pos_neg[0],
                neg=pos_neg[1],
                num_samples=num_samples,
                image_key=IMAGE,
                allow_smaller=False,
            )
        )
    elif sampling == "random":
        t.append(RandSpatialCropSamplesd(keys, roi_size=size, num_samples=num_samples, random_size=False))
    else:
        raise ValueError(f"sampling must be 'label' or 'random', got {sampling!r}.")
    if mode == "batch":
        t.append(AugmentationSeedd())
    else:
        t += augmentations(augmentation, flip_axes, keys)
    return Compose(t)


def val_transforms(**kwargs: Any) -> Compose:
    """Validation/evaluation chain: :func:`preprocessing` with the label (whole images, no sampling)."""
    return Compose(preprocessing(with_label=True, **kwargs))


def infer_transforms(**kwargs: Any) -> Compose:
    """Inference chain: :func:`preprocessing` of the image alone (no label needed)."""
    kwargs.pop("label_map", None)
    kwargs.pop("regions", None)
    return Compose(preprocessing(with_label=False, **kwargs))


def post_transforms(
    stage: str,
    num_classes: int,
    multilabel: bool = False,
    preprocessing: Compose | None = None,
    output_dir: str | None = None,
    output_postfix: str = "seg",
    regions: Mapping[str, Sequence[int]] | None = None,
) -> Compose:
    """Post-processing of network outputs.

    ``stage='metrics'`` (training/validation): discrete one-hot ``pred`` and ``label`` for Dice.
    ``stage='save'`` (inference/evaluation): probabilities inverted to the input's original geometry
    through ``preprocessing``, then discretised (argmax; or, for overlapping ``regions``, a 0.5 threshold painted
    back into one label map by :meth:`RegionsToLabeld.from_regions`) and written as uint8 NIfTI to ``output_dir``.
    """
    if stage == "metrics":
        act = Activationsd(PRED, sigmoid=multilabel, softmax=not multilabel)
        t: list = [TakeFirstOutputd(PRED), act]
        if multilabel:
            t.append(AsDiscreted(PRED, threshold=0.5))
        else:
            t.append(AsDiscreted([PRED, LABEL], argmax=[True, False], to_onehot=[num_classes, num_classes]))
        return Compose(t)
    if stage != "save":
        raise ValueError(f"stage must be 'metrics' or 'save', got {stage!r}.")
    if preprocessing is None or output_dir is None:
        raise ValueError("stage='save' needs the preprocessing to invert and an output_dir.")
    t = inverted_prediction(preprocessing, multilabel)
    if multilabel:
        t.append(regions_to_label_map(PRED, num_classes, regions))
    t.append(save_label_map(PRED, output_dir, output_postfix))
    return Compose(t)


def inverted_prediction(preprocessing: Compose, multilabel: bool) -> list:
    """Network output -> probabilities -> inverted through ``preprocessing`` to the input's original geometry ->
    discrete (argmax into one channel; per-region 0.5 threshold when ``multilabel``)."""
    return [
        Activationsd(PRED, sigmoid=multilabel, softmax=not multilabel),
        Invertd(PRED, transform=preprocessing, orig_keys=IMAGE, nearest_interp=False, to_tensor=True),
        AsDiscreted(PRED, threshold=0.5) if multilabel else AsDiscreted(PRED, argmax=True),
    ]


def regions_to_label_map(
    key: str, num_classes: int, regions: Mapping[str, Sequence[int]] | None = None
) -> RegionsToLabeld:
    """Binary region channels of ``key`` painted into one label map: by the dataset's overlapping ``regions``, else
    channel ``i`` -> label ``i + 1``."""
    return RegionsToLabeld.from_regions(key, regions) if regions else RegionsToLabeld(key, range(1, num_classes + 1))


def save_label_map(key: str, output_dir: str, output_postfix: str = "seg", **kwargs: Any) -> SaveImaged:
    """Write ``key`` as a uint8 NIfTI label map ``<case>_<postfix>.nii.gz`` in ``output_dir``, on the grid it has
    (already inverted to the original geometry)."""
    return SaveImaged(
        key,
        output_dir=output_dir,
        output_postfix=output_postfix,
        output_dtype="uint8",
        resample=False,
        separate_folder=False,
        print_log=False,
        **kwargs,
    )
