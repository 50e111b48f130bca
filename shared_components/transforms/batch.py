"""Random augmentation of the collated batch on the training device, reproducible per (seed, epoch, case).

``augmentation_args#mode: batch`` splits training data in two stages:

1. the data loader (CPU) loads, runs the cached deterministic preprocessing and samples patches, each with a margin
   of context when the augmentation moves voxels (:func:`margin`), and gives each patch its augmentation seed:
   :class:`AugmentationSeedd` draws it from its random state, which
   :class:`~shared_components.data.seeding.SeededDataset` sets from ``(seed, epoch, case)`` before every case, so
   the seed of case ``i``'s ``k``-th patch in epoch ``e`` depends on nothing else (not on the workers, the batch it
   lands in or a restart) and travels with the batch (``aug_seed``);
2. the trainer's ``prepare_batch`` (:class:`PrepareBatch`) copies image and label to the training device (without
   blocking) and runs :class:`BatchAugmentation` there: each op draws its parameters for a patch from
   ``numpy.random.default_rng([aug_seed, op])`` and its random fields (noise, elastic offsets) from a
   ``torch.Generator`` on the device seeded from it, then applies them to the whole batch as tensor operations
   (``affine_grid``/``grid_sample``, MONAI's separable Gaussian filter, ...). A patch's result is the same in any
   batch and with any ``num_workers`` (bitwise on CPU).

The ops are nnU-Net's augmentation set (nnU-Net v2 ``get_training_transforms`` and batchgeneratorsv2): rotation,
scaling and (optional) elastic deformation in one resampling, Gaussian noise and blur, multiplicative brightness,
contrast, low-resolution simulation, gamma (inverted and plain), mirroring; plus the additive intensity shift of
MONAI's presets. Labels are resampled nearest-neighbour, each channel alike, so label maps keep their values and the
binary region channels of sigmoid (``multilabel``) bundles stay binary. :data:`PRESETS` gives every augmentation
preset of ``training.registry`` its batch form, with the same probabilities and ranges as its per-sample form in
``transforms.chains``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from monai.networks.layers import separable_filtering
from monai.networks.layers.simplelayers import gaussian_1d
from monai.transforms import Randomizable, Transform

IMAGE, LABEL = "image", "label"
SEED_KEY = "aug_seed"  # the batch key of each patch's augmentation seed
MODES = ("sample", "batch")
# where the random augmentation runs when augmentation_args does not say (every dataset spec says batch)
DEFAULT_MODE = "batch"
MAX_SEED = 2**31
MAX_CONTEXT = 0.25  # at most this fraction of the patch is added as context around it (half on each side)

Tensor = torch.Tensor


class AugmentationSeedd(Randomizable, Transform):
    """Store a seed for the batch augmentation of this item (each patch of it) under ``key``, drawn from the
    transform's random state (set from ``(seed, epoch, case)`` by ``SeededDataset``)."""

    def __init__(self, key: str = SEED_KEY):
        self.key = key

    def randomize(self, data: Any = None) -> None:
        self._seed = int(self.R.randint(MAX_SEED))

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        self.randomize()
        return {**data, self.key: self._seed}


# ---- drawing parameters ------------------------------------------------------------------------------------------


def _draw(rng: np.random.Generator, bounds: Sequence[float], style: str = "uniform", size: int | None = None) -> Any:
    """``size`` values (a float when ``None``) in ``bounds``: ``uniform``, or ``nnunet`` (nnU-Net's ``BGContrast``:
    half of the draws below 1, half above)."""
    lo, hi = float(bounds[0]), float(bounds[1])
    if style == "uniform":
        return rng.uniform(lo, hi, size)
    if style != "nnunet":
        raise ValueError(f"style must be 'uniform' or 'nnunet', got {style!r}.")
    n = 1 if size is None else size
    below = (rng.random(n) < 0.5) & (lo < 1)
    values = np.where(below, rng.uniform(lo, min(1.0, hi), n), rng.uniform(max(lo, 1.0), hi, n))
    return float(values[0]) if size is None else values


def _channel_values(
    rng: np.random.Generator, prob: float, bounds: Sequence[float], style: str, channels: int, per_channel: bool
) -> np.ndarray | None:
    """One value per channel drawn with :func:`_draw` (the first repeated unless ``per_channel``), or ``None`` when
    the op is not applied (probability ``1 - prob``); the draws happen either way, so streams stay aligned."""
    apply = rng.random() < prob
    values = _draw(rng, bounds, style, channels)
    return (values if per_channel else np.full(channels, values[0])) if apply else None


def _channels(rng: np.random.Generator, channels: int, p_channel: float) -> np.ndarray:
    return rng.random(channels) < p_channel


def _generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


def _on(values: Any, device: torch.device, dtype: torch.dtype | None = None) -> Tensor:
    """A small parameter tensor on ``device``; to a GPU through pinned memory without blocking (a plain copy would
    wait for the work queued on the device)."""
    t = torch.as_tensor(np.asarray(values), dtype=dtype)
    if device.type != "cuda":
        return t
    return t.pin_memory().to(device, non_blocking=True)


def _rows(x: Tensor) -> Tensor:
    """``(N, C, *spatial)`` as ``(N * C, voxels)`` (a view)."""
    return x.reshape(x.shape[0] * x.shape[1], -1)


def _row_index(params: Sequence[Any], channels: int, key: str = "channels") -> list[int]:
    return [i * channels + c for i, p in enumerate(params) if p is not None for c in np.flatnonzero(p[key])]


def _chosen_rows(image: Tensor, params: Sequence[Any], key: str) -> tuple[Tensor, Tensor, Tensor] | None:
    """For an op drawn per channel: the ``(N * C, voxels)`` view of ``image`` (:func:`_rows`), the indices of the
    rows it applies to, and each such row's ``params[...][key]`` value; ``None`` when it applies to none."""
    c = image.shape[1]
    index = _row_index(params, c)
    if not index:
        return None
    rows = _rows(image)
    return rows, _on(index, image.device), _on([params[r // c][key][r % c] for r in index], image.device, rows.dtype)


# ---- the ops -----------------------------------------------------------------------------------------------------


class BatchOp:
    """One random augmentation of a batch: :meth:`draw` its parameters for one patch (``None``: not applied), then
    apply everyone's to the batch (``__call__``). Ops that change the spatial size take ``input_size`` patches."""

    def draw(self, rng: np.random.Generator, channels: int) -> Any:
        raise NotImplementedError

    def __call__(self, image: Tensor, label: Tensor | None, params: Sequence[Any]) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError


@dataclass
class Spatial(BatchOp):
    """Rotation, scaling and elastic deformation in one resampling (bilinear image, nearest label, zeros outside),
    from a patch with context to the patch (its centre crop, without resampling, when nothing is drawn).

    ``rotation``: the largest angle (radians) about each axis, drawn with ``p_rotation``; ``scaling``: the range of
    the factor (``> 1`` samples a larger region: structures look smaller; one factor for all axes unless
    ``scale_per_axis``), drawn with ``p_scaling``; ``joint``: one draw with ``p_rotation`` decides both (MONAI's
    ``RandAffined``). ``p_elastic``: smooth random offsets (nnU-Net: ``elastic_scale`` their smoothness and
    ``elastic_magnitude`` their largest size, as fractions of the patch). The angles turn the voxel grid (not the
    normalised one, so a non-cubic patch is not sheared)."""

    patch_size: Sequence[int] = (0, 0, 0)
    p_rotation: float = 0.0
    rotation: float = 0.0
    p_scaling: float = 0.0
    scaling: Sequence[float] = (1.0, 1.0)
    scale_per_axis: bool = False
    joint: bool = False
    p_elastic: float = 0.0
    elastic_scale: Sequence[float] = (0.0, 0.2)
    elastic_magnitude: Sequence[float] = (0.0, 0.2)

    def draw(self, rng: np.random.Generator, channels: int) -> Any:
        u = rng.random(3)
        rotate = u[0] < self.p_rotation
        scale = rotate if self.joint else u[1] < self.p_scaling
        elastic = u[2] < self.p_elastic
        angles = rng.uniform(-self.rotation, self.rotation, 3)
        factors = rng.uniform(self.scaling[0], self.scaling[1], 3 if self.scale_per_axis else 1)
        smooth, size = rng.uniform(*self.elastic_scale, 3), rng.uniform(*self.elastic_magnitude, 3)
        field_seed = int(rng.integers(MAX_SEED))
        if not (rotate or scale or elastic):
            return None
        matrix = rotation_matrix(angles if rotate else np.zeros(3)) @ np.diag(
            np.broadcast_to(factors, 3) if scale else np.ones(3)
        )
        return {"matrix": matrix, "elastic": (smooth, size, field_seed) if elastic else None}

    def _sizes(self, image: Tensor) -> tuple[list[int], list[int]]:
        return [int(s) for s in image.shape[2:]], [int(s) for s in self.patch_size]

    def _crop(self, x: Tensor, sizes: list[int], patch: list[int]) -> Tensor:
        starts = [(i - p) // 2 for i, p in zip(sizes, patch, strict=True)]
        return x[(slice(None), slice(None), *(slice(s, s + p) for s, p in zip(starts, patch, strict=True)))]

    def grid(self, params: Sequence[Any], sizes: list[int], device: torch.device) -> Tensor:
        """The sampling grid (``grid_sample``'s normalised input coordinates) of each drawn patch."""
        patch = [int(s) for s in self.patch_size]
        thetas = []
        for p in params:
            # output voxel offsets from the centre -> input ones (``matrix``) -> normalised input coordinates
            m = p["matrix"] * np.array(patch)[None, :] / np.array(sizes)[:, None]
            thetas.append(np.concatenate([m[::-1, ::-1], np.zeros((3, 1))], axis=1))  # (d, h, w) -> (x, y, z)
        theta = _on(np.stack(thetas), device, torch.float32)
        grid = F.affine_grid(theta, [len(params), 1, *patch], align_corners=False)
        for k, p in enumerate(params):
            if p["elastic"] is not None:
                grid[k] += self.offsets(*p["elastic"], sizes, device)
        return grid

    def offsets(
        self, smooth: np.ndarray, size: np.ndarray, seed: int, sizes: list[int], device: torch.device
    ) -> Tensor:
        """Smooth random offsets ``(*patch, 3)`` in normalised input coordinates: Gaussian noise on a coarse grid
        (one node per ``smooth`` fraction of the patch) upsampled trilinearly, scaled per axis to at most ``size``
        in the patch's own normalised units (1 = half the patch), as nnU-Net's ``elastic_deform_magnitude``."""
        patch = [int(s) for s in self.patch_size]
        coarse = [max(2, min(p, round(1.0 / max(s, 1e-3)) + 1)) for p, s in zip(patch, smooth, strict=True)]
        noise = torch.randn([1, 3, *coarse], generator=_generator(seed, device), device=device)
        field = F.interpolate(noise, size=patch, mode="trilinear", align_corners=True)[0]
        peak = field.flatten(1).abs().amax(1).clamp_min(1e-8)
        limit = _on(size * np.array(patch) / np.array(sizes), device, torch.float32)
        field = field * (limit / peak).view(3, 1, 1, 1)
        return field.flip(0).permute(1, 2, 3, 0)  # (d, h, w) channels -> (x, y, z) last

    def __call__(self, image: Tensor, label: Tensor | None, params: Sequence[Any]) -> tuple[Tensor, Tensor | None]:
        sizes, patch = self._sizes(image)
        moved = [i for i, p in enumerate(params) if p is not None]
        image_out = self._crop(image, sizes, patch)
        label_out = None if label is None else self._crop(label, sizes, patch)
        if not moved:
            return image_out, label_out
        image_out = image_out.clone()
        grid = self.grid([params[i] for i in moved], sizes, image.device)
        index = _on(moved, image.device)
        sampled = F.grid_sample(image[index], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        image_out[index] = sampled.to(image_out.dtype)
        if label is not None:
            label_out = label_out.clone()
            nearest = F.grid_sample(
                label[index].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
            )
            label_out[index] = nearest.to(label_out.dtype)
        return image_out, label_out


def rotation_matrix(angles: Sequence[float]) -> np.ndarray:
    """``R_2 @ R_1 @ R_0``: rotations by ``angles[a]`` about spatial axis ``a`` (voxel coordinates)."""
    out = np.eye(3)
    for axis, angle in enumerate(angles):
        i, j = [a for a in range(3) if a != axis]
        r = np.eye(3)
        c, s = math.cos(angle), math.sin(angle)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        out = r @ out
    return out


@dataclass
class GaussianNoise(BatchOp):
    """Add zero-mean Gaussian noise of a standard deviation drawn from ``std`` (one for all channels)."""

    prob: float = 0.1
    std: Sequence[float] = (0.0, 0.1)

    def draw(self, rng: np.random.Generator, channels: int) -> Any:
        apply, sigma, seed = rng.random() < self.prob, _draw(rng, self.std), int(rng.integers(MAX_SEED))
        return {"std": sigma, "seed": seed} if apply else None

    def __call__(self, image: Tensor, label: Tensor | None, params: Sequence[Any]) -> tuple[Tensor, Tensor | None]:
        for i, p in enumerate(params):
            if p is not None:
                noise = torch.randn(image.shape[1:], generator=_generator(p["seed"], image.device), device=image.device)
                image[i] += noise.to(image.dtype) * p["std"]
        return image, label


def _gaussian(sigma: float, truncated: float, like: Tensor) -> Tensor:
    kernel = gaussian_1d(torch.tensor(sigma, dtype=torch.float64), truncated=truncated)
    return _on((kernel / kernel.sum()).numpy(), like.device, like.dtype)  # sums to 1: a constant stays constant


@dataclass
class GaussianBlur(BatchOp):
    """Gaussian smoothing of each channel drawn with ``p_channel``, a sigma (voxels) drawn from ``sigma`` per axis
    (MONAI's separable filter, ``truncated`` sigmas, reflected borders)."""

    prob: float = 0.2
    sigma: Sequence[float] = (0.5, 1.0)
    p_channel: float = 0.5
    truncated: float = 4.0

    def draw(self, rng: np.random.Generator, channels: int) -> Any:
        apply, chosen = rng.random() < self.prob, _channels(rng, channels, self.p_channel)
        sigmas = rng.uniform(self.sigma[0], self.sigma[1], (channels, 3))
        return {"channels": chosen, "sigmas": sigmas} if apply and chosen.any() else None

    def __call__(self, image: Tensor, label: Tensor | None, params: Sequence[Any]) -> tuple[Tensor, Tensor | None]:
        for i, p in enumerate(params):
            for c in np.flatnonzero(p["channels"]) if p is not None else ():
                kernels = [_gaussian(float(s), self.truncated, image) for s in p["sigmas"][c]]
                mode = (
                    "reflect"
                    if all(len(k) // 2 < n for k, n in zip(kernels, image.shape[2:], strict=True))
                    else "zeros"
                )
                image[i, c] = separable_filtering(image[i : i + 1, c : c + 1], kernels, mode=mode)[0, 0]
        return image, label


@dataclass
class Brightness(BatchOp):
    """Multiply by a factor drawn from ``factor`` (per channel when ``per_channel``)."""

    prob: float = 0.15
    factor: Sequence[float] = (0.75, 1.25)
    style: str = "nnunet"
    per_channel: bool = True

    def draw(self, rng: np.random.Generator, channels: int) -> Any:
        return _channel_values(rng, self.prob, self.factor, self.style, channels, self.per_channel)

    def __call__(self, image: Tensor, label: Tensor | None, params: Sequence[Any]) -> tuple[Tensor, Tensor | None]:
        if any(p is not None for p in params):
            n, c = image.shape[:2]
            factors = np.stack([np.ones(c) if p is None else p for p in params])
            image *= _on(factors, image.device, image.dtype).view(n, c, *[1] * (image.ndim - 2))
        return image, label


@dataclass
class Shift(BatchOp):
    """Add an offset drawn from ``offset`` (MONAI's ``RandShiftIntensityd``; per channel when ``per_channel``)."""

    prob: float = 0.5
    offset: Sequence[float] = (-0.1, 0.1)
    per_channel: bool = False

    def draw(self, rng: np.random.Generator, channels: int) -> Any:
        return _channel_values(rng, self.prob, self.offset, "uniform", channels, self.per_channel)

    def __call__(self, image: Tensor, label: Tensor | None, params: Sequence[Any]) -> tuple[Tensor, Tensor | None]:
        if any(p is not None for p in params):
            n, c = image.shape[:2]
            offsets = np.stack([np.zeros(c) if p is None else p for p in params])
            image += _on(offsets, image.device, image.dtype).view(n, c, *[1] * (image.ndim - 2))
        return image, label


def _stats(rows: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row mean and (unbiased) standard deviation, each row reduced the same way however many rows there are
    (a single long row would otherwise be split over threads, changing its rounding): blocks first."""
    n, v = rows.shape
    if rows.device.type != "cpu":  # one kernel per reduction: the same for every row (and no float64 on a GPU)
        std, mean = torch.std_mean(rows, dim=1)
        return mean, std
    blocks = 1 << max(0, min(8, int(math.log2(max(v // 1024, 1)))))
    usable = v - v % blocks
    head = rows[:, :usable].reshape(n, blocks, -1).double()
    total = head.sum(-1).sum(-1) + rows[:, usable:].double().sum(-1)
    mean = total / v
    centred = (head - mean.view(n, 1, 1)) ** 2
    var = centred.sum(-1).sum(-1) + ((rows[:, usable:].double() - mean.view(n, 1)) ** 2).sum(-1)
    return mean.to(rows.dtype), (var / max(v - 1, 1)).sqrt().to(rows.dtype)


@dataclass
class Contrast(BatchOp):
    """Scale each channel about its mean by a factor drawn from ``factor``, then clip to its former range when
    ``preserve_range`` (nnU-Net's ``ContrastTransform``, MONAI's ``RandScaleIntensityFixedMeand``)."""

    prob: float = 0.15
    factor: Sequence[float] = (0.75, 1.25)
    style: str = "nnunet"
    preserve_range: bool = True
    per_channel: bool = True

    def draw(self, rng: np.random.Generator, channels: int) -> Any:
        values = _channel_values(rng, self.prob, self.factor, self.style, channels, self.per_channel)
        return None if values is None else {"channels": np.ones(channels, bool), "factor": values}

    def __call__(self, image: Tensor, label: Tensor | None, params: Sequence[Any]) -> tuple[Tensor, Tensor | None]:
        chosen = _chosen_rows(image, params, "factor")
        if chosen is not None:
            rows, idx, f = chosen
            x = rows[idx]
            mean = _stats(x)[0][:, None]
            y = (x - mean) * f[:, None] + mean
            if self.preserve_range:
                y = torch.clamp(y, x.amin(1, keepdim=True), x.amax(1, keepdim=True))
            rows[idx] = y
        return image, label


@dataclass
class LowResolution(BatchOp):
    """Simulate a lower resolution in each channel drawn with ``p_channel``: downsample by a factor drawn from
    ``zoom`` (nearest), upsample back (trilinear)."""

    prob: float = 0.25
    zoom: Sequence[float] = (0.5, 1.0)
    p_channel: float = 0.5

    def draw(self, rng: np.random.Generator, channels: int) -> Any:
        apply, chosen = rng.random() < self.prob, _channels(rng, channels, self.p_channel)
        zooms = rng.uniform(self.zoom[0], self.zoom[1], channels)
        return {"channels": chosen, "zoom": zooms} if apply and chosen.any() else None

    def __call__(self, image: Tensor, label: Tensor | None, params: Sequence[Any]) -> tuple[Tensor, Tensor | None]:
        spatial = [int(s) for s in image.shape[2:]]
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(spatial)]
        for i, p in enumerate(params):
            for c in np.flatnonzero(p["channels"]) if p is not None else ():
                small = [max(1, round(s * float(p["zoom"][c]))) for s in spatial]
                down = F.interpolate(image[i : i + 1, c : c + 1], size=small, mode="nearest-exact")
                image[i, c] = F.interpolate(down, size=spatial, mode=mode, align_corners=False)[0, 0]
        return image, label


@dataclass
class Gamma(BatchOp):
    """``((x - min) / range) ** gamma * range + min`` per channel, gamma drawn from ``gamma``; ``invert``: on the
    negated image; ``retain_stats``: mean and standard deviation restored (nnU-Net's ``GammaTransform``; MONAI's
    ``RandAdjustContrastd``)."""

    prob: float = 0.3
    gamma: Sequence[float] = (0.7, 1.5)
    style: str = "nnunet"
    invert: bool = False
    retain_stats: bool = True
    per_channel: bool = True

    def draw(self, rng: np.random.Generator, channels: int) -> Any:
        values = _channel_values(rng, self.prob, self.gamma, self.style, channels, self.per_channel)
        return None if values is None else {"channels": np.ones(channels, bool), "gamma": values}

    def __call__(self, image: Tensor, label: Tensor | None, params: Sequence[Any]) -> tuple[Tensor, Tensor | None]:
        chosen = _chosen_rows(image, params, "gamma")
        if chosen is not None:
            rows, idx, g = chosen
            x = -rows[idx] if self.invert else rows[idx]
            if self.retain_stats:
                mean, std = _stats(x)
            lo = x.amin(1, keepdim=True)
            span = x.amax(1, keepdim=True) - lo
            y = torch.pow((x - lo) / span.clamp_min(1e-7), g[:, None]) * span + lo
            if self.retain_stats:
                new_mean, new_std = _stats(y)
                y = (y - new_mean[:, None]) * (std / new_std.clamp_min(1e-7))[:, None] + mean[:, None]
            rows[idx] = -y if self.invert else y
        return image, label


@dataclass
class Mirror(BatchOp):
    """Flip along each of ``axes`` (spatial axes) with probability ``prob``, image and label alike (exact)."""

    axes: Sequence[int] = (0, 1, 2)
    prob: float = 0.5

    def draw(self, rng: np.random.Generator, channels: int) -> Any:
        flips = rng.random(3) < self.prob
        axes = tuple(int(a) for k, a in enumerate(self.axes) if flips[k % 3])
        return axes or None

    def __call__(self, image: Tensor, label: Tensor | None, params: Sequence[Any]) -> tuple[Tensor, Tensor | None]:
        for axes in sorted({p for p in params if p is not None}):
            idx = _on([i for i, p in enumerate(params) if p == axes], image.device)
            dims = [a + 2 for a in axes]
            image[idx] = torch.flip(image[idx], dims)
            if label is not None:
                label[idx] = torch.flip(label[idx], dims)
        return image, label


# ---- presets -----------------------------------------------------------------------------------------------------


def _light(flip_axes: Sequence[int]) -> list[BatchOp]:
    # MONAI's RandFlipd (p 0.5 per axis), RandScaleIntensityd(factors=0.1), RandShiftIntensityd(offsets=0.1)
    return [
        Brightness(prob=0.5, factor=(0.9, 1.1), style="uniform", per_channel=False),
        Shift(prob=0.5, offset=(-0.1, 0.1)),
        Mirror(axes=tuple(flip_axes)),
    ]


def _monai_affine(rot: float, scale: float, prob: float) -> dict[str, Any]:
    # RandAffined(rotate_range=rot, scale_range=scale, prob): rotation and per-axis scaling in one draw
    rng = (1.0 - scale, 1.0 + scale)
    return {"p_rotation": prob, "rotation": rot, "scaling": rng, "scale_per_axis": True, "joint": True}


def preset_ops(name: str, flip_axes: Sequence[int] | None = (0, 1, 2)) -> tuple[dict[str, Any] | None, list[BatchOp]]:
    """The batch form of augmentation preset ``name``: the :class:`Spatial` arguments (``None``: no resampling)
    and the other ops in order."""
    flips = tuple(flip_axes or ())
    light = _light(flips)
    mirror, intensity = light[-1:], light[:-1]
    if name == "none":
        return None, []
    if name == "light":
        return None, light
    if name == "default":
        return _monai_affine(0.26, 0.1, 0.2), [*intensity, GaussianNoise(prob=0.15, std=(0.0, 0.1)), *mirror]
    if name == "strong":
        ops = [
            *intensity,
            GaussianNoise(prob=0.15, std=(0.0, 0.1)),
            GaussianBlur(prob=0.2, sigma=(0.5, 1.0), p_channel=1.0),
            Gamma(prob=0.3, gamma=(0.7, 1.5), style="uniform", retain_stats=False, per_channel=False),
            *mirror,
        ]
        return _monai_affine(0.52, 0.25, 0.3), ops
    if name == "nnunet":
        spatial = {"p_rotation": 0.2, "rotation": math.pi / 6, "p_scaling": 0.2, "scaling": (0.7, 1.4)}
        ops = [
            GaussianNoise(prob=0.1, std=(0.0, 0.1)),
            GaussianBlur(prob=0.2, sigma=(0.5, 1.0), p_channel=0.5),
            Brightness(prob=0.15, factor=(0.75, 1.25)),
            Contrast(prob=0.15, factor=(0.75, 1.25)),
            LowResolution(prob=0.25, zoom=(0.5, 1.0), p_channel=0.5),
            Gamma(prob=0.1, gamma=(0.7, 1.5), invert=True),
            Gamma(prob=0.3, gamma=(0.7, 1.5)),
            *mirror,
        ]
        return spatial, ops
    raise ValueError(f"Unknown augmentation {name!r} for mode 'batch'; choose one of: {', '.join(PRESETS)}.")


PRESETS = ("none", "light", "default", "strong", "nnunet")


def margin(patch_size: Sequence[int], spatial: Mapping[str, Any] | None) -> list[int]:
    """Voxels of context on each side of a patch for :class:`Spatial` (none without it): what the largest rotation
    and scaling reach beyond the patch, at most :data:`MAX_CONTEXT` of it."""
    if not spatial:
        return [0] * len(patch_size)
    rot = float(spatial.get("rotation", 0.0)) if spatial.get("p_rotation", 0.0) > 0 else 0.0
    scales = spatial.get("scaling", (1.0, 1.0))
    top = max(1.0, float(scales[1])) if spatial.get("p_scaling", 0.0) > 0 or spatial.get("joint") else 1.0
    extra = min(MAX_CONTEXT, (abs(math.cos(rot)) + abs(math.sin(rot))) * top - 1.0)
    return [int(math.ceil(p * extra / 2)) for p in patch_size]


class BatchAugmentation:
    """The batch augmentation of a preset: ``(image, label, seeds) -> (image, label)`` for batches of patches of
    ``input_size`` (the patch plus :func:`margin` on each side), giving patches of ``patch_size``.

    Args:
        patch_size: the training patch.
        augmentation: preset name (``training.registry``'s augmentation presets).
        flip_axes: the spatial axes mirrored.
        ops: explicit ops instead of a preset (after an optional leading :class:`Spatial`).
    """

    def __init__(
        self,
        patch_size: Sequence[int],
        augmentation: str = "default",
        flip_axes: Sequence[int] | None = (0, 1, 2),
        ops: Sequence[BatchOp] | None = None,
    ):
        self.patch_size = [int(p) for p in patch_size]
        if ops is None:
            spatial, rest = preset_ops(str(augmentation).lower().replace("-", "_"), flip_axes)
            self.margin = margin(self.patch_size, spatial)
            head = [] if spatial is None else [Spatial(patch_size=self.patch_size, **spatial)]
            self.ops: list[BatchOp] = [*head, *rest]
        else:
            self.ops = list(ops)
            first = self.ops[0] if self.ops else None
            self.margin = margin(self.patch_size, vars(first)) if isinstance(first, Spatial) else [0] * len(patch_size)
        for op in self.ops:
            if isinstance(op, Spatial):
                op.patch_size = self.patch_size
        self.input_size = [p + 2 * m for p, m in zip(self.patch_size, self.margin, strict=True)]

    def params(self, seed: int, channels: int) -> list[Any]:
        """The parameters of every op for the patch with augmentation seed ``seed``."""
        return [op.draw(np.random.default_rng([int(seed), k]), channels) for k, op in enumerate(self.ops)]

    def __call__(
        self, image: Tensor, label: Tensor | None, seeds: Sequence[int] | Tensor
    ) -> tuple[Tensor, Tensor | None]:
        seeds = [int(s) for s in (seeds.tolist() if isinstance(seeds, Tensor) else seeds)]
        if len(seeds) != image.shape[0]:
            raise ValueError(f"{len(seeds)} augmentation seeds for a batch of {image.shape[0]}.")
        drawn = [self.params(s, int(image.shape[1])) for s in seeds]
        ops, params = self.ops, [[d[k] for d in drawn] for k in range(len(self.ops))]
        if not ops or not isinstance(ops[0], Spatial):  # no resampling: the centre crop is the patch
            ops, params = [Spatial(patch_size=self.patch_size), *ops], [[None] * len(seeds), *params]
        source = image, label
        image, label = ops[0](image, label, params[0])
        image, label = _own(image, source[0]), None if label is None else _own(label, source[1])
        for op, p in zip(ops[1:], params[1:], strict=True):
            image, label = op(image, label, p)
        return image, label


def _own(x: Tensor, source: Tensor | None) -> Tensor:
    """``x`` contiguous and in memory of its own (the ops work in place; the caller's batch stays as it was)."""
    x = x.contiguous()
    shared = source is not None and x.untyped_storage().data_ptr() == source.untyped_storage().data_ptr()
    return x.clone() if shared else x


# ---- the trainer's prepare_batch -----------------------------------------------------------------------------------


def _plain(x: Any) -> Any:
    return x.as_tensor() if hasattr(x, "as_tensor") else x


class PrepareBatch:
    """The trainer's ``prepare_batch``: the batch's image and label on the training device as plain tensors (their
    metadata stays in the batch, for messages naming the cases), copied without blocking (from pinned memory when the
    data loader pins it), then augmented there by ``augmentation`` (with the batch's ``aug_seed``) when given.
    ``timings`` (a list) receives the seconds each augmentation took (CUDA synchronised: for benchmarks only)."""

    def __init__(self, augmentation: BatchAugmentation | None = None, timings: list[float] | None = None):
        self.augmentation = augmentation
        self.timings = timings

    def __call__(
        self, batchdata: Mapping[str, Any], device: Any = None, non_blocking: bool = False, **kwargs: Any
    ) -> tuple[Tensor, Tensor | None]:
        device = torch.device(device) if device is not None else None
        fast = non_blocking or (device is not None and device.type == "cuda")
        source = _plain(batchdata[IMAGE])
        image = source.to(device=device, non_blocking=fast, **kwargs)
        label = batchdata.get(LABEL)
        label = None if label is None else _plain(label).to(device=device, non_blocking=fast, **kwargs)
        if self.augmentation is None:
            return image, label
        if SEED_KEY not in batchdata:
            raise KeyError(
                f"augmentation_args#mode 'batch' needs each item's '{SEED_KEY}': build the training transforms with "
                "train_transforms(..., mode='batch')."
            )
        if self.timings is not None:
            import time

            if image.device.type == "cuda":
                torch.cuda.synchronize(image.device)
            t0 = time.perf_counter()
        image, label = self.augmentation(image, label, batchdata[SEED_KEY])
        if self.timings is not None:
            if image.device.type == "cuda":
                torch.cuda.synchronize(image.device)
            self.timings.append(time.perf_counter() - t0)
        return image, label


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"augmentation_args#mode must be one of {', '.join(MODES)}, got {mode!r}.")
    return mode


def prepare_batch(
    patch_size: Sequence[int],
    augmentation: str = "default",
    flip_axes: Sequence[int] | None = (0, 1, 2),
    mode: str = DEFAULT_MODE,
    **_: Any,
) -> Callable[..., tuple[Tensor, Tensor | None]]:
    """``train#trainer#prepare_batch`` from ``augmentation_args``: a :class:`PrepareBatch` that augments on the
    training device when ``mode='batch'`` (the other arguments are the training chain's)."""
    if check_mode(mode) == "sample":
        return PrepareBatch()
    return PrepareBatch(BatchAugmentation(patch_size, augmentation, flip_axes))
