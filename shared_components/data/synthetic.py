"""Synthetic but realistic data written in official dataset layouts, for the demo and for tests.

Writers (each returns the dataset root it wrote): :func:`write_msd_hippocampus` (here), the CT ones in
``synthetic_ct`` (MSD spleen/liver, LiTS, AbdomenCT-1K) and the MRI ones in ``synthetic_mri`` (MSD brain tumour,
BraTS 2021, GaNDLF CSV, multi-centre amygdala folders); :data:`WRITERS` names them all for ``scripts/synthetic.py``.

The hippocampus-like phantom is a curved, tapering tube (head to tail) cut into an anterior and a posterior
part, with grey-matter-like intensity, a darker ventricle-like cavity beside it, a smooth bias field and
Rician noise, so the segmentation problem is small but not trivial.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from shared_components.data.phantom_utils import write_msd_json
from shared_components.data.synthetic_ct import (
    abdomen_ct_phantom,
    write_abdomenct1k,
    write_lits,
    write_msd_liver,
    write_msd_spleen,
)
from shared_components.data.synthetic_mri import (
    amygdala_phantom,
    brain_tumour_phantom,
    write_amygdala_folders,
    write_brats,
    write_gandlf_csv,
    write_msd_brain_tumour,
)


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


WRITERS = {
    "msd_hippocampus": write_msd_hippocampus,
    "msd_spleen": write_msd_spleen,
    "msd_liver": write_msd_liver,
    "msd_brain_tumour": write_msd_brain_tumour,
    "lits": write_lits,
    "abdomenct1k": write_abdomenct1k,
    "brats": write_brats,
    "amygdala_folders": write_amygdala_folders,
    "gandlf_csv": write_gandlf_csv,
}

__all__ = [
    "WRITERS",
    "abdomen_ct_phantom",
    "amygdala_phantom",
    "brain_tumour_phantom",
    "hippocampus_phantom",
    "write_abdomenct1k",
    "write_amygdala_folders",
    "write_brats",
    "write_gandlf_csv",
    "write_lits",
    "write_msd_brain_tumour",
    "write_msd_hippocampus",
    "write_msd_liver",
    "write_msd_spleen",
]
