"""ADAM challenge (Aneurysm Detection And segMentation, MICCAI 2020, https://adam.isi.uu.nl/): intracranial
aneurysms on TOF-MRA, one folder per case::

    <case>/orig/TOF.nii.gz            the TOF-MRA as acquired
    <case>/orig/struct.nii.gz         a structural image (T1, T2 or FLAIR), not aligned to the TOF-MRA
    <case>/pre/TOF.nii.gz             the TOF-MRA, bias-field corrected (N4)
    <case>/pre/struct_aligned.nii.gz  the structural image aligned to the TOF-MRA
    <case>/aneurysms.nii.gz           0 background, 1 untreated unruptured aneurysm, 2 treated aneurysm or artefact
    <case>/location.txt               one line ``x, y, z, r`` per untreated aneurysm: its centre of mass (voxel
                                      coordinates of the TOF-MRA) and maximum radius (mm)

The challenge scores only label 1: label 2 is ignored in the segmentation metrics and the detection hit rule
(a candidate is a hit when its centre lies within an aneurysm's radius of that aneurysm's centre, in mm). The
datalist maps raw 2 to background for training (``label_map`` ``{1: 1}``) and records what evaluation needs:
``evaluation`` (the ignored raw label, the extra metrics, ``froc: true``) and ``aneurysms`` (per case, every
aneurysm's centre voxel, centre in world mm, radius and whether it is treated). Treated aneurysms are the
connected components of label 2 (location.txt does not list them); a listed location whose centre voxel is
label 2 is marked treated too. Cases without aneurysms are kept as negatives.

The helpers :func:`read_locations`, :func:`write_locations` and :func:`mask_locations` are shared with the
synthetic ADAM data, the Lausanne converter and the FROC evaluation.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from shared_components.data.checks import check_datalist
from shared_components.data.converters.base import build_datalist, datalist_path
from shared_components.data.datalist import save_datalist
from shared_components.data.errors import DataValidationError, Problem
from shared_components.data.image_files import read_array, read_header, relative_to

LABELS = {"0": "background", "1": "aneurysm"}
RAW_LABELS = {
    "0": "background",
    "1": "untreated, unruptured aneurysm",
    "2": "treated aneurysm or treatment artefact (ignored in evaluation)",
}
LABEL_MAP = {"1": 1}  # raw 2 (treated) -> background for training
TREATED = 2
IMAGE_FILES = {"TOF": "TOF.nii.gz", "struct": "struct_aligned.nii.gz"}
LABEL_FILE = "aneurysms.nii.gz"
LOCATION_FILE = "location.txt"
EXTRA_METRICS = ["vs"]  # the ADAM segmentation metrics are Dice, (modified) HD95 and volumetric similarity


def read_locations(path: str | os.PathLike) -> list[tuple[float, float, float, float]]:
    """``(x, y, z, r)`` per line of an ADAM ``location.txt`` (commas and/or spaces; blank lines skipped)."""
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        parts = [p for p in re.split(r"[,\s]+", line.strip()) if p]
        if len(parts) != 4:
            raise ValueError(f"{path} line {n}: {line!r} is not 'x, y, z, r'")
        try:
            x, y, z, r = (float(p) for p in parts)
        except ValueError as e:
            raise ValueError(f"{path} line {n}: {line!r} is not four numbers") from e
        rows.append((x, y, z, r))
    return rows


def write_locations(path: str | os.PathLike, rows: Sequence[Sequence[float]]) -> Path:
    """Write ``location.txt`` as ADAM does: ``x, y, z, r`` (integer voxel, radius in mm), one line each."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{int(round(x))}, {int(round(y))}, {int(round(z))}, {float(r):.4g}\n" for x, y, z, r in rows)
    path.write_text(text)
    return path


def voxel_to_world(affine: np.ndarray, voxels: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """World (RAS mm) coordinates of voxel coordinates ``[N, 3]`` under a 4x4 ``affine``."""
    v = np.asarray(voxels, dtype=np.float64).reshape(-1, 3)
    return v @ np.asarray(affine, dtype=np.float64)[:3, :3].T + np.asarray(affine, dtype=np.float64)[:3, 3]


def location_record(
    center: Sequence[float], radius_mm: float, affine: np.ndarray, treated: bool = False
) -> dict[str, Any]:
    """One aneurysm as the datalist records it: ``center`` (voxel), ``center_mm`` (world), ``radius_mm``,
    ``treated``."""
    world = voxel_to_world(affine, [center])[0]
    return {
        "center": [round(float(c), 3) for c in center],
        "center_mm": [round(float(c), 4) for c in world],
        "radius_mm": round(float(radius_mm), 4),
        "treated": bool(treated),
    }


def _object_record(idx: np.ndarray, affine: np.ndarray, treated: bool) -> dict[str, Any]:
    spacing = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
    centre = idx.mean(axis=0)
    radius = float(np.sqrt((((idx - centre) * spacing) ** 2).sum(axis=1)).max())
    return location_record(centre, max(radius, 0.5 * float(spacing.max())), affine, treated)


def object_location(mask: np.ndarray, affine: np.ndarray, treated: bool = False) -> dict[str, Any] | None:
    """:func:`location_record` of one object (all voxels of ``mask``): its binary centre of mass and maximum
    radius (the largest distance in mm from that centre to a voxel centre, at least half the largest voxel size),
    as ADAM defines them; ``None`` for an empty mask."""
    idx = np.argwhere(np.asarray(mask) > 0)
    return _object_record(idx, affine, treated) if len(idx) else None


def mask_locations(mask: np.ndarray, affine: np.ndarray, treated: bool = False) -> list[dict[str, Any]]:
    """:func:`object_location` of every connected component (26-connected) of ``mask``."""
    from scipy import ndimage

    components, n = ndimage.label(np.asarray(mask) > 0, structure=np.ones((3, 3, 3), bool))
    out = []
    for k, sl in enumerate(ndimage.find_objects(components), start=1):
        idx = np.argwhere(components[sl] == k) + [s.start for s in sl]
        out.append(_object_record(idx, affine, treated))
    return out


def _find_cases(src: Path) -> list[Path]:
    labelled = {p.parent for p in src.glob(f"*/{LABEL_FILE}")}
    return sorted(labelled | {p.parent.parent for p in src.glob("*/*/TOF.nii.gz")})


def _case_locations(case: str, folder: Path, label: Path, problems: list[Problem]) -> list[dict[str, Any]]:
    """The aneurysms of one labelled case: location.txt (checked against the image) and treated components."""
    loc_file = folder / LOCATION_FILE
    if not loc_file.is_file():
        problems.append(Problem(case, str(loc_file), "location.txt is missing", "restore it from the ADAM release"))
        return []
    try:
        rows = read_locations(loc_file)
        header = read_header(label)
        data = np.asarray(read_array(label))
    except ValueError as e:
        problems.append(Problem(case, str(loc_file), str(e), "restore the file from the ADAM release"))
        return []
    data = np.round(data).astype(np.int16).reshape(header.shape)
    out = []
    for i, (x, y, z, r) in enumerate(rows, start=1):
        where = f"aneurysm {i} at ({x:g}, {y:g}, {z:g})"
        if not all(0 <= c <= n - 1 for c, n in zip((x, y, z), header.shape, strict=True)):
            problems.append(
                Problem(
                    case,
                    str(loc_file),
                    f"{where} lies outside the image (shape {list(header.shape)})",
                    "fix the voxel coordinates (x, y, z of the TOF-MRA) or remove the line",
                )
            )
            continue
        if not r > 0:
            problems.append(Problem(case, str(loc_file), f"{where} has radius {r:g}", "give a radius > 0 (mm)"))
            continue
        on_treated = int(data[int(round(x)), int(round(y)), int(round(z))]) == TREATED
        out.append(location_record((x, y, z), r, header.affine, treated=on_treated))
    return out + mask_locations(data == TREATED, header.affine, treated=True)


def adam_datalist(
    src: str | Path,
    folds: int = 5,
    seed: int = 0,
    image: str = "pre",
    channels: str | Sequence[str] = "TOF",
    fold_mode: str = "kfold",
    center_map: str | Mapping[str, str] | None = None,
    center_regex: str | None = None,
    num_workers: int = 4,
) -> dict[str, Any]:
    """Datalist of the ADAM layout (module doc), every problem listed at once.

    Args:
        image: ``pre`` (bias-field corrected TOF-MRA, the default) or ``orig`` (as acquired).
        channels: ``TOF`` or ``TOF,struct`` (adds ``pre/struct_aligned.nii.gz`` as a second channel; ``pre`` only,
            since ``orig/struct.nii.gz`` is not aligned to the TOF-MRA).
        num_workers: threads reading the label maps (for the treated aneurysms).
    """
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"ADAM folder {src} not found: --src must hold one folder per case (e.g. 10001/).")
    if image not in ("pre", "orig"):
        raise ValueError(f"image must be 'pre' or 'orig', got {image!r}.")
    names = [c.strip() for c in channels.split(",")] if isinstance(channels, str) else [str(c) for c in channels]
    unknown = [c for c in names if c not in IMAGE_FILES]
    if unknown or not names or names[0] != "TOF":
        raise ValueError(f"channels must be 'TOF' or 'TOF,struct', got {names}.")
    if "struct" in names and image != "pre":
        raise ValueError("the structural image is aligned to the TOF-MRA only in pre/: use image='pre'.")
    cases = _find_cases(src)
    if not cases:
        raise FileNotFoundError(f"no ADAM case folders (<case>/{LABEL_FILE} or <case>/pre/TOF.nii.gz) below {src}.")
    problems: list[Problem] = []
    training, test, labelled = [], [], []
    for folder in cases:
        case = folder.name
        files = [folder / image / IMAGE_FILES[c] for c in names]
        missing = [f for f in files if not f.is_file()]
        for f in missing:
            problems.append(Problem(case, str(f), "image file is missing", "restore it from the ADAM release"))
        if missing:
            continue
        rel = [relative_to(f, src) for f in files]
        entry: dict[str, Any] = {"image": rel if len(rel) > 1 else rel[0], "subject": case}
        label = folder / LABEL_FILE
        if label.is_file():
            entry["label"] = relative_to(label, src)
            training.append(entry)
            labelled.append((case, folder, label))
        else:
            test.append(entry)

    def locations(item: tuple[str, Path, Path]) -> tuple[list[dict[str, Any]], list[Problem]]:
        found: list[Problem] = []
        return _case_locations(*item, found), found

    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        results = list(pool.map(locations, labelled))
    aneurysms = {}
    for (case, _, _), (locs, found) in zip(labelled, results, strict=True):
        aneurysms[case] = locs
        problems += found
    if problems:
        raise DataValidationError(problems, source=str(src))
    untreated = sum(not a["treated"] for locs in aneurysms.values() for a in locs)
    treated = sum(a["treated"] for locs in aneurysms.values() for a in locs)
    extra = {
        "evaluation": {
            "task": "aneurysm detection and segmentation (ADAM)",
            "ignore_label": TREATED,
            "raw_labels": RAW_LABELS,
            "metrics": EXTRA_METRICS,
            "froc": True,
        },
        "aneurysm_counts": {
            "cases": len(training),
            "cases_without_untreated_aneurysm": sum(not any(not a["treated"] for a in v) for v in aneurysms.values()),
            "untreated": untreated,
            "treated": treated,
        },
        "aneurysms": aneurysms,
    }
    return build_datalist(
        training,
        test,
        name="ADAM",
        description=f"ADAM intracranial aneurysm TOF-MRA ({image}/), untreated aneurysms (label 1); treated ignored",
        source_layout="adam",
        dataset_dir=src,
        modality={str(i): c for i, c in enumerate(names)},
        labels=LABELS,
        label_map=LABEL_MAP,
        folds=folds,
        seed=seed,
        fold_mode=fold_mode,
        center_map=center_map,
        center_regex=center_regex,
        extra=extra,
    )


def write_detection_datalist(datalist: dict[str, Any], dst: str | Path, check: str = "quick") -> Path:
    """Check a datalist with negative cases allowed (cases without aneurysm are intended) and write it to
    :func:`~shared_components.data.converters.base.datalist_path` of ``dst``; nothing is written on a problem."""
    args = {"label_map": datalist["label_map"]} if datalist.get("label_map") else None
    check_datalist(datalist, datalist.get("dataset_dir"), preprocessing_args=args, level=check, allow_empty=True)
    # bundles read this as their --allow_empty_labels default (shared_components.data.allows_empty_labels)
    return save_datalist({**datalist, "allow_empty_labels": True}, datalist_path(dst))


def convert_adam(
    src: str | Path,
    dst: str | Path,
    folds: int = 5,
    seed: int = 0,
    image: str = "pre",
    channels: str = "TOF",
    fold_mode: str = "kfold",
    center_map: str | None = None,
    center_regex: str | None = None,
    check: str = "quick",
) -> Path:
    """Detection datalist of an ADAM folder (``<case>/pre/TOF.nii.gz``, ``aneurysms.nii.gz``, ``location.txt``).

    Args:
        src: the ADAM folder, one sub-folder per case (e.g. ``10001/``).
        dst: output folder for ``datalist.json`` (or the ``.json`` file itself).
        folds: number of cross-validation folds, grouped by subject (stratified by centre when cases have one); 1
            puts every case in fold 0 (all of them evaluation cases of ``--fold 0``).
        seed: seed of the fold assignment (the same seed gives the same folds).
        image: ``pre`` (bias-field corrected TOF-MRA) or ``orig`` (as acquired).
        channels: ``TOF``, or ``TOF,struct`` to add the aligned structural image (``pre`` only).
        fold_mode: ``kfold`` (k folds, ``--folds``) or ``loco`` (leave one centre out: fold i is centre i).
        center_map: CSV (``SubjectID,Center``) or JSON (``{"subject": "centre"}``) file giving each subject's
            centre.
        center_regex: regular expression whose first group, matched on the subject name, is its centre.
        check: file check before writing: ``off``, ``quick`` (headers) or ``full`` (voxels too); empty labels are
            allowed (negative cases).
    """
    data = adam_datalist(src, folds, seed, image, channels, fold_mode, center_map, center_regex)
    return write_detection_datalist(data, dst, check)


def aneurysm_summary(path: str | os.PathLike) -> str:
    """One line on the aneurysms a detection datalist records (for the command line)."""
    data = json.loads(Path(path).read_text())
    counts = data.get("aneurysm_counts") or {}
    if not counts:
        return ""
    return (
        f"aneurysms: {counts.get('untreated', 0)} untreated (scored), {counts.get('treated', 0)} treated (ignored); "
        f"{counts.get('cases_without_untreated_aneurysm', 0)} of {counts.get('cases', 0)} cases have no untreated one"
    )
