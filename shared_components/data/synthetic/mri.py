"""Synthetic brain MRI: multi-channel brain-tumour phantoms (MSD Task01, BraTS 2021, a GaNDLF-style CSV) and
multi-centre T1 amygdala phantoms (the generic images/labels folder layout).

Brain-tumour phantom: a skull-stripped brain (as BraTS and MSD distribute it) with cortex, white matter and
ventricles, and a tumour of nested regions: a necrotic core inside an enhancing rim inside finger-like oedema
that spreads along the white matter, plus a non-enhancing part of the rim. Each channel has its own contrast
(T1: CSF dark, WM bright; T1-Gd: the rim enhances; T2: CSF and oedema bright; FLAIR: CSF suppressed, oedema
brightest), its own bias field and Rician noise.

Amygdala phantom: a T1 crop of the medial temporal lobes with grey/white matter texture, temporal horns, the
hippocampal heads behind two almond-shaped amygdalae (label 1 left, 2 right), and the suprasellar cistern
between them. Centres differ in spacing, intensity scale, noise, bias and stored orientation, like real
multi-centre data.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from shared_components.data.synthetic.shapes import (
    bias_field,
    blob,
    rician,
    save_nifti,
    smooth_field,
    world_grid,
    write_msd_json,
)

# tissue classes of the brain-tumour phantom
BG, CSF, GM, WM, EDEMA, ENHANCING, NECROSIS, NONENH = range(8)
# relative signal per channel and tissue (BG, CSF, GM, WM, oedema, enhancing, necrosis, non-enhancing)
CONTRAST = {
    "flair": (0.0, 0.12, 0.55, 0.45, 0.95, 0.70, 0.40, 0.80),
    "t1": (0.0, 0.20, 0.55, 0.78, 0.45, 0.50, 0.25, 0.40),
    "t1ce": (0.0, 0.20, 0.55, 0.78, 0.45, 1.00, 0.25, 0.42),
    "t2": (0.0, 1.00, 0.62, 0.42, 0.85, 0.70, 0.95, 0.75),
}
SCALE = {"flair": 900.0, "t1": 1100.0, "t1ce": 1400.0, "t2": 1800.0}
# how each layout numbers the tumour regions
TUMOUR_LABELS = {
    "brats2021": {EDEMA: 2, ENHANCING: 4, NECROSIS: 1, NONENH: 1},  # 1 NCR/NET, 2 ED, 4 ET
    "brats2015": {EDEMA: 2, ENHANCING: 4, NECROSIS: 1, NONENH: 3},  # 1 necrosis, 2 oedema, 3 non-enh., 4 enh.
    "brats2023": {EDEMA: 2, ENHANCING: 3, NECROSIS: 1, NONENH: 1},  # 1 NCR, 2 ED, 3 ET
    "msd": {EDEMA: 1, ENHANCING: 3, NECROSIS: 2, NONENH: 2},  # 1 oedema, 2 non-enhancing, 3 enhancing
}


def brain_tumour_phantom(
    rng: np.random.Generator,
    shape: Sequence[int] = (48, 56, 44),
    channels: Sequence[str] = ("flair", "t1", "t1ce", "t2"),
) -> tuple[np.ndarray, np.ndarray]:
    """``(image [C, X, Y, Z] float32, tissue map)``; map the tissue classes to a layout with :data:`TUMOUR_LABELS`."""
    shape = tuple(int(s) for s in shape)
    x, y, z = world_grid(shape, [2.0 / s for s in shape])  # unit cube coordinates in [-1, 1]
    f = [smooth_field(shape, rng, sigma=[s / 8 for s in shape]) for _ in range(4)]
    fine = smooth_field(shape, rng, sigma=1.2)
    u = rng.uniform
    tissue = np.zeros(shape, np.uint8)
    brain = blob(x, y, z, (0, 0, 0), (0.7, 0.8, 0.75), f[0], 0.04) < 1
    tissue[brain] = WM
    depth = blob(x, y, z, (0, 0, 0), (0.7, 0.8, 0.75), f[0], 0.04)
    cortex = brain & (depth > 0.78 + 0.06 * fine)  # a gyrated grey-matter shell
    tissue[cortex] = GM
    tissue[brain & (depth > 0.97)] = CSF  # sulcal CSF at the surface
    for side in (-1, 1):  # lateral ventricles
        v = blob(x, y, z, (side * 0.12, u(-0.05, 0.05), 0.1), (0.07, 0.35, 0.15), f[1], 0.05, side * 0.15) < 1
        tissue[v & brain] = CSF
    # tumour: necrotic core < enhancing rim < oedema, centred in one hemisphere
    side = rng.choice([-1, 1])
    c = (side * u(0.25, 0.45), u(-0.35, 0.35), u(-0.25, 0.3))
    r = u(0.16, 0.26)
    d = blob(x, y, z, c, (r, r * u(0.8, 1.2), r * u(0.8, 1.2)), f[2], 0.12)
    oedema = (blob(x, y, z, c, (2.0 * r, 2.1 * r, 1.9 * r), f[3], 0.35) < 1) & brain & (tissue != CSF)
    tissue[oedema & ((tissue == WM) | (d < 1.6))] = EDEMA  # finger-like: spreads along white matter
    core = brain & (d < 1)
    tissue[core] = ENHANCING
    necrosis_r = u(0.45, 0.7)
    tissue[core & (d < necrosis_r)] = NECROSIS
    theta = np.arctan2(y - c[1], x - c[0])
    nonenh = core & (d >= necrosis_r) & (np.cos(theta - u(0, 2 * np.pi)) > 0.55)  # a non-enhancing sector
    tissue[nonenh] = NONENH
    image = np.zeros((len(channels),) + shape, np.float32)
    for i, ch in enumerate(channels):
        signal = np.asarray(CONTRAST[ch], np.float32)[tissue]
        signal *= 1 + 0.04 * fine  # tissue texture
        signal *= bias_field(shape, rng, 0.12)
        noisy = rician(signal, u(0.015, 0.035), rng)
        image[i] = np.where(brain, noisy, 0.0) * SCALE[ch] * u(0.9, 1.1)  # skull-stripped: background is 0
    return image, tissue


def _tumour_label(tissue: np.ndarray, convention: str) -> np.ndarray:
    label = np.zeros(tissue.shape, np.uint8)
    for t, v in TUMOUR_LABELS[convention].items():
        label[tissue == t] = v
    return label


def _brain_cases(n: int, seed: int, desc: str, channels=("flair", "t1", "t1ce", "t2")):
    rng = np.random.default_rng(seed)
    for i in tqdm(range(n), desc=desc, unit="case", disable=n < 20):
        shape = (int(rng.integers(44, 53)), int(rng.integers(52, 61)), int(rng.integers(40, 47)))
        image, tissue = brain_tumour_phantom(rng, shape, channels)
        yield i, image, tissue


def write_msd_brain_tumour(dst: str | Path, n_train: int = 6, n_test: int = 2, seed: int = 0) -> Path:
    """MSD Task01_BrainTumour layout: one 4D NIfTI per case (``imagesTr/BRATS_001.nii.gz``, channels FLAIR, T1w,
    t1gd, T2w, float32, 1 mm), ``labelsTr`` with 1 oedema, 2 non-enhancing tumour, 3 enhancing tumour."""
    dst = Path(dst)
    training, test = [], []
    for i, image, tissue in _brain_cases(n_train + n_test, seed, "synthetic Task01_BrainTumour"):
        name = f"BRATS_{i + 1:03d}.nii.gz"
        vol = np.moveaxis(image, 0, -1)  # [X, Y, Z, C] as in the MSD files
        if i < n_train:
            save_nifti(dst / "imagesTr" / name, vol, (1.0, 1.0, 1.0), dtype=np.float32)
            save_nifti(dst / "labelsTr" / name, _tumour_label(tissue, "msd"), (1.0, 1.0, 1.0))
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        else:
            save_nifti(dst / "imagesTs" / name, vol, (1.0, 1.0, 1.0), dtype=np.float32)
            test.append(f"./imagesTs/{name}")
    (dst / "imagesTs").mkdir(parents=True, exist_ok=True)
    return write_msd_json(
        dst,
        "BRATS",
        "Synthetic brain-tumour phantoms in the MSD Task01_BrainTumour layout",
        {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
        training,
        test,
        tensor_image_size="4D",
    )


def write_brats(dst: str | Path, n: int = 6, seed: int = 0, n_unlabelled: int = 0, release: str = "2021") -> Path:
    """BraTS 2021 layout: ``BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz`` (int16 images, 1 mm);
    labels 1 necrotic/non-enhancing core, 2 oedema, 4 enhancing. ``release='2023'`` writes the BraTS 2023 glioma
    layout instead: ``BraTS-GLI-XXXXX-000/BraTS-GLI-XXXXX-000-{t1n,t1c,t2w,t2f,seg}.nii.gz`` with 3 = enhancing.
    ``n_unlabelled`` extra subjects have no ``seg`` (like the validation release)."""
    if release not in ("2021", "2023"):
        raise ValueError(f"release must be '2021' or '2023', got {release!r}.")
    dst = Path(dst)
    case_id = 0
    names = ("flair", "t1", "t1ce", "t2") if release == "2021" else ("t2f", "t1n", "t1c", "t2w")
    for i, image, tissue in _brain_cases(n + n_unlabelled, seed, f"synthetic BraTS {release}"):
        subject = f"BraTS2021_{case_id:05d}" if release == "2021" else f"BraTS-GLI-{case_id:05d}-000"
        sep = "_" if release == "2021" else "-"
        case_id += 1 + i % 3  # the released ids have gaps
        for c, ch in enumerate(names):
            path = dst / subject / f"{subject}{sep}{ch}.nii.gz"
            save_nifti(path, np.round(image[c]), (1.0, 1.0, 1.0), dtype=np.int16)
        if i < n:
            label = _tumour_label(tissue, f"brats{release}")
            save_nifti(dst / subject / f"{subject}{sep}seg.nii.gz", label, (1.0, 1.0, 1.0))
    return dst


def write_gandlf_csv(dst: str | Path, n: int = 6, seed: int = 0, centers: Sequence[str] = ("site_1", "site_2")) -> Path:
    """Images on disk (``<subject>/{t1,t1ce,t2,flair,seg}.nii.gz``) and a GaNDLF-style ``train.csv`` with
    ``SubjectID,Channel_0..3,Label,Center`` (absolute paths, as GaNDLF writes them; BraTS 2021 label values).
    Returns ``dst`` (the CSV is ``dst/train.csv``)."""
    dst = Path(dst)
    rows = []
    channels = ("t1", "t1ce", "t2", "flair")
    for i, image, tissue in _brain_cases(n, seed, "synthetic GaNDLF CSV", channels):
        subject = f"subject_{i + 1:03d}"
        files = [
            save_nifti(dst / subject / f"{ch}.nii.gz", image[c], (1.0, 1.0, 1.0), dtype=np.float32)
            for c, ch in enumerate(channels)
        ]
        seg = save_nifti(dst / subject / "seg.nii.gz", _tumour_label(tissue, "brats2021"), (1.0, 1.0, 1.0))
        rows.append([subject, *[str(f.resolve()) for f in files], str(seg.resolve()), centers[i % len(centers)]])
    with open(dst / "train.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["SubjectID", *[f"Channel_{c}" for c in range(len(channels))], "Label", "Center"])
        w.writerows(rows)
    return dst


# multi-centre amygdala data: (spacing mm, intensity scale, offset, noise, bias, stored flip, dtype)
CENTRE_STYLES = (
    ((1.0, 1.0, 1.0), 1000.0, 0.0, 0.025, 0.10, (False, False, False), np.int16),
    ((1.2, 1.2, 1.2), 2400.0, 150.0, 0.04, 0.20, (True, False, False), np.int16),
    ((1.05, 1.05, 1.4), 1.0, 0.0, 0.03, 0.15, (True, True, False), np.float32),
)
AMYGDALA_FOV_MM = (66.0, 46.0, 40.0)


def amygdala_phantom(
    rng: np.random.Generator, spacing: Sequence[float] = (1.0, 1.0, 1.0)
) -> tuple[np.ndarray, np.ndarray]:
    """T1-like crop of the medial temporal lobes (relative signal, RAS index order) and its label map
    (1 left amygdala, 2 right amygdala) on a grid of ``spacing`` mm covering :data:`AMYGDALA_FOV_MM`."""
    shape = tuple(int(round(f / s)) for f, s in zip(AMYGDALA_FOV_MM, spacing, strict=True))
    x, y, z = world_grid(shape, spacing)
    f = [smooth_field(shape, rng, sigma=[6 / s for s in spacing]) for _ in range(3)]
    u = rng.uniform
    signal = np.where(f[0] > u(-0.2, 0.2), 0.78, 0.56).astype(np.float32)  # white / grey matter texture
    label = np.zeros(shape, np.uint8)
    cistern = blob(x, y, z, (0, u(-2, 2), u(-4, 2)), (u(7, 10), 12, 9), f[1], 0.2) < 1
    signal[cistern] = 0.18
    half = u(18, 21)  # half the distance between the amygdalae
    for side, value in ((1, 1), (-1, 2)):  # +x is the patient's left in RAS
        cx = side * (half + u(-1.5, 1.5))
        hip = blob(x, y, z, (cx + side * 2, u(-16, -12), u(-8, -5)), (6, 11, 5), f[2], 0.15, side * 0.2) < 1
        signal[hip] = 0.58  # hippocampal head, behind the amygdala (unlabelled)
        horn = blob(x, y, z, (cx + side * 7, u(-8, -5), u(-7, -4)), (2.2, 8, 2.5), f[1], 0.1) < 1
        signal[horn] = 0.2  # temporal horn of the lateral ventricle
        amy = blob(x, y, z, (cx, u(-3, 1), u(-4, 0)), (u(7, 8.5), u(8.5, 10.5), u(7, 9)), f[2], 0.12, side * 0.3) < 1
        amy &= ~horn
        signal[amy] = 0.6
        label[amy] = value
    return signal, label


def write_amygdala_folders(
    dst: str | Path, centres: Sequence[str] = ("centre_a", "centre_b", "centre_c"), n_per_centre: int = 4, seed: int = 0
) -> Path:
    """A user's own multi-centre data for the generic folder converter: ``images/<centre>/<case>.nii.gz`` and
    ``labels/<centre>/<case>.nii.gz``; T1-like MRI, labels 1 left amygdala, 2 right amygdala. Centres differ in
    spacing, intensity scale and offset, noise, bias field, stored orientation and data type."""
    dst = Path(dst)
    rng = np.random.default_rng(seed)
    for ci, centre in enumerate(centres):
        spacing, scale, offset, noise, bias, flip, dtype = CENTRE_STYLES[ci % len(CENTRE_STYLES)]
        for k in range(n_per_centre):
            signal, label = amygdala_phantom(rng, spacing)
            signal = rician(signal * bias_field(signal.shape, rng, bias), noise, rng)
            image = signal * scale + offset
            image = np.round(image) if np.issubdtype(dtype, np.integer) else image
            case = f"sub-{ci + 1}{k + 1:02d}"
            save_nifti(dst / "images" / centre / f"{case}.nii.gz", image, spacing, flip, dtype=dtype)
            save_nifti(dst / "labels" / centre / f"{case}.nii.gz", label, spacing, flip)
    return dst
