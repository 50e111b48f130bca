"""The Lausanne TOF-MRA aneurysm cohort (OpenNeuro ds003949, BIDS, CC0; Di Noto et al., arXiv:2103.06168):
284 subjects (157 patients, 127 controls), some with several sessions::

    participants.tsv                                       participant_id, exam_date, group (patient / control)
    sub-XXX/ses-YYYYMMDD/anat/sub-XXX_ses-YYYYMMDD_angio.nii.gz        the TOF-MRA (and _T1w.nii.gz)
    derivatives/N4_bias_field_corrected/sub-XXX/ses-YYYYMMDD/anat/
        sub-XXX_ses-YYYYMMDD_desc-angio_N4bfc_mask.nii.gz              N4-corrected TOF-MRA
        sub-XXX_ses-YYYYMMDD_desc-angio_N4bfc_brain_mask.nii.gz        N4-corrected, skull-stripped
    derivatives/manual_masks/sub-XXX/ses-YYYYMMDD/anat/
        sub-XXX_ses-YYYYMMDD_desc-Lesion_<k>_mask.nii.gz               one binary mask per aneurysm (patients)

The converter merges each session's lesion masks into one label map (1 aneurysm; all zero for controls), written
to ``labels_dir`` (default ``<dst>/labels``, outside the BIDS tree), and records each aneurysm's centre of mass and
maximum radius (from its own mask) for the FROC evaluation, as the ADAM converter does. A case is a session
(``subject`` ``sub-XXX_ses-YYYYMMDD``); folds are grouped by ``patient`` (``sub-XXX``), so the sessions of one
person never straddle folds. Nothing is treated in this cohort: no label is ignored.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from shared_components.data.converters.adam import EXTRA_METRICS, LABELS, object_location, write_detection_datalist
from shared_components.data.converters.base import build_datalist, datalist_path
from shared_components.data.errors import DataValidationError, Problem
from shared_components.data.folds import make_folds
from shared_components.data.image_files import read_array, read_header, relative_to

IMAGES = {
    "raw": "{sub}/{ses}/anat/{sub}_{ses}_angio.nii.gz",
    "n4": "derivatives/N4_bias_field_corrected/{sub}/{ses}/anat/{sub}_{ses}_desc-angio_N4bfc_mask.nii.gz",
    "n4_brain": "derivatives/N4_bias_field_corrected/{sub}/{ses}/anat/{sub}_{ses}_desc-angio_N4bfc_brain_mask.nii.gz",
}
MASKS = "derivatives/manual_masks/{sub}/{ses}/anat/{sub}_{ses}_desc-Lesion_*_mask.nii.gz"


def _groups(src: Path) -> dict[str, str]:
    path = src / "participants.tsv"
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {r["participant_id"]: r.get("group", "") for r in csv.DictReader(f, delimiter="\t")}


def lausanne_datalist(
    src: str | Path, labels_dir: str | Path, folds: int = 5, seed: int = 0, image: str = "n4", fold_mode: str = "kfold"
) -> dict[str, Any]:
    """Datalist of the ds003949 BIDS layout (module doc); writes the merged label maps to ``labels_dir``.

    Args:
        image: ``n4`` (N4-corrected TOF-MRA, default), ``n4_brain`` (also skull-stripped) or ``raw``.
    """
    src, labels_dir = Path(src), Path(labels_dir)
    if image not in IMAGES:
        raise ValueError(f"image must be one of {', '.join(IMAGES)}, got {image!r}.")
    sessions = sorted(src.glob("sub-*/ses-*/anat/*_angio.nii.gz"))
    if not sessions:
        raise FileNotFoundError(f"no sub-*/ses-*/anat/*_angio.nii.gz below {src}: --src must be the ds003949 root.")
    groups = _groups(src)
    problems: list[Problem] = []
    training, aneurysms = [], {}
    for angio in sessions:
        sub, ses = angio.parts[-4], angio.parts[-3]
        case = f"{sub}_{ses}"
        img = src / IMAGES[image].format(sub=sub, ses=ses)
        if not img.is_file():
            problems.append(Problem(case, str(img), f"{image} image is missing", "restore it, or choose --image raw"))
            continue
        try:
            header = read_header(img)
            masks = sorted(src.glob(MASKS.format(sub=sub, ses=ses)))
            arrays = [np.asarray(read_array(m)).reshape(read_header(m).shape) > 0 for m in masks]
        except ValueError as e:
            problems.append(Problem(case, str(img), str(e), "restore the files from OpenNeuro ds003949"))
            continue
        bad = [m for m, a in zip(masks, arrays, strict=True) if a.shape != header.shape]
        for m in bad:
            problems.append(Problem(case, str(m), f"mask shape differs from the image's {list(header.shape)}", "-"))
        if bad:
            continue
        if groups.get(sub) == "patient" and not masks:
            problems.append(Problem(case, str(img), "patient without a Lesion mask", "restore the manual masks"))
            continue
        label = np.zeros(header.shape, np.uint8)
        locations = []
        for m, a in zip(masks, arrays, strict=True):
            label[a] = 1
            loc = object_location(a, header.affine)
            if loc is None:
                problems.append(Problem(case, str(m), "lesion mask is empty", "restore it from OpenNeuro ds003949"))
            else:
                locations.append(loc)
        out = labels_dir / f"{case}_aneurysms.nii.gz"
        _save_label(out, label, header.affine)
        entry = {"image": relative_to(img, src), "label": relative_to(out, src), "subject": case, "patient": sub}
        if groups.get(sub):
            entry["group"] = groups[sub]
        training.append(entry)
        aneurysms[case] = locations
    if problems:
        raise DataValidationError(problems, source=str(src))
    extra = {
        "evaluation": {"task": "aneurysm detection (Lausanne ds003949)", "metrics": EXTRA_METRICS, "froc": True},
        "aneurysm_counts": {
            "cases": len(training),
            "cases_without_untreated_aneurysm": sum(not v for v in aneurysms.values()),
            "untreated": sum(len(v) for v in aneurysms.values()),
            "treated": 0,
        },
        "aneurysms": aneurysms,
    }
    data = build_datalist(
        training,
        name="Lausanne_TOFMRA",
        description=f"Lausanne TOF-MRA aneurysm cohort (OpenNeuro ds003949), {image} images",
        source_layout="lausanne",
        dataset_dir=src,
        modality={"0": "TOF"},
        labels=LABELS,
        folds=1,
        extra=extra,
    )
    data["training"] = make_folds(
        [{k: v for k, v in e.items() if k != "fold"} for e in training], folds, seed, fold_mode, group_key="patient"
    )
    data.update(num_folds=len({e["fold"] for e in data["training"]}), fold_mode=fold_mode, seed=seed)
    return data


def _save_label(path: Path, label: np.ndarray, affine: np.ndarray) -> None:
    """A uint8 label map as ``.nii.gz``, written atomically."""
    import gzip

    import nibabel as nib

    from shared_components.files import write_bytes_atomic

    img = nib.Nifti1Image(label, affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    write_bytes_atomic(path, gzip.compress(img.to_bytes(), compresslevel=6))


def convert_lausanne(
    src: str | Path,
    dst: str | Path,
    folds: int = 5,
    seed: int = 0,
    image: str = "n4",
    fold_mode: str = "kfold",
    labels_dir: str | None = None,
    check: str = "quick",
) -> Path:
    """Detection datalist of the Lausanne TOF-MRA cohort (OpenNeuro ds003949, BIDS), with merged label maps.

    Args:
        src: the ds003949 root (``sub-*/ses-*/anat/*_angio.nii.gz``, ``derivatives/``).
        dst: output folder for ``datalist.json`` (or the ``.json`` file itself).
        folds: number of cross-validation folds, grouped by subject (stratified by centre when cases have one); 1
            puts every case in fold 0 (all of them evaluation cases of ``--fold 0``).
        seed: seed of the fold assignment (the same seed gives the same folds).
        image: ``n4`` (N4-corrected TOF-MRA), ``n4_brain`` (also skull-stripped) or ``raw``.
        fold_mode: ``kfold`` (k folds, ``--folds``) or ``loco`` (leave one centre out: fold i is centre i).
        labels_dir: where the merged label maps (one per session) go (default: ``<dst>/labels``).
        check: file check before writing: ``off``, ``quick`` (headers) or ``full`` (voxels too); empty labels are
            allowed (controls are negatives).
    """
    target = datalist_path(dst)
    labels = Path(labels_dir) if labels_dir else target.parent / "labels"
    data = lausanne_datalist(src, labels, folds, seed, image, fold_mode)
    return write_detection_datalist(data, target, check)
