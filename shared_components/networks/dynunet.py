"""MONAI's ``DynUNet`` configured the way nnU-Net's experiment planner configures its 3D U-Net.

The topology follows from the patch size and the voxel spacing (nnU-Net's rules, Isensee et al. 2021):

* an axis is pooled (stride 2) while its feature map stays at least ``min_feature_size`` voxels after pooling and
  while its current spacing is less than twice the finest current spacing, so anisotropic data is pooled in-plane
  first until the spacing is about isotropic;
* an axis gets a 3-voxel kernel once its current spacing is less than twice the finest one (1 before; once 3,
  it stays 3), so thick slices are not convolved across at full resolution;
* features start at ``base_filters`` and double per level up to ``max_filters`` (32 and 320 in nnU-Net).

Because the plan is computed when the network is built from ``patch_size``, overriding the patch size in a bundle
re-plans the network. Deep supervision is used in training only: ``DynUNet`` returns ``[B, heads, C, ...]`` in
training mode (the shared loss wrapper weights the heads) and a single ``[B, C, ...]`` tensor in eval mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monai.networks.nets import DynUNet


def plan_dynunet(
    patch_size: Sequence[int],
    spacing: Sequence[float] | None = None,
    min_feature_size: int = 4,
    max_levels: int = 6,
) -> tuple[list[list[int]], list[list[int]]]:
    """Kernel sizes and strides per level for ``patch_size`` at ``spacing`` (default isotropic), nnU-Net style.

    An axis is only pooled while its size is even, so the plan always fits the patch exactly
    (e.g. 40x56x40 at 1 mm: three isotropic poolings to 5x7x5, as nnU-Net plans MSD Task04).
    """
    size = [int(s) for s in patch_size]
    dims = len(size)
    current = [float(s) for s in spacing] if spacing is not None else [1.0] * dims
    if len(current) != dims:
        raise ValueError(f"spacing {list(current)} and patch_size {size} have different lengths.")
    if min(size) < 1 or min(current) <= 0:
        raise ValueError(f"patch_size {size} and spacing {current} must be positive.")

    def kernel(previous: list[int] | None) -> list[int]:
        finest = min(current)
        k = [3 if s / finest < 2 else 1 for s in current]
        return k if previous is None else [max(a, b) for a, b in zip(k, previous, strict=True)]

    kernels, strides = [kernel(None)], [[1] * dims]
    while len(strides) < max_levels:
        candidates = [i for i in range(dims) if size[i] % 2 == 0 and size[i] // 2 >= min_feature_size]
        if not candidates:
            break
        finest = min(current[i] for i in candidates)
        axes = [i for i in candidates if current[i] / finest < 2]
        stride = [2 if i in axes else 1 for i in range(dims)]
        size = [s // st for s, st in zip(size, stride, strict=True)]
        current = [c * st for c, st in zip(current, stride, strict=True)]
        strides.append(stride)
        kernels.append(kernel(kernels[-1]))
    return kernels, strides


def nnunet_dynunet(
    in_channels: int,
    out_channels: int,
    patch_size: Sequence[int],
    spacing: Sequence[float] | None = None,
    base_filters: int = 32,
    max_filters: int = 320,
    deep_supervision: bool = True,
    deep_supr_num: int = 2,
    min_feature_size: int = 4,
    max_levels: int = 6,
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
