"""U-Net topology planning: kernel sizes and strides per level from a patch size and a voxel spacing.

The one place this rule lives: the dataset fingerprint recommends ``strides`` with it
(:func:`shared_components.data.fingerprint.plan`) and the nnU-Net-style DynUNet is built with it
(:func:`shared_components.networks.nnunet_dynunet`), so the recommendation is what the network builds.

The rule is nnU-Net v2's ``get_pool_and_conv_props`` (``nnunetv2/experiment_planning/experiment_planners/
network_topology.py``, Isensee et al. 2021). Level by level, with the current feature-map size and spacing:

1. an axis can be pooled while its size is at least ``2 * min_feature_map_size`` (8 voxels: 4 after pooling);
2. of those axes, the ones whose spacing is less than twice the finest spacing among them are pooled (stride 2),
   so anisotropic data is pooled in-plane first until the spacing is about isotropic;
3. if only one axis would be pooled, it must be at least ``3 * min_feature_map_size`` voxels, else planning stops;
4. the level's convolution kernel is 3 along an axis once its spacing is less than twice the finest spacing of
   the level, else 1 (no convolving across thick slices at full resolution); once 3 it stays 3;
5. after pooling the size is ``ceil(size / 2)`` and the spacing doubles; planning stops when nothing can be pooled.
   The bottleneck (the last level) always gets 3-voxel kernels. The patch must be divisible by ``2 ** poolings``
   per axis (``divisible_by``); nnU-Net's planner pads its patch to that.

Differences from nnU-Net:

* ``exact=True`` (the default, for building a network from a given patch): the axes are chosen again with the
  odd-sized ones counted as too small to pool, and planning stops where either choice stops, so the plan fits the
  patch exactly (a stride-2 level of an odd size does not match its skip connection). For a patch divisible by
  nnU-Net's own ``divisible_by`` for it, both choices agree (every axis nnU-Net pools is even, the finest poolable
  one included), so this changes nothing. ``exact=False`` is nnU-Net's planner behaviour, for choosing a patch:
  see :attr:`UNetPlan.patch_size`.
* at most ``max_levels`` levels (default 6, 5 poolings: the plan is cut there; nnU-Net's default planner has no
  cap, its per-axis ``max_numpool`` is 999999 and is not offered here);
* the kernel rule reads the spacing of each axis (nnU-Net indexes the spacings of the poolable axes by axis
  number, which is the same while every axis is poolable and differs, or fails, once one has become too small).

Pure Python, no third-party imports, so that data and network code can both use it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MIN_FEATURE_MAP_SIZE = 4
MAX_LEVELS = 6


@dataclass(frozen=True)
class UNetPlan:
    """A planned U-Net topology: per level (the first one at full resolution, the last one the bottleneck)."""

    kernels: list[list[int]]
    """Convolution kernel size per level and axis."""
    strides: list[list[int]]
    """Stride per level and axis; the first level's is all 1 (DynUNet's ``strides``)."""
    patch_size: list[int]
    """The planned patch padded up to a multiple of :attr:`divisible_by` (unchanged for an exact plan)."""

    @property
    def poolings(self) -> list[list[int]]:
        """The strides of the downsampling levels (nnU-Net's ``pool_op_kernel_sizes`` without the first)."""
        return self.strides[1:]

    @property
    def pools_per_axis(self) -> list[int]:
        """How often each axis is halved."""
        return [sum(s[i] == 2 for s in self.strides) for i in range(len(self.strides[0]))]

    @property
    def divisible_by(self) -> list[int]:
        """What the patch size must be a multiple of, per axis (``2 ** pools_per_axis``)."""
        return [2**n for n in self.pools_per_axis]


def plan_unet(
    patch_size: Sequence[float],
    spacing: Sequence[float] | None = None,
    min_feature_map_size: int = MIN_FEATURE_MAP_SIZE,
    max_levels: int = MAX_LEVELS,
    exact: bool = True,
) -> UNetPlan:
    """Kernel sizes and strides for ``patch_size`` at ``spacing`` (default isotropic) by nnU-Net's rule (module doc).

    ``exact`` (default) pools only axes of even size, so that the plan fits ``patch_size`` as given (a network is
    built for it); ``exact=False`` plans a possibly non-integer patch as nnU-Net does and pads it to
    :attr:`UNetPlan.patch_size`.
    """
    dims = len(patch_size)
    size = [float(s) for s in patch_size]
    current = [float(s) for s in spacing] if spacing is not None else [1.0] * dims
    if len(current) != dims:
        raise ValueError(f"spacing {list(current)} and patch_size {list(patch_size)} have different lengths.")
    if dims < 1 or min(size) <= 0 or min(current) <= 0:
        raise ValueError(f"patch_size {list(patch_size)} and spacing {current} must be positive.")
    if exact and any(s != int(s) for s in size):
        raise ValueError(f"patch_size {list(patch_size)} must be whole voxels for an exact plan.")
    if max_levels < 1:
        raise ValueError(f"max_levels must be at least 1, not {max_levels}.")

    kernel = [1] * dims
    kernels: list[list[int]] = []
    strides = [[1] * dims]
    while len(strides) < max_levels:
        poolable = [i for i in range(dims) if size[i] >= 2 * min_feature_map_size]
        axes = _pooled_axes(poolable, size, current, min_feature_map_size)
        if axes and exact:  # odd sizes count as too small to pool
            axes = _pooled_axes([i for i in poolable if size[i] % 2 == 0], size, current, min_feature_map_size)
        if not axes:
            break
        kernel = [3 if k == 3 or current[i] / min(current) < 2 else 1 for i, k in enumerate(kernel)]
        kernels.append(list(kernel))
        stride = [2 if i in axes else 1 for i in range(dims)]
        strides.append(stride)
        size = [math.ceil(s / 2) if st == 2 else s for s, st in zip(size, stride, strict=True)]
        current = [c * st for c, st in zip(current, stride, strict=True)]
    kernels.append([3] * dims)  # the bottleneck
    divisible = [2 ** sum(st[i] == 2 for st in strides) for i in range(dims)]
    padded = [math.ceil(s / d) * d for s, d in zip(patch_size, divisible, strict=True)]
    return UNetPlan(kernels, strides, padded)


def _pooled_axes(poolable: list[int], size: list[float], spacing: list[float], min_feature_map_size: int) -> list[int]:
    """Steps 2 and 3 of the rule: the axes pooled at this level among ``poolable`` ([]: planning stops)."""
    if not poolable:
        return []
    finest = min(spacing[i] for i in poolable)
    axes = [i for i in poolable if spacing[i] / finest < 2]
    return [] if len(axes) == 1 and size[axes[0]] < 3 * min_feature_map_size else axes
