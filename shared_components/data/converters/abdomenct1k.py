"""AbdomenCT-1K: images ``AbdomenCT-1K-ImagePart{1,2,3}/Case_XXXXX_0000.nii.gz`` and masks
``Mask/Case_XXXXX.nii.gz`` (some copies name the folder ``Masks``); labels 1 liver, 2 kidney, 3 spleen,
4 pancreas. Images without a mask go to the ``test`` section (or are reported, with ``unlabelled='error'``).

The cases come from 12 medical centres; give ``center_map`` (CSV/JSON subject -> centre) to stratify the folds by
centre or to hold one centre out (``fold_mode='loco'``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared_components.data.converters.base import build_datalist, datalist_writer
from shared_components.data.errors import DataValidationError, Problem
from shared_components.data.image_files import relative_to

LABELS = {"0": "background", "1": "liver", "2": "kidney", "3": "spleen", "4": "pancreas"}
IMAGE = re.compile(r"^(Case_\d+)_0000\.nii(\.gz)?$")
MASK = re.compile(r"^(Case_\d+)\.nii(\.gz)?$")
MASK_DIRS = ("Mask", "Masks", "mask", "masks")


def abdomenct1k_datalist(
    src: str | Path,
    folds: int = 5,
    seed: int = 0,
    fold_mode: str = "kfold",
    center_map: str | Mapping[str, str] | None = None,
    unlabelled: str = "test",
) -> dict[str, Any]:
    """Datalist of an AbdomenCT-1K folder (``Case_XXXXX_0000.nii.gz`` + ``Mask/``; liver, kidney, spleen, pancreas).

    Every pairing problem is listed at once.

    Args:
        src: the AbdomenCT-1K folder (holding ``AbdomenCT-1K-ImagePart*`` and ``Mask``).
        folds: number of cross-validation folds, grouped by subject (stratified by centre when cases have one); 1
            puts every case in fold 0 (all of them evaluation cases of ``--fold 0``).
        seed: seed of the fold assignment (the same seed gives the same folds).
        fold_mode: ``kfold`` (k folds, ``--folds``) or ``loco`` (leave one centre out: fold i is centre i).
        center_map: CSV (``SubjectID,Center``) or JSON (``{"subject": "centre"}``) file giving each subject's
            centre (the data come from 12 centres).
        unlabelled: images without a mask go to ``test``, are ``skip``ped, or reported (``error``).
    """
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"AbdomenCT-1K folder {src} not found.")
    if unlabelled not in ("test", "error", "skip"):
        raise ValueError(f"unlabelled must be 'test', 'error' or 'skip', got {unlabelled!r}.")
    mask_dir = next((src / d for d in MASK_DIRS if (src / d).is_dir()), None)
    if mask_dir is None:
        raise FileNotFoundError(f"no mask folder in {src}: expected one of {MASK_DIRS} next to the image parts.")
    images: dict[str, list[Path]] = {}
    for root, dirs, files in os.walk(src):
        dirs.sort()
        if Path(root).resolve() == mask_dir.resolve():
            continue
        for name in sorted(files):
            m = IMAGE.match(name)
            if m:
                images.setdefault(m.group(1), []).append(Path(root) / name)
    masks = {m.group(1): mask_dir / n for n in sorted(os.listdir(mask_dir)) if (m := MASK.match(n))}
    problems: list[Problem] = []
    training, test = [], []
    for case in sorted(images):
        if len(images[case]) > 1:
            problems.append(
                Problem(case, ", ".join(map(str, images[case])), "image found in several folders", "keep one copy")
            )
        image = relative_to(images[case][0], src)
        if case in masks:
            training.append({"image": image, "label": relative_to(masks[case], src), "subject": case})
        elif unlabelled == "test":
            test.append({"image": image, "subject": case})
        elif unlabelled == "error":
            problems.append(Problem(case, str(images[case][0]), "image has no mask", f"add {mask_dir}/{case}.nii.gz"))
    for case in sorted(set(masks) - set(images)):
        problems.append(
            Problem(
                case,
                str(masks[case]),
                f"mask without image {case}_0000.nii.gz",
                "restore the image part that holds it (AbdomenCT-1K-ImagePart1..3)",
            )
        )
    if problems:
        raise DataValidationError(problems, source=str(src))
    return build_datalist(
        training,
        test,
        name="AbdomenCT-1K",
        description="AbdomenCT-1K multi-centre abdominal CT: liver, kidney, spleen, pancreas",
        source_layout="abdomenct1k",
        dataset_dir=src,
        modality={"0": "CT"},
        labels=LABELS,
        folds=folds,
        seed=seed,
        fold_mode=fold_mode,
        center_map=center_map,
    )


convert_abdomenct1k = datalist_writer(abdomenct1k_datalist)
