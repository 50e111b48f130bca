"""The hippocampus-like phantom in the MSD Task04 layout.

A curved, tapering tube (head to tail) cut into an anterior and a posterior part, with grey-matter-like intensity,
a darker ventricle-like cavity beside it, a smooth bias field and Rician noise, so the segmentation problem is small
but not trivial.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from shared_components.data.synthetic.shapes import write_msd_json


def _bias_field(shape: tuple[int, ...], rng: np.random.Generator, strength: float = 0.2) -> np.ndarray:
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    field = np.ones(shape)
    for g in grids:
        field += strength * rng.uniform(-1, 1) * g + 0.5 * strength * rng.uniform(-1, 1) * g**2
    return field


def hippocampus_phantom(
    rng: np.random.Generator, shape: tuple[int, int, int] = (36, 50, 36)
) -> tuple[np.ndarray, np.ndarray]:
    """One image (float32, MRI-like intensities) and label (uint8: 1 anterior, 2 posterior) pair."""
    x, y, z = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    cx, cy, cz = (np.array(shape) / 2) + rng.uniform(-3, 3, 3)
    length = shape[1] * rng.uniform(0.55, 0.7)
    bend = rng.uniform(2.0, 5.0) * rng.choice([-1, 1])
    radius0 = rng.uniform(4.0, 5.5)
    t = (cy - y) / length + 0.5  # 0 at the anterior end (+y in RAS), 1 at the posterior end
    centre_x = cx + bend * np.sin(np.pi * np.clip(t, 0, 1))
    centre_z = cz + 0.5 * bend * np.cos(np.pi * np.clip(t, 0, 1))
    radius = radius0 * (1.1 - 0.6 * np.clip(t, 0, 1))  # a broad head tapering to a thin tail
    dist = np.sqrt((x - centre_x) ** 2 + (z - centre_z) ** 2)
    inside = (dist < radius) & (t >= 0) & (t <= 1)
    cut = rng.uniform(0.38, 0.5)
    label = np.zeros(shape, np.uint8)
    label[inside & (t < cut)] = 1
    label[inside & (t >= cut)] = 2
    ventricle = (np.sqrt((x - centre_x - radius0 - 2.5) ** 2 + (z - centre_z) ** 2) < 2.0) & (t > 0.1) & (t < 0.9)
    image = np.full(shape, 0.45, np.float32)  # white-matter-like background
    image += 0.05 * np.sin(x / rng.uniform(3, 6)) * np.cos(z / rng.uniform(3, 6))  # texture
    image[inside] = 0.62 + 0.03 * rng.standard_normal()
    image[ventricle] = 0.12
    image *= _bias_field(shape, rng)
    sigma = rng.uniform(0.04, 0.07)
    image = np.sqrt((image + sigma * rng.standard_normal(shape)) ** 2 + (sigma * rng.standard_normal(shape)) ** 2)
    return (image * 100).astype(np.float32), label


def write_msd_hippocampus(dst: str | Path, n_train: int = 24, n_test: int = 4, seed: int = 0) -> Path:
    """Write a small MSD Task04-layout dataset (``dataset.json``, ``imagesTr``, ``labelsTr``, ``imagesTs``)."""
    dst = Path(dst)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    training, test = [], []
    for i in tqdm(range(n_train + n_test), desc="synthetic hippocampus", unit="case"):
        shape = tuple(int(s) for s in rng.integers([32, 44, 32], [40, 56, 40]))
        image, label = hippocampus_phantom(rng, shape)
        name = f"hippocampus_{i + 1:03d}.nii.gz"
        if i < n_train:
            nib.save(nib.Nifti1Image(image, affine), dst / "imagesTr" / name)
            nib.save(nib.Nifti1Image(label, affine), dst / "labelsTr" / name)
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        else:
            nib.save(nib.Nifti1Image(image, affine), dst / "imagesTs" / name)
            test.append(f"./imagesTs/{name}")
    return write_msd_json(
        dst,
        "Hippocampus",
        "Synthetic hippocampus-like phantoms in the MSD Task04 layout",
        {"0": "MRI"},
        {"0": "background", "1": "Anterior", "2": "Posterior"},
        training,
        test,
    )
