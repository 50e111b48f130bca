"""A CSV of channels in the early GaNDLF style: one row per subject with ``SubjectID``, ``Channel_0..X`` (aliases
``Modality_X``, ``Image_X``, or a single ``Image``), one label column (``Label``, ``Mask``, ``Segmentation``,
``Seg`` or ``Target``) and an optional ``Center``/``Centre``/``Site`` column. Relative paths are relative to
the CSV's folder; rows with an empty label go to the ``test`` section.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shared_components.data.conventions import convention as get_convention
from shared_components.data.conventions import regions_of
from shared_components.data.converters.base import (
    CENTER_COLUMNS,
    SUBJECT_COLUMNS,
    build_datalist,
    datalist_writer,
    modality_dict,
    read_label_names,
)
from shared_components.data.errors import DataValidationError, Problem
from shared_components.data.image_files import relative_to

CHANNEL = re.compile(r"^(channel|modality|image)_?(\d+)$", re.IGNORECASE)
LABEL_COLUMNS = ("label", "mask", "segmentation", "seg", "target")


def _columns(header: Sequence[str], path: Path) -> tuple[str, list[str], str | None, str | None]:
    cols = {c.strip().lower(): c for c in header}
    subject = next((cols[c] for c in SUBJECT_COLUMNS if c in cols), None)
    if subject is None:
        raise ValueError(f"{path}: no subject column (one of {SUBJECT_COLUMNS}); found {list(header)}.")
    numbered = sorted(((int(m.group(2)), c) for c in header if (m := CHANNEL.match(c.strip()))), key=lambda t: t[0])
    channels = [c for _, c in numbered] or ([cols["image"]] if "image" in cols else [])
    if not channels:
        raise ValueError(
            f"{path}: no channel columns (Channel_0.., Modality_0.., Image_0.. or Image); found {list(header)}."
        )
    labels = [cols[c] for c in LABEL_COLUMNS if c in cols]
    if len(labels) > 1:
        raise ValueError(f"{path}: several label columns {labels}; keep one.")
    center = next((cols[c] for c in CENTER_COLUMNS if c in cols), None)
    return subject, channels, labels[0] if labels else None, center


def table_datalist(
    src: str | Path,
    folds: int = 5,
    seed: int = 0,
    fold_mode: str = "kfold",
    root: str | Path | None = None,
    modality: str | Sequence[str] | None = None,
    label_names: str | Mapping[str, Any] | None = None,
    convention: str | None = None,
    regions: str | Mapping[str, Sequence[int]] | None = None,
    center_map: str | Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Datalist of a GaNDLF-style CSV: ``SubjectID``, ``Channel_0..X``, ``Label`` and an optional ``Center`` column.

    Relative paths are relative to the CSV's folder; rows with an empty label go to ``test``. Every problem is
    listed at once.

    Args:
        src: the CSV file.
        folds: number of cross-validation folds, grouped by subject (stratified by centre when cases have one); 1
            puts every case in fold 0 (all of them evaluation cases of ``--fold 0``).
        seed: seed of the fold assignment (the same seed gives the same folds).
        fold_mode: ``kfold`` (k folds, ``--folds``) or ``loco`` (leave one centre out: fold i is centre i).
        root: folder the datalist paths are made relative to (default: the CSV's folder); files elsewhere keep
            absolute paths.
        modality: channel names in column order, e.g. ``"FLAIR,T1c"`` (default: the column names).
        label_names: ``{"0": "background", ...}`` or a JSON file; ``convention`` (e.g. ``brats2015``) sets the
            label names and TC/WT/ET ``regions`` of a brain-tumour convention.
        convention: brain-tumour label convention (``brats2015``, ``brats2021``, ``brats2023``, ``msd``).
        regions: TC/WT/ET regions as raw label values, or a convention name; overrides the convention's.
        center_map: CSV (``SubjectID,Center``) or JSON (``{"subject": "centre"}``) file giving each subject's
            centre (else the ``Center`` column).
    """
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"CSV {src} not found.")
    base = Path(root) if root else src.parent
    with open(src, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        rows = list(reader)
    subj_col, chan_cols, label_col, center_col = _columns(header, src)
    problems: list[Problem] = []
    training, test = [], []
    seen: dict[str, int] = {}

    def resolve(value: str) -> Path:
        p = Path(value.strip()).expanduser()
        return p if p.is_absolute() else src.parent / p

    for i, row in enumerate(rows, start=2):  # line numbers as a spreadsheet shows them
        subject = (row.get(subj_col) or "").strip()
        where = f"{src}:{i}"
        if not subject:
            problems.append(Problem(f"row {i}", where, f"empty {subj_col}", "give every row a subject id"))
            continue
        if subject in seen:
            problems.append(
                Problem(subject, where, f"subject also on line {seen[subject]}", "keep one row per subject")
            )
            continue
        seen[subject] = i
        files = []
        for c in chan_cols:
            value = (row.get(c) or "").strip()
            if not value:
                problems.append(Problem(subject, where, f"{c} is empty", "fill in the channel file"))
                continue
            p = resolve(value)
            if not p.is_file():
                problems.append(Problem(subject, str(p), f"{c} file is missing", "fix the path in the CSV"))
            files.append(relative_to(p, base))
        entry: dict[str, Any] = {
            "image": files if len(chan_cols) > 1 else files[0] if files else "",
            "subject": subject,
        }
        label = (row.get(label_col) or "").strip() if label_col else ""
        if label:
            p = resolve(label)
            if not p.is_file():
                problems.append(Problem(subject, str(p), f"{label_col} file is missing", "fix the path in the CSV"))
            entry["label"] = relative_to(p, base)
        if center_col and (row.get(center_col) or "").strip():
            entry["center"] = row[center_col].strip()
        (training if label else test).append(entry)
    if problems:
        raise DataValidationError(problems, source=str(src))
    names = read_label_names(label_names) if label_names else {}
    conv = get_convention(convention) if convention else None
    if conv and not names:
        names = dict(conv["labels"])
    reg = regions_of(regions) if regions is not None else (dict(conv["regions"]) if conv else None)
    channel_names = modality if modality else [c.strip() for c in chan_cols]
    return build_datalist(
        training,
        test,
        name=src.stem,
        description=f"from the CSV {src.name}",
        source_layout="csv",
        dataset_dir=base,
        modality=modality_dict(channel_names, len(chan_cols)),
        labels=names,
        regions=reg,
        folds=folds,
        seed=seed,
        fold_mode=fold_mode,
        center_map=center_map,
        extra={"convention": convention} if convention else None,
    )


convert_table = datalist_writer(table_datalist)


convert_csv = convert_table
