"""Building blocks of the synthetic phantoms: world-coordinate grids, smooth random fields, deformed blobs,
bias fields, noise, and saving NIfTI files with a given orientation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import gaussian_filter


def world_grid(
    shape: Sequence[int], spacing: Sequence[float], centre: Sequence[float] = (0.0, 0.0, 0.0)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RAS millimetre coordinates of each voxel centre of a grid centred on ``centre``."""
    axes = [(np.arange(n) - (n - 1) / 2) * s + c for n, s, c in zip(shape, spacing, centre, strict=True)]
    return tuple(np.meshgrid(*[a.astype(np.float32) for a in axes], indexing="ij"))  # type: ignore[return-value]


def smooth_field(shape: Sequence[int], rng: np.random.Generator, sigma: float | Sequence[float]) -> np.ndarray:
    """Zero-mean, unit-std random field, smooth on the scale ``sigma`` (voxels)."""
    f = gaussian_filter(rng.standard_normal(tuple(shape)).astype(np.float32), sigma, mode="wrap")
    return (f - f.mean()) / (f.std() + 1e-6)


def blob(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    centre: Sequence[float],
    axes: Sequence[float],
    field: np.ndarray | None = None,
    wobble: float = 0.15,
    angle: float = 0.0,
) -> np.ndarray:
    """Normalised distance of an ellipsoid (< 1 inside), rotated by ``angle`` (radians, about z) and with its
    surface pushed in and out by ``wobble`` x ``field``, which gives smooth organ-like shapes."""
    dx, dy, dz = x - centre[0], y - centre[1], z - centre[2]
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    d = np.sqrt((u / axes[0]) ** 2 + (v / axes[1]) ** 2 + (dz / axes[2]) ** 2)
    return d + wobble * field if field is not None else d


def tube(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, points: Sequence[Sequence[float]], n: int = 48
) -> tuple[np.ndarray, np.ndarray]:
    """Distance (mm) to a smooth curve through ``points`` (quadratic Bezier of 3 points), and the curve
    parameter ``t`` in [0, 1] of the nearest point."""
    p = np.asarray(points, dtype=np.float32)
    ts = np.linspace(0, 1, n, dtype=np.float32)
    curve = ((1 - ts) ** 2)[:, None] * p[0] + (2 * (1 - ts) * ts)[:, None] * p[1] + (ts**2)[:, None] * p[2]
    best = np.full(x.shape, np.inf, np.float32)
    best_t = np.zeros(x.shape, np.float32)
    for t, q in zip(ts, curve, strict=True):
        d = (x - q[0]) ** 2 + (y - q[1]) ** 2 + (z - q[2]) ** 2
        closer = d < best
        best[closer] = d[closer]
        best_t[closer] = t
    return np.sqrt(best), best_t


def bias_field(shape: Sequence[int], rng: np.random.Generator, strength: float = 0.15) -> np.ndarray:
    """Smooth multiplicative MRI bias field around 1 (a low-order polynomial)."""
    grids = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    field = np.ones(tuple(shape), np.float32)
    for g in grids:
        field += strength * rng.uniform(-1, 1) * g + 0.5 * strength * rng.uniform(-1, 1) * g**2
    return np.clip(field, 0.5, 1.5)


def rician(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude-MRI noise: |signal + complex Gaussian noise|."""
    re = image + sigma * rng.standard_normal(image.shape).astype(np.float32)
    im = sigma * rng.standard_normal(image.shape).astype(np.float32)
    return np.sqrt(re**2 + im**2)


def affine_for(
    shape: Sequence[int], spacing: Sequence[float], flip: Sequence[bool] = (False, False, False)
) -> np.ndarray:
    """Voxel -> RAS affine of a grid centred on the origin; ``flip[i]`` makes axis ``i`` run the other way
    (e.g. ``(True, True, False)`` for the LPS-ordered arrays many CT exports have)."""
    aff = np.eye(4)
    for i, (n, s, f) in enumerate(zip(shape, spacing, flip, strict=True)):
        aff[i, i] = -s if f else s
        aff[i, 3] = (n - 1) / 2 * s if f else -(n - 1) / 2 * s
    return aff


def save_nifti(
    path: str | Path,
    data: np.ndarray,
    spacing: Sequence[float],
    flip: Sequence[bool] = (False, False, False),
    dtype: type | None = None,
) -> Path:
    """Save an array built in RAS index order (indices grow towards Left, Anterior, Superior), flipping the axes
    in ``flip`` and writing the matching affine, so the anatomy in world space is the same either way."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = data
    for axis, f in enumerate(flip):
        if f:
            arr = np.flip(arr, axis=axis)
    arr = np.ascontiguousarray(arr.astype(dtype) if dtype is not None else arr)
    img = nib.Nifti1Image(arr, affine_for(data.shape[:3], spacing, flip))
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_qform(img.affine, code=1)
    img.header.set_sform(img.affine, code=1)
    nib.save(img, path)
    return path


def write_msd_json(
    dst: Path,
    name: str,
    description: str,
    modality: dict[str, str],
    labels: dict[str, str],
    training: list[dict[str, str]],
    test: list[str],
    tensor_image_size: str = "3D",
) -> Path:
    """Write an MSD task's ``dataset.json`` (the fields and order of the official files) and return ``dst``."""
    meta = {
        "name": name,
        "description": description,
        "tensorImageSize": tensor_image_size,
        "modality": modality,
        "labels": labels,
        "numTraining": len(training),
        "numTest": len(test),
        "training": training,
        "test": test,
    }
    (dst / "dataset.json").write_text(json.dumps(meta, indent=4) + "\n")
    return dst
