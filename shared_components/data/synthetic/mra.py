"""Synthetic TOF-MRA with intracranial aneurysms, in the ADAM challenge layout (``converters/adam.py``).

A crop of the skull base around the circle of Willis at about 0.4 x 0.4 x 0.6 mm: dark, slightly textured brain
tissue with darker CSF pockets and a bright, branching arterial tree (two internal carotid arteries and the basilar
artery rising into a ring, whose middle, anterior and posterior cerebral branches bifurcate into thinner and
dimmer vessels, with partial-volume edges). Saccular aneurysms of 2-10 mm sit on the parent vessels, mostly at
bifurcations, with an inhomogeneous lumen (slow flow); the label (1) holds the sac without the parent vessel, as
ADAM annotates it. Some aneurysms are treated (coiled or clipped): a signal void with a dark susceptibility halo,
labelled 2; some cases have no aneurysm at all. ``orig/TOF`` has a bias field (int16), ``pre/TOF`` is the bias
corrected float image, the structural image is T1-like (coarse in ``orig/``, on the TOF grid in ``pre/``);
``location.txt`` lists each untreated aneurysm's centre of mass and maximum radius. Arrays are stored LPS-ordered,
as scanners often write them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter, zoom
from tqdm import tqdm

from shared_components.data.converters.adam import object_location, write_locations
from shared_components.data.synthetic.shapes import affine_for, bias_field, rician, save_nifti, smooth_field, world_grid

SPACING = (0.4, 0.4, 0.6)
SHAPE = (80, 80, 56)
STORED_FLIP = (True, True, False)  # LPS-ordered arrays
TISSUE, CSF, VESSEL, ANEURYSM = 0.24, 0.1, 1.0, 0.85


def _segments(rng: np.random.Generator, half: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float, float]]:
    """Vessel segments ``(p0, p1, r0, r1)`` in mm: carotids and basilar artery into a ring, then bifurcating
    branches leaving it, fitted to a field of view of half-size ``half``."""
    u = rng.uniform
    s = float(min(half[:2])) / 16.0  # scale the anatomy to the field of view (16 mm half-width at 80 voxels)
    ring_r = u(7.0, 9.0) * s
    ring_z = u(-0.15, 0.15) * half[2]
    n_ring = 8
    angles = np.linspace(0, 2 * np.pi, n_ring, endpoint=False) + u(-0.2, 0.2)
    ring = [np.array([ring_r * np.cos(a) * u(0.9, 1.1), ring_r * np.sin(a) * u(0.85, 1.0), ring_z]) for a in angles]
    segs: list[tuple[np.ndarray, np.ndarray, float, float]] = []
    for i in range(n_ring):
        segs.append((ring[i], ring[(i + 1) % n_ring], 0.7 * s, 0.7 * s))
    bottom = -half[2] - 2.0
    feeders = [(1, 1.5), (3, 1.5), (6, 1.4)]  # two carotids (anterior-lateral), the basilar artery (posterior)
    for k, r in feeders:
        top = ring[k]
        base = top + np.array([u(-2, 2) * s, u(-2, 2) * s, bottom - top[2]])
        mid = (top + base) / 2 + np.array([u(-2, 2) * s, u(-2, 2) * s, 0.0])
        segs += [(base, mid, r * s, r * s), (mid, top, r * s, 0.95 * r * s)]

    def branch(p: np.ndarray, direction: np.ndarray, r: float, depth: int) -> None:
        if depth == 0 or r < 0.25:
            return
        d = direction / np.linalg.norm(direction)
        length = u(5.0, 9.0) * s * (0.6 + 0.2 * depth)
        q = p + d * length
        mid = (p + q) / 2 + rng.normal(size=3) * 0.12 * length  # tortuous, not straight
        segs.extend([(p, mid, r, 0.96 * r), (mid, q, 0.96 * r, 0.92 * r)])
        for sign in (-1, 1):
            axis = np.cross(d, rng.normal(size=3))
            axis /= np.linalg.norm(axis) + 1e-9
            angle = sign * u(0.35, 0.8)
            new = d * np.cos(angle) + np.cross(axis, d) * np.sin(angle) + axis * (axis @ d) * (1 - np.cos(angle))
            branch(q, new + np.array([0, 0, u(0.0, 0.4)]), r * u(0.68, 0.8), depth - 1)

    for k in (0, 2, 4, 5, 7):  # middle, anterior and posterior cerebral arteries leave the ring outwards
        out = ring[k] / (np.linalg.norm(ring[k][:2]) + 1e-9)
        branch(ring[k], np.array([out[0], out[1], u(0.1, 0.6)]), u(0.9, 1.15) * s, 3)
    return segs


def _rasterise(
    coords: tuple[np.ndarray, ...], spacing: Sequence[float], segs: list, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Vessel fraction in [0, 1] (partial volume over about one voxel) and the local vessel radius (mm)."""
    x, y, z = coords
    frac = np.zeros(shape, np.float32)
    radius = np.zeros(shape, np.float32)
    origin = np.array([x[0, 0, 0], y[0, 0, 0], z[0, 0, 0]])
    sp = np.asarray(spacing, dtype=np.float64)
    soft = float(min(spacing))
    for p0, p1, r0, r1 in segs:
        lo = np.floor((np.minimum(p0, p1) - max(r0, r1) - 1.0 - origin) / sp).astype(int).clip(0, np.array(shape) - 1)
        hi = np.ceil((np.maximum(p0, p1) + max(r0, r1) + 1.0 - origin) / sp).astype(int).clip(0, np.array(shape) - 1)
        if np.any(hi < 0) or np.any(lo > np.array(shape) - 1) or np.any(hi < lo):
            continue
        box = tuple(slice(a, b + 1) for a, b in zip(lo, hi, strict=True))
        px, py, pz = x[box] - p0[0], y[box] - p0[1], z[box] - p0[2]
        d = p1 - p0
        t = np.clip((px * d[0] + py * d[1] + pz * d[2]) / max(float(d @ d), 1e-9), 0, 1)
        dist = np.sqrt((px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (pz - t * d[2]) ** 2)
        r = r0 + (r1 - r0) * t
        f = np.clip((r - dist) / soft + 0.5, 0, 1).astype(np.float32)
        closer = f > frac[box]
        frac[box] = np.maximum(frac[box], f)
        radius[box] = np.where(closer, r, radius[box])
    return frac, radius


def _aneurysm_sites(
    rng: np.random.Generator, segs: list, half: np.ndarray, n: int, min_gap: float, margin: float
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """``(point on the vessel, unit outward direction, parent radius)`` for ``n`` sac sites, bifurcations first,
    away from the borders and from each other."""
    ends = [(p1, p1 - p0, r1) for p0, p1, _, r1 in segs if r1 >= 0.45]
    mids = [((p0 + p1) / 2, p1 - p0, (r0 + r1) / 2) for p0, p1, r0, r1 in segs if (r0 + r1) / 2 >= 0.5]
    candidates = ends + mids
    order = rng.permutation(len(candidates))
    chosen: list[tuple[np.ndarray, np.ndarray, float]] = []
    for i in order:
        if len(chosen) == n:
            break
        p, d, r = candidates[i]
        if np.any(np.abs(p) > half - margin) or any(np.linalg.norm(p - c[0]) < min_gap for c in chosen):
            continue
        d = d / (np.linalg.norm(d) + 1e-9)
        normal = np.cross(d, rng.normal(size=3))
        normal /= np.linalg.norm(normal) + 1e-9
        if i < len(ends):  # at a bifurcation the sac points on along the parent vessel
            normal = (0.6 * d + 0.8 * normal) / np.linalg.norm(0.6 * d + 0.8 * normal)
        chosen.append((p, normal, r))
    return chosen


def tof_mra_phantom(
    rng: np.random.Generator,
    shape: Sequence[int] = SHAPE,
    spacing: Sequence[float] = SPACING,
    n_aneurysms: int = 1,
    n_treated: int = 0,
    diameter_mm: tuple[float, float] = (2.0, 10.0),
) -> dict[str, Any]:
    """One case in RAS index order: ``tof`` (relative signal, no bias field), ``label`` (uint8: 1 untreated
    aneurysm, 2 treated), ``struct`` (T1-like), ``aneurysms`` (per untreated sac: its mask) and ``diameters_mm``.

    Sac diameters lie in ``diameter_mm`` (skewed to small ones, as in patients; below two thirds of the field of
    view's half-size)."""
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    coords = world_grid(shape, spacing)
    x, y, z = coords
    half = np.array([(n - 1) / 2 * s for n, s in zip(shape, spacing, strict=True)])
    u = rng.uniform
    segs = _segments(rng, half)
    frac, vessel_r = _rasterise(coords, spacing, segs, shape)
    texture = smooth_field(shape, rng, sigma=[1.2 / s for s in spacing])
    flow = smooth_field(shape, rng, sigma=[4.0 / s for s in spacing])
    csf = smooth_field(shape, rng, sigma=[3.0 / s for s in spacing]) > u(1.1, 1.5)  # sulcal / cisternal CSF
    tissue = np.where(csf, CSF, TISSUE) * (1 + 0.06 * texture)
    # smaller arteries are dimmer (in-flow saturation, partial volume); flow varies smoothly
    bright = VESSEL * (0.65 + 0.35 * np.clip(vessel_r / 1.2, 0, 1)) * (1 + 0.05 * flow)
    signal = tissue * (1 - frac) + bright * frac
    label = np.zeros(shape, np.uint8)
    vessel_core = frac > 0.5
    max_d = min(diameter_mm[1], float(min(half)) * 2 / 3)
    sites = _aneurysm_sites(rng, segs, half, n_aneurysms + n_treated, min_gap=max_d + 2.0, margin=1.0 + max_d / 2)
    sacs, diameters = [], []
    lumen_field = smooth_field(shape, rng, sigma=[1.5 / s for s in spacing])
    for i, (p, normal, r_parent) in enumerate(sites):
        d = diameter_mm[0] + (max(diameter_mm[0], max_d) - diameter_mm[0]) * rng.beta(1.5, 3.5)  # mostly small
        rad = d / 2
        centre = p + normal * (r_parent + 0.55 * rad)
        axes = np.array([rad, rad * u(0.8, 1.0), rad * u(0.8, 1.0)])
        dist = np.sqrt(
            ((x - centre[0]) / axes[0]) ** 2 + ((y - centre[1]) / axes[1]) ** 2 + ((z - centre[2]) / axes[2]) ** 2
        )
        dist += 0.08 * lumen_field  # slightly lobulated dome
        sac = dist < 1.0
        if i < n_aneurysms:
            pv = np.clip((1.0 - dist) * rad / min(spacing) + 0.5, 0, 1)  # partial-volume wall
            lumen = ANEURYSM * (1 + 0.12 * lumen_field) * (0.9 + 0.1 * np.clip(1 - dist, 0, 1))
            signal = np.where(pv > frac, signal * (1 - pv) + lumen * pv, signal)
            mask = sac & ~vessel_core
            label[mask] = 1
            sacs.append(mask)
            diameters.append(d)
        else:  # treated: coil/clip signal void with a susceptibility halo, labelled 2
            halo = dist < 1.0 + 1.2 / rad
            signal = np.where(halo, signal * 0.35, signal)
            signal = np.where(sac, 0.03 + 0.02 * lumen_field.clip(-1, 1), signal)
            label[halo & (label == 0)] = 2
    signal = gaussian_filter(signal.astype(np.float32), 0.35)
    struct = np.where(csf, 0.15, 0.6) * (1 + 0.04 * texture) * (1 - 0.6 * frac)  # T1-like: arteries darker
    struct = np.where(label == 2, 0.1, struct)
    return {
        "tof": signal.astype(np.float32),
        "label": label,
        "struct": struct.astype(np.float32),
        "aneurysms": sacs,
        "diameters_mm": diameters,
    }


def _stored_index(voxel: np.ndarray, shape: Sequence[int], flip: Sequence[bool]) -> np.ndarray:
    """Voxel coordinates in RAS index order -> the stored (flipped) array's coordinates."""
    return np.array([n - 1 - v if f else v for v, n, f in zip(voxel, shape, flip, strict=True)])


def _every(i: int, fraction: float, offset: int) -> bool:
    """Whether case ``i`` is one of the evenly spread ``fraction`` of cases (deterministic, never case 0)."""
    return int((i + offset) * fraction) > int((i + offset - 1) * fraction)


def write_adam(
    dst: str | Path,
    n: int = 6,
    seed: int = 0,
    shape: Sequence[int] = SHAPE,
    spacing: Sequence[float] = SPACING,
    negative_fraction: float = 0.2,
    treated_fraction: float = 0.25,
    n_test: int = 0,
) -> Path:
    """ADAM layout (``<case>/orig/TOF.nii.gz``, ``orig/struct.nii.gz``, ``pre/TOF.nii.gz``,
    ``pre/struct_aligned.nii.gz``, ``aneurysms.nii.gz``, ``location.txt``): ``n`` labelled cases, about
    ``negative_fraction`` of them without aneurysm and ``treated_fraction`` with a treated one (label 2), spread
    evenly (with 4 cases: the 2nd has a treated aneurysm, the 4th none), plus ``n_test`` unlabelled cases."""
    dst = Path(dst)
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    for i in tqdm(range(n + n_test), desc="synthetic ADAM TOF-MRA", unit="case", disable=n + n_test < 20):
        case = dst / f"{10001 + i}"
        negative = _every(i, negative_fraction, 2)
        n_untreated = 0 if negative else int(rng.choice([1, 1, 1, 2]))
        n_treated = int(_every(i, treated_fraction, 3))
        ph = tof_mra_phantom(rng, shape, spacing, n_untreated, n_treated)
        tof = ph["tof"] * 1000.0 * rng.uniform(0.8, 1.2)
        orig = rician(tof * bias_field(shape, rng, 0.15), rng.uniform(12, 20), rng)
        pre = rician(tof, rng.uniform(12, 20), rng)
        save_nifti(case / "orig" / "TOF.nii.gz", np.round(orig), spacing, STORED_FLIP, dtype=np.int16)
        save_nifti(case / "pre" / "TOF.nii.gz", pre, spacing, STORED_FLIP, dtype=np.float32)
        struct = rician(ph["struct"] * 800.0, 15.0, rng)
        coarse = zoom(struct, 0.5, order=1)
        save_nifti(case / "orig" / "struct.nii.gz", np.round(coarse), [2 * s for s in spacing], dtype=np.int16)
        save_nifti(case / "pre" / "struct_aligned.nii.gz", struct, spacing, STORED_FLIP, dtype=np.float32)
        if i >= n:
            continue
        save_nifti(case / "aneurysms.nii.gz", ph["label"], spacing, STORED_FLIP, dtype=np.uint8)
        affine = affine_for(shape, spacing)
        rows = []
        for mask in ph["aneurysms"]:
            loc = object_location(mask, affine)
            if loc is not None:
                rows.append((*_stored_index(np.asarray(loc["center"]), shape, STORED_FLIP), loc["radius_mm"]))
        write_locations(case / "location.txt", rows)
    return dst


def write_lausanne(
    dst: str | Path, n_patients: int = 3, n_controls: int = 1, seed: int = 0, shape: Sequence[int] = SHAPE
) -> Path:
    """The Lausanne TOF-MRA cohort's BIDS layout (OpenNeuro ds003949): ``sub-XXX/ses-YYYYMMDD/anat/*_angio.nii.gz``
    (and ``_T1w``), ``derivatives/N4_bias_field_corrected/...desc-angio_N4bfc_mask.nii.gz`` (and ``_brain_mask``),
    ``derivatives/manual_masks/...desc-Lesion_<k>_mask.nii.gz`` (one binary mask per aneurysm, patients only) and
    ``participants.tsv``; the first patient has a second session (a follow-up scan)."""
    dst = Path(dst)
    rng = np.random.default_rng(seed)
    rows = ["participant_id\texam_date\tgroup"]
    scans = [(i, 0) for i in range(n_patients + n_controls)] + ([(0, 1)] if n_patients else [])
    for i, visit in scans:
        patient = i < n_patients
        sub, date = f"sub-{i * 7 + 3:03d}", f"{2010 + visit}{i % 12 + 1:02d}{i % 28 + 1:02d}"
        ses = f"ses-{date}"
        if visit == 0:
            rows.append(f"{sub}\t{date}\t{'patient' if patient else 'control'}")
        ph = tof_mra_phantom(rng, shape, SPACING, n_aneurysms=int(rng.choice([1, 2])) if patient else 0)
        tof = ph["tof"] * 900.0
        stem = f"{sub}_{ses}"
        anat = dst / sub / ses / "anat"
        save_nifti(anat / f"{stem}_angio.nii.gz", np.round(rician(tof * bias_field(tof.shape, rng), 15, rng)), SPACING)
        save_nifti(anat / f"{stem}_T1w.nii.gz", rician(ph["struct"] * 800.0, 15.0, rng), SPACING)
        n4 = dst / "derivatives" / "N4_bias_field_corrected" / sub / ses / "anat"
        corrected = rician(tof, 15, rng)
        save_nifti(n4 / f"{stem}_desc-angio_N4bfc_mask.nii.gz", corrected, SPACING, dtype=np.float32)
        save_nifti(n4 / f"{stem}_desc-angio_N4bfc_brain_mask.nii.gz", corrected, SPACING, dtype=np.float32)
        masks = dst / "derivatives" / "manual_masks" / sub / ses / "anat"
        for k, mask in enumerate(ph["aneurysms"], start=1):
            save_nifti(masks / f"{stem}_desc-Lesion_{k}_mask.nii.gz", mask.astype(np.uint8), SPACING)
    (dst / "participants.tsv").write_text("\n".join(rows) + "\n")
    (dst / "dataset_description.json").write_text('{"Name": "synthetic Lausanne TOF-MRA", "BIDSVersion": "1.6.0"}\n')
    return dst
