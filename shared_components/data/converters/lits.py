"""LiTS 2017 (Liver Tumor Segmentation challenge): ``volume-N.nii`` with ``segmentation-N.nii`` in the same
folder (``Training Batch 1`` holds cases 0-27, ``Training Batch 2`` cases 28-130), test volumes
``test-volume-N.nii``; labels 0 background, 1 liver, 2 tumour. ``.nii.gz`` copies are accepted too."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared_components.data.converters.base import build_datalist, datalist_writer
from shared_components.data.errors import DataValidationError, Problem
from shared_components.data.image_files import relative_to

LABELS = {"0": "background", "1": "liver", "2": "tumor"}
VOLUME = re.compile(r"^volume-(\d+)\.nii(\.gz)?$")
SEGMENTATION = re.compile(r"^segmentation-(\d+)\.nii(\.gz)?$")
TEST_VOLUME = re.compile(r"^test-volume-(\d+)\.nii(\.gz)?$")


def _scan(src: Path) -> dict[str, dict[int, list[Path]]]:
    found: dict[str, dict[int, list[Path]]] = {"volume": {}, "segmentation": {}, "test": {}}
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for name in sorted(files):
            for kind, pattern in (("volume", VOLUME), ("segmentation", SEGMENTATION), ("test", TEST_VOLUME)):
                m = pattern.match(name)
                if m:
                    found[kind].setdefault(int(m.group(1)), []).append(Path(root) / name)
    return found


def lits_datalist(
    src: str | Path,
    folds: int = 5,
    seed: int = 0,
    fold_mode: str = "kfold",
    center_map: str | Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Datalist of a LiTS release folder (``volume-N.nii`` + ``segmentation-N.nii``; labels liver, tumour).

    The folder is searched recursively; every pairing problem is listed at once.

    Args:
        src: the LiTS folder (holding ``Training Batch 1``/``Training Batch 2``, or the volumes themselves).
        folds: number of cross-validation folds, grouped by subject (stratified by centre when cases have one); 1
            puts every case in fold 0 (all of them evaluation cases of ``--fold 0``).
        seed: seed of the fold assignment (the same seed gives the same folds).
        fold_mode: ``kfold`` (k folds, ``--folds``) or ``loco`` (leave one centre out: fold i is centre i).
        center_map: CSV (``SubjectID,Center``) or JSON (``{"subject": "centre"}``) file giving each subject's
            centre.
    """
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(
            f"LiTS folder {src} not found: --src must hold 'Training Batch 1' / 'Training Batch 2'."
        )
    found = _scan(src)
    problems: list[Problem] = []
    for kind in found:
        for n, paths in found[kind].items():
            if len(paths) > 1:
                problems.append(
                    Problem(
                        f"volume-{n}",
                        ", ".join(map(str, paths)),
                        f"{kind} {n} found {len(paths)} times",
                        "keep one copy (e.g. remove a .nii.gz duplicate of a .nii)",
                    )
                )
    training = []
    for n in sorted(found["volume"]):
        vol = found["volume"][n][0]
        seg = found["segmentation"].get(n)
        if not seg:
            problems.append(
                Problem(
                    f"volume-{n}",
                    str(vol),
                    f"no segmentation-{n}.nii next to the volume",
                    "restore the segmentation from the LiTS release, or remove the volume",
                )
            )
            continue
        training.append({"image": relative_to(vol, src), "label": relative_to(seg[0], src), "subject": f"volume-{n}"})
    for n in sorted(set(found["segmentation"]) - set(found["volume"])):
        problems.append(
            Problem(
                f"volume-{n}",
                str(found["segmentation"][n][0]),
                f"segmentation without volume-{n}.nii",
                "restore the volume from the LiTS release, or remove the segmentation",
            )
        )
    if problems:
        raise DataValidationError(problems, source=str(src))
    if not training:
        raise ValueError(f"no volume-N.nii / segmentation-N.nii pairs found below {src}.")
    test = [
        {"image": relative_to(found["test"][n][0], src), "subject": f"test-volume-{n}"} for n in sorted(found["test"])
    ]
    return build_datalist(
        training,
        test,
        name="LiTS",
        description="Liver Tumor Segmentation challenge (LiTS 2017), contrast-enhanced abdominal CT",
        source_layout="lits",
        dataset_dir=src,
        modality={"0": "CT"},
        labels=LABELS,
        folds=folds,
        seed=seed,
        fold_mode=fold_mode,
        center_map=center_map,
    )


convert_lits = datalist_writer(lits_datalist)
