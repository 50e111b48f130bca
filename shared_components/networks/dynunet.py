"""MONAI's ``DynUNet`` configured the way nnU-Net's experiment planner configures its 3D U-Net.

The kernel sizes and strides per level follow from the patch size and the voxel spacing by nnU-Net's rule
(Isensee et al. 2021), stated and implemented once in :mod:`shared_components.planning` (the dataset fingerprint
recommends its ``strides`` with the same rule); an axis is only pooled while its size is even, so the plan fits the
patch exactly. Features start at ``base_filters`` and double per level up to ``max_filters`` (32 and 320 in nnU-Net).

Because the plan is computed when the network is built from ``patch_size``, overriding the patch size in a bundle
re-plans the network. Deep supervision is used in training only: ``DynUNet`` returns ``[B, heads, C, ...]`` in
training mode (the shared loss wrapper weights the heads) and a single ``[B, C, ...]`` tensor in eval mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monai.networks.nets import DynUNet

from shared_components.planning import MAX_LEVELS, MIN_FEATURE_MAP_SIZE, plan_unet


def plan_dynunet(
    patch_size: Sequence[int],
    spacing: Sequence[float] | None = None,
    min_feature_size: int = MIN_FEATURE_MAP_SIZE,
    max_levels: int = MAX_LEVELS,
) -> tuple[list[list[int]], list[list[int]]]:
    """Kernel sizes and strides per level for ``patch_size`` at ``spacing`` (default isotropic), nnU-Net style
    (:func:`shared_components.planning.plan_unet`).

    An axis is only pooled while its size is even, so the plan always fits the patch exactly
    (e.g. 40x56x40 at 1 mm: three isotropic poolings to 5x7x5, as nnU-Net plans MSD Task04).
    """
    plan = plan_unet([int(s) for s in patch_size], spacing, min_feature_size, max_levels)
    return plan.kernels, plan.strides


def nnunet_dynunet(
    in_channels: int,
    out_channels: int,
    patch_size: Sequence[int],
    spacing: Sequence[float] | None = None,
    base_filters: int = 32,
    max_filters: int = 320,
    deep_supervision: bool = True,
    deep_supr_num: int = 2,
    min_feature_size: int = MIN_FEATURE_MAP_SIZE,
    max_levels: int = MAX_LEVELS,
    res_block: bool = False,
    **kwargs: Any,
) -> DynUNet:
    """A ``DynUNet`` planned from ``patch_size`` and ``spacing`` (see :func:`plan_dynunet`).

    ``deep_supr_num`` extra heads (at most the number of decoder levels below the top one) are returned in
    training mode only; ``kwargs`` reach ``DynUNet`` (e.g. ``norm_name``, ``dropout``).
    """
    kernels, strides = plan_dynunet(patch_size, spacing, min_feature_size, max_levels)
    if len(strides) < 2:
        raise ValueError(
            f"patch_size {list(patch_size)} is too small to downsample (needs an even axis of at least "
            f"{2 * min_feature_size} voxels); use a larger patch."
        )
    filters = [min(base_filters * 2**i, max_filters) for i in range(len(strides))]
    heads = min(deep_supr_num, len(strides) - 2)
    return DynUNet(
        spatial_dims=len(kernels[0]),
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernels,
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=filters,
        norm_name=kwargs.pop("norm_name", ("INSTANCE", {"affine": True})),
        deep_supervision=deep_supervision and heads > 0,
        deep_supr_num=max(heads, 1),
        res_block=res_block,
        **kwargs,
    )
