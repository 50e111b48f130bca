"""Medical Segmentation Decathlon (MSD) tasks: ``dataset.json`` + ``imagesTr``/``labelsTr``/``imagesTs``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared_components.data.conventions import CONVENTIONS
from shared_components.data.converters.base import datalist_path, write_datalist
from shared_components.data.datalist import subject_of
from shared_components.data.errors import DataValidationError, Problem
from shared_components.data.folds import assign_folds


def _rel(path: str) -> str:
    return path[2:] if path.startswith("./") else path


def msd_datalist(src: str | Path, folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """Datalist of an MSD task folder (``dataset.json``, ``imagesTr/``, ``labelsTr/``, ``imagesTs/``).

    Every file ``dataset.json`` lists must exist. Paths stay relative to ``src`` (the bundle's ``dataset_dir``).
    Multi-channel tasks (e.g. BrainTumour, Prostate) keep their 4D NIfTI as one ``image``; ``num_channels``
    records the channel count.

    Args:
        src: the MSD task folder, e.g. ``../shared/data/Task04_Hippocampus``.
        folds: number of cross-validation folds, grouped by subject; 1 puts every case in fold 0 (all of them
            evaluation cases of ``--fold 0``).
        seed: seed of the fold assignment (the same seed gives the same folds).
    """
    src = Path(src)
    meta_file = src / "dataset.json"
    if not meta_file.is_file():
        raise FileNotFoundError(
            f"{meta_file} not found: --src must be an MSD task folder (e.g. Task04_Hippocampus) with dataset.json."
        )
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{meta_file} is not valid JSON ({e}); re-download the task.") from e
    problems: list[Problem] = []
    training = []
    for item in meta.get("training", []):
        entry = {"image": _rel(item["image"]), "label": _rel(item["label"])}
        entry["subject"] = subject_of(entry)
        for key in ("image", "label"):
            if not (src / entry[key]).is_file():
                problems.append(
                    Problem(
                        entry["subject"],
                        str(src / entry[key]),
                        f"{key} listed in dataset.json is missing",
                        "restore the file or remove the case from dataset.json",
                    )
                )
        training.append(entry)
    test = []
    for item in meta.get("test", []):
        path = _rel(item if isinstance(item, str) else item["image"])
        entry = {"image": path, "subject": subject_of({"image": path})}
        if not (src / path).is_file():
            problems.append(
                Problem(
                    entry["subject"],
                    str(src / path),
                    "test image listed in dataset.json is missing",
                    "restore the file or remove it from dataset.json",
                )
            )
        test.append(entry)
    if problems:
        raise DataValidationError(problems, source=str(meta_file))
    if not training:
        raise ValueError(f"{meta_file} lists no training cases.")
    out = {
        "name": meta.get("name", src.name),
        "description": meta.get("description", ""),
        "modality": meta.get("modality", {}),
        "labels": meta.get("labels", {}),
        "num_channels": len(meta.get("modality", {"0": ""})),
        "source_layout": "msd",
    }
    if _is_brain_tumour(meta):
        out["regions"] = CONVENTIONS["msd"]["regions"]
    out["training"] = assign_folds(training, n_folds=folds, seed=seed)
    out["test"] = test
    return out


def _is_brain_tumour(meta: dict[str, Any]) -> bool:
    """Task01 (BRATS): labels 1 oedema, 2 non-enhancing, 3 enhancing -> TC/WT/ET regions (``conventions.py``)."""
    names = {str(k): str(v).lower() for k, v in meta.get("labels", {}).items()}
    return "edema" in names.get("1", "") and "enhancing" in names.get("3", "")


def convert_msd(src: str | Path, dst: str | Path, folds: int = 5, seed: int = 0, check: str = "quick") -> Path:
    """Datalist of an MSD task folder (``dataset.json``, ``imagesTr/``, ``labelsTr/``, ``imagesTs/``), checked.

    Args:
        src: the MSD task folder, e.g. ``../shared/data/Task04_Hippocampus``.
        dst: output folder for ``datalist.json``, or the ``.json`` file itself.
        folds: number of cross-validation folds, grouped by subject; 1 puts every case in fold 0 (all of them
            evaluation cases of ``--fold 0``).
        seed: seed of the fold assignment (the same seed gives the same folds).
        check: file check before writing: ``off``, ``quick`` (headers) or ``full`` (voxels too).
    """
    datalist = {**msd_datalist(src, folds=folds, seed=seed), "dataset_dir": str(Path(src).resolve())}
    return write_datalist(datalist, datalist_path(dst), check=check)
