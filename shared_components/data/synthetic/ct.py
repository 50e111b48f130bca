"""Synthetic abdominal CT in Hounsfield units, written in the official layouts of MSD Task09 Spleen, MSD Task03
Liver, LiTS and AbdomenCT-1K.

The phantom is an axial slab from the lung bases to the lower kidneys: air (-1000 HU) around a body of
subcutaneous fat (~-100), a muscle wall (~50) and intra-abdominal fat, bowel loops with gas, the liver on the
patient's right, the spleen posterior-left, two bean-shaped kidneys with a renal pelvis, a pancreas curving from
the duodenum to the splenic hilum, aorta and IVC, a vertebra (cancellous ~250, cortical ~700 HU) with its spinal
canal, ribs, lung bases (~-850) above the diaphragm and the scanner table. Organ shapes are ellipsoids deformed by smooth random
fields; the contrast phase (unenhanced to portal venous) varies per case, as do size, position, spacing and
noise. Liver tumours are hypodense lesions inside the liver.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import binary_dilation, gaussian_filter
from tqdm import tqdm

from shared_components.data.synthetic.shapes import blob, save_nifti, smooth_field, tube, world_grid, write_msd_json

FOV_MM = (360.0, 280.0, 180.0)  # left-right, anterior-posterior, cranio-caudal
ORGANS = ("liver", "kidney", "spleen", "pancreas", "liver_tumour")


def abdomen_ct_phantom(
    rng: np.random.Generator, spacing: tuple[float, float, float] = (6.0, 6.0, 5.0), n_tumours: int = 0
) -> tuple[np.ndarray, dict[str, np.ndarray], tuple[float, float, float]]:
    """One CT volume (int16 HU, RAS index order) and a boolean mask per organ in :data:`ORGANS`.

    Returns ``(image, masks, spacing)``; the grid covers :data:`FOV_MM` at ``spacing``.
    """
    shape = tuple(int(round(f / s)) for f, s in zip(FOV_MM, spacing, strict=True))
    x, y, z = world_grid(shape, spacing)  # z: -90 (caudal) .. +90 (cranial)
    sm = [smooth_field(shape, rng, sigma=(30 / spacing[0], 30 / spacing[1], 30 / spacing[2])) for _ in range(6)]
    u = rng.uniform
    phase = u(0.0, 1.0)  # 0 unenhanced .. 1 portal venous
    hu = np.full(shape, -1000.0, np.float32)
    masks = {k: np.zeros(shape, bool) for k in ORGANS}

    # body: elliptic cylinder, slightly wider caudally, with fat, muscle wall and visceral fat
    a, b = u(145, 170), u(105, 125)
    a_z = a * (1 + 0.05 * (-z / 90))
    body_y0 = u(-8, 8)
    r_body = np.sqrt((x / a_z) ** 2 + ((y - body_y0) / b) ** 2) + 0.015 * sm[0]
    body = r_body < 1.0
    fat_t = u(0.08, 0.16)
    hu[body] = -100 + 10 * sm[1][body]
    wall = body & (r_body < 1 - fat_t) & (r_body > 1 - fat_t - 0.07)
    hu[wall] = 50
    cavity = body & (r_body <= 1 - fat_t - 0.07)
    hu[cavity] = -90 + 8 * sm[2][cavity]
    inner = body & (r_body < 1 - fat_t - 0.1)  # inside the rib cage: where organs may lie

    # bowel loops (anterior, caudal half) with gas pockets
    bowel = cavity & (sm[3] > 0.3) & (y > body_y0 - 20) & (z < 40)
    hu[bowel] = 35
    hu[bowel & (sm[4] > 1.2)] = -950

    # stomach (anterior left, cranial) with an air-fluid level
    stomach = (blob(x, y, z, (u(40, 60), u(35, 55), u(40, 60)), (45, 35, 40), sm[5], 0.2) < 1) & cavity
    hu[stomach] = 25
    if stomach.any():  # gas rises to the anterior (patient supine)
        hu[stomach & (y > np.percentile(y[stomach], 75))] = -980

    spine_y = body_y0 - b + u(40, 50)
    # liver: large, patient's right (x < 0), anterior and cranial; hypodense tumours inside
    liver = blob(
        x, y, z, (u(-85, -60), u(-5, 20), u(20, 45)), (u(75, 90), u(75, 95), u(60, 75)), sm[0], 0.2, u(-0.3, 0.3)
    )
    masks["liver"] = (liver < 1) & inner
    hu[masks["liver"]] = 58 + 55 * phase + 4 * sm[2][masks["liver"]]
    # gallbladder under the liver (fluid, unlabelled)
    gb = (blob(x, y, z, (-45, 25, -10), (15, 18, 25)) < 1) & masks["liver"]
    hu[gb] = 8
    masks["liver"] &= ~gb
    for _ in range(n_tumours):
        inside = np.argwhere(masks["liver"])
        if len(inside) == 0:
            break
        c = inside[rng.integers(len(inside))]
        centre = (x[tuple(c)], y[tuple(c)], z[tuple(c)])
        r = u(10, 22)
        t = (blob(x, y, z, centre, (r, r * u(0.8, 1.2), r * u(0.8, 1.2)), sm[4], 0.12) < 1) & masks["liver"]
        masks["liver_tumour"] |= t
        hu[t] = hu[t] - u(30, 55) + 3 * sm[1][t]
    # spleen: posterior left, cranial
    spleen = blob(
        x, y, z, (u(85, 105), u(-55, -35), u(20, 45)), (u(25, 33), u(45, 60), u(45, 60)), sm[1], 0.15, u(0.4, 0.8)
    )
    masks["spleen"] = (spleen < 1) & inner & ~masks["liver"]
    hu[masks["spleen"]] = 48 + 70 * phase + 4 * sm[3][masks["spleen"]]
    # kidneys: posterior, both sides of the spine, caudal; hilum notch and renal pelvis
    for side in (-1, 1):
        cx, cz = side * u(62, 75), u(-40, -15)
        k = blob(x, y, z, (cx, spine_y + u(5, 15), cz), (u(24, 30), u(26, 32), u(45, 55)), sm[2], 0.08, side * 0.3)
        hilum = blob(x, y, z, (cx - side * 22, spine_y + 15, cz), (14, 12, 18)) < 1
        kidney = (k < 1) & ~hilum & inner
        masks["kidney"] |= kidney
        hu[kidney] = 35 + 150 * phase * (k[kidney] > 0.55) + 60 * phase * (k[kidney] <= 0.55)  # cortex vs medulla
        pelvis = kidney & (blob(x, y, z, (cx - side * 8, spine_y + 12, cz), (8, 8, 14)) < 1)
        hu[pelvis] = 12
    masks["kidney"] &= ~masks["liver"] & ~masks["spleen"]
    # pancreas: curved tube from the duodenal loop (right) to the splenic hilum (left)
    head = (u(-40, -25), spine_y + u(55, 70), u(-15, 0))
    tail = (u(70, 85), spine_y + u(25, 40), u(5, 20))
    mid = (0.0, spine_y + u(60, 75), u(-5, 10))
    d, t = tube(x, y, z, (head, mid, tail))
    masks["pancreas"] = (d < (13 - 5 * t) * (1 + 0.15 * sm[5])) & inner
    masks["pancreas"] &= ~(masks["liver"] | masks["spleen"] | masks["kidney"])
    hu[masks["pancreas"]] = 40 + 55 * phase + 6 * sm[0][masks["pancreas"]]
    # vessels in front of the spine
    aorta = np.sqrt((x - 18) ** 2 + (y - spine_y - 32) ** 2) < u(10, 13)
    ivc = np.sqrt((x + 22) ** 2 + (y - spine_y - 34) ** 2) < u(10, 13)
    hu[aorta & body] = 45 + 170 * phase
    hu[ivc & body] = 45 + 110 * phase
    for k in masks:
        masks[k] &= ~(aorta | ivc)
    # vertebra: body (cancellous + cortex), canal, posterior elements, paraspinal muscles
    rv = np.sqrt(x**2 + (y - spine_y) ** 2)
    vert = rv < 20
    muscle = body & ~cavity & (np.abs(x) < 60) & (y < spine_y + 5) & (y > body_y0 - b + 8)
    hu[muscle] = 52
    hu[vert] = 250
    hu[vert & (rv > 16)] = 700
    canal = np.sqrt(x**2 + (y - spine_y + 28) ** 2) < 9
    posterior = (np.abs(x) < 22) & (y < spine_y - 18) & (y > spine_y - 42) & ~canal
    hu[posterior & body] = 450
    hu[canal] = 12
    # ribs: thin bone arcs near the body wall in the cranial half, every ~25 mm
    rib_shell = (r_body > 1 - fat_t - 0.1) & (r_body < 1 - fat_t - 0.05)
    ribs = rib_shell & (np.cos(2 * np.pi * z / 25) > 0.7) & (z > -10) & (y < body_y0 + 0.6 * b)
    hu[ribs] = 600
    # lung bases: cranial, posterior-lateral, where liver and spleen are not
    lungs = (z > 55) & cavity & (np.abs(x) > 30) & (y < body_y0 + 30) & ~(masks["liver"] | masks["spleen"])
    diaphragm = lungs & binary_dilation(masks["liver"] | masks["spleen"], iterations=2)
    lungs &= ~diaphragm
    hu[lungs] = -850 + 30 * sm[3][lungs]
    hu[diaphragm] = 45  # the muscle between the lung bases and the upper abdominal organs
    # scanner table below the patient
    table = (y < body_y0 - b - 8) & (y > body_y0 - b - 18) & (np.abs(x) < 170)
    hu[table] = 150

    hu = gaussian_filter(hu, sigma=0.6)  # partial volume
    hu += rng.normal(0, u(8, 18), shape).astype(np.float32)
    image = np.clip(np.round(hu), -1024, 3071).astype(np.int16)
    for k in masks:
        masks[k] = masks[k] & body
    return image, masks, spacing


def _label(masks: dict[str, np.ndarray], values: dict[str, int]) -> np.ndarray:
    """Label map painting the organs in ``values`` order (later ones win, e.g. tumour over liver)."""
    label = np.zeros(next(iter(masks.values())).shape, np.uint8)
    for organ, v in values.items():
        label[masks[organ]] = v
    return label


def _spacing(rng: np.random.Generator) -> tuple[float, float, float]:
    s = float(rng.uniform(5.6, 6.6))
    return (s, s, float(rng.choice([4.0, 5.0, 5.0, 5.5])))


def _ct_cases(n: int, seed: int, values: dict[str, int], desc: str, tumours: tuple[int, int] = (0, 0)):
    rng = np.random.default_rng(seed)
    for i in tqdm(range(n), desc=desc, unit="case", disable=n < 20):
        image, masks, spacing = abdomen_ct_phantom(rng, _spacing(rng), int(rng.integers(tumours[0], tumours[1] + 1)))
        yield i, image, _label(masks, values), spacing


def _write_msd_ct(
    dst: Path,
    task: str,
    prefix: str,
    labels: dict[str, str],
    values: dict[str, int],
    n_train: int,
    n_test: int,
    seed: int,
    tumours=(0, 0),
) -> Path:
    training, test = [], []
    for i, image, label, spacing in _ct_cases(n_train + n_test, seed, values, f"synthetic {task}", tumours):
        name = f"{prefix}_{i + 1}.nii.gz"
        flip = (True, True, False)  # MSD CT arrays are typically stored LPS-ordered
        if i < n_train:
            save_nifti(dst / "imagesTr" / name, image, spacing, flip)
            save_nifti(dst / "labelsTr" / name, label, spacing, flip)
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        else:
            save_nifti(dst / "imagesTs" / name, image, spacing, flip)
            test.append(f"./imagesTs/{name}")
    (dst / "imagesTs").mkdir(parents=True, exist_ok=True)
    return write_msd_json(
        dst,
        task.split("_", 1)[1],
        f"Synthetic abdominal CT phantoms in the MSD {task} layout",
        {"0": "CT"},
        labels,
        training,
        test,
    )


def write_msd_spleen(dst: str | Path, n_train: int = 6, n_test: int = 2, seed: int = 0) -> Path:
    """MSD Task09_Spleen layout: ``dataset.json``, ``imagesTr/spleen_N.nii.gz``, ``labelsTr``, ``imagesTs``;
    labels 0 background, 1 spleen."""
    labels = {"0": "background", "1": "spleen"}
    return _write_msd_ct(Path(dst), "Task09_Spleen", "spleen", labels, {"spleen": 1}, n_train, n_test, seed)


def write_msd_liver(dst: str | Path, n_train: int = 6, n_test: int = 2, seed: int = 0) -> Path:
    """MSD Task03_Liver layout (``liver_N.nii.gz``); labels 1 liver, 2 cancer (tumour)."""
    labels = {"0": "background", "1": "liver", "2": "cancer"}
    values = {"liver": 1, "liver_tumour": 2}
    return _write_msd_ct(Path(dst), "Task03_Liver", "liver", labels, values, n_train, n_test, seed, (1, 3))


def write_lits(dst: str | Path, n: int = 6, seed: int = 0, n_test: int = 0) -> Path:
    """LiTS 2017 layout: ``Training Batch 1/volume-N.nii`` + ``segmentation-N.nii`` (uncompressed NIfTI, cases
    0-27 in batch 1, the rest in ``Training Batch 2``), test volumes ``Test Data/test-volume-N.nii``;
    labels 1 liver, 2 tumour. Some cases have no tumour, as in the real data."""
    dst = Path(dst)
    for i, image, label, spacing in _ct_cases(
        n + n_test, seed, {"liver": 1, "liver_tumour": 2}, "synthetic LiTS", (0, 3)
    ):
        flip = (True, True, False)
        if i < n:
            folder = dst / ("Training Batch 1" if i <= 27 else "Training Batch 2")
            save_nifti(folder / f"volume-{i}.nii", image, spacing, flip)
            save_nifti(folder / f"segmentation-{i}.nii", label, spacing, flip)
        else:
            save_nifti(dst / "Test Data" / f"test-volume-{i - n}.nii", image, spacing, flip)
    return dst


def write_abdomenct1k(dst: str | Path, n: int = 6, seed: int = 0, n_unlabelled: int = 0) -> Path:
    """AbdomenCT-1K layout: ``AbdomenCT-1K-ImagePart1/Case_00001_0000.nii.gz`` (cases 1-400 in part 1, 401-800
    in part 2, the rest in part 3) and ``Mask/Case_00001.nii.gz``; labels 1 liver, 2 kidney, 3 spleen,
    4 pancreas. ``n_unlabelled`` extra images have no mask (as part of the real release)."""
    dst = Path(dst)
    values = {"liver": 1, "kidney": 2, "spleen": 3, "pancreas": 4}
    for i, image, label, spacing in _ct_cases(n + n_unlabelled, seed, values, "synthetic AbdomenCT-1K"):
        case = i + 1
        part = 1 if case <= 400 else 2 if case <= 800 else 3
        save_nifti(dst / f"AbdomenCT-1K-ImagePart{part}" / f"Case_{case:05d}_0000.nii.gz", image, spacing)
        if i < n:
            save_nifti(dst / "Mask" / f"Case_{case:05d}.nii.gz", label, spacing)
    return dst
