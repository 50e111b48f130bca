"""A user's own data: image files paired with label files by name.

``images``/``labels`` are each a folder below ``src`` (searched recursively), a glob pattern, or one file:

- ``images/<case>.nii.gz`` + ``labels/<case>.nii.gz`` (label names may end in ``_seg``, ``_label``, ``_mask``...);
- ``images/<centre>/<case>.nii.gz`` + ``labels/<centre>/<case>.nii.gz``: the first sub-folder is the centre
  (``centers='auto'``), for multi-centre data;
- multi-channel cases as nnU-Net names them: ``<case>_0000.nii.gz``, ``<case>_0001.nii.gz``, ... (``channel_regex``);
- one folder per case with fixed file names, e.g. ``images='*/ct.nii.gz'``, ``labels='*/seg.nii.gz'`` (the case is
  the folder), or a single case: ``images='ct.nii.gz'``, ``labels='labels_total.nii.gz'``.

Label names come from ``label_names`` or a ``label_map.json``/``labels.json``/``dataset.json`` in ``src``;
``select`` keeps some classes of a large label map (e.g. ``spleen,liver`` of a 117-class TotalSegmentator map)
and records the raw -> class ``label_map`` the bundles apply.
"""

from __future__ import annotations

import glob
import os
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shared_components.data.converters.base import (
    build_datalist,
    datalist_writer,
    modality_dict,
    read_label_names,
    select_classes,
)
from shared_components.data.errors import DataValidationError, Problem
from shared_components.data.image_files import is_image_file, relative_to, strip_suffix

LABEL_NAME_FILES = ("label_map.json", "labels.json", "dataset.json")
LABEL_SUFFIXES = ("_seg", "_segmentation", "_label", "_labels", "_mask", "_gt")


def _collect(src: Path, spec: str) -> tuple[Path, list[Path], bool]:
    """``(root, files, fixed_name)`` for a folder, glob pattern or file; ``fixed_name``: the case is the folder."""
    path = Path(spec) if os.path.isabs(spec) else src / spec
    if path.is_dir():
        files = [Path(r) / f for r, d, fs in sorted(os.walk(path)) for f in sorted(fs) if is_image_file(f)]
        return path, files, False
    if glob.has_magic(spec):
        parts = Path(spec).parts
        first = next(i for i, p in enumerate(parts) if glob.has_magic(p))
        prefix = Path(*parts[:first]) if first else Path()
        root = prefix if prefix.is_absolute() else src / prefix
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if is_image_file(p))
        return root, files, not glob.has_magic(path.name)
    if path.is_file():
        return path.parent, [path], True
    raise FileNotFoundError(f"{path} not found: give a folder below --src, a glob pattern or a file.")


def _key(file: Path, root: Path, fixed: bool) -> str:
    rel = file.relative_to(root)
    key = rel.parent.as_posix() if fixed else (rel.parent / strip_suffix(rel.name)).as_posix()
    return "" if key == "." else key.removeprefix("./")


def folder_datalist(
    src: str | Path,
    images: str = "images",
    labels: str | None = "labels",
    folds: int = 5,
    seed: int = 0,
    fold_mode: str = "kfold",
    centers: str | None = "auto",
    modality: str | Sequence[str] | None = None,
    label_names: str | Mapping[str, Any] | None = None,
    select: str | Sequence[str | int] | None = None,
    channel_regex: str | None = r"_(\d{4})$",
    unlabelled: str = "test",
    center_map: str | Mapping[str, str] | None = None,
    center_regex: str | None = None,
    label_group: str | None = None,
) -> dict[str, Any]:
    """Datalist of your own image files paired with label files by name (folders, nnU-Net ``_0000`` channels).

    Layouts: ``images/<case>.nii.gz`` + ``labels/<case>.nii.gz`` (label names may end in ``_seg``, ``_mask``...);
    ``images/<centre>/<case>`` (the first sub-folder is the centre); one folder per case with fixed file names
    (``--images '*/ct.nii.gz' --labels '*/seg.nii.gz'``); or a single case (``--images ct.nii.gz``). Every
    problem is listed at once.

    Args:
        src: the dataset folder.
        images: the images: a folder below ``src`` (searched recursively), a glob pattern or one file.
        labels: the label maps, likewise (``''`` for none: every image becomes a ``test`` case).
        folds: number of cross-validation folds, grouped by subject (stratified by centre when cases have one); 1
            puts every case in fold 0 (all of them evaluation cases of ``--fold 0``).
        seed: seed of the fold assignment (the same seed gives the same folds).
        fold_mode: ``kfold`` (k folds, ``--folds``) or ``loco`` (leave one centre out: fold i is centre i).
        centers: ``auto`` (first sub-folder of the case is its centre, when cases sit in sub-folders) or ``none``.
        modality: channel names, e.g. ``CT`` or ``T1`` or ``T2,ADC``.
        label_names: ``{"1": "spleen", ...}`` or a JSON file (default: a label-names file found in ``src``);
            ``label_group`` picks a group of a grouped file (default: the group the label file names contain).
        select: classes to keep (names or raw values), the others become background.
        channel_regex: regular expression of the channel suffix of multi-channel cases (nnU-Net's ``_0000``).
        unlabelled: images without a label go to ``test``, are ``skip``ped, or reported (``error``).
        center_map: CSV (``SubjectID,Center``) or JSON (``{"subject": "centre"}``) file giving each subject's
            centre.
        center_regex: regular expression whose first group, matched on the subject name, is its centre.
        label_group: the group of a grouped label-names file (e.g. TotalSegmentator's ``total``).
    """
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"dataset folder {src} not found.")
    if unlabelled not in ("test", "error", "skip"):
        raise ValueError(f"unlabelled must be 'test', 'error' or 'skip', got {unlabelled!r}.")
    img_root, img_files, img_fixed = _collect(src, images)
    if not img_files:
        raise FileNotFoundError(f"no image files ({images}) found below {src}.")
    label_by_key: dict[str, list[Path]] = defaultdict(list)
    if labels:
        lbl_root, lbl_files, lbl_fixed = _collect(src, labels)
        for f in lbl_files:
            label_by_key[_key(f, lbl_root, lbl_fixed)].append(f)
    img_keys = {f: _key(f, img_root, img_fixed) for f in img_files}
    pattern = re.compile(channel_regex) if channel_regex and not img_fixed else None
    channel_mode = False
    if pattern:
        known = set(label_by_key) | {k[: -len(x)] for k in label_by_key for x in LABEL_SUFFIXES if k.endswith(x)}
        matched = {f: pattern.search(k) for f, k in img_keys.items()}
        exact = sum(k in known for k in img_keys.values())
        stripped = sum(m is not None and img_keys[f][: m.start()] in known for f, m in matched.items())
        channel_mode = stripped > exact if known else all(matched.values())
    cases: dict[str, dict[int, list[Path]]] = defaultdict(lambda: defaultdict(list))
    problems: list[Problem] = []
    for f, key in img_keys.items():
        m = pattern.search(key) if channel_mode and pattern else None
        if channel_mode and m is None:
            problems.append(Problem(key, str(f), f"no channel suffix ({channel_regex})", "name it <case>_0000 etc."))
            continue
        cases[key[: m.start()] if m else key][int(m.group(1)) if m else 0].append(f)
    # labels may carry a suffix (case_seg.nii.gz)
    label_of: dict[str, list[Path]] = {}
    for key, files in label_by_key.items():
        base = key
        if key not in cases:
            base = next((key[: -len(s)] for s in LABEL_SUFFIXES if key.endswith(s) and key[: -len(s)] in cases), key)
        label_of.setdefault(base, []).extend(files)
    n_channels = {len(ch) for ch in cases.values()}
    expected = max(n_channels) if n_channels else 1
    training, test = [], []
    for case in sorted(cases):
        chans = cases[case]
        subject = case.replace("/", "_") or src.name
        for c, fs in sorted(chans.items()):
            if len(fs) > 1:
                problems.append(Problem(subject, ", ".join(map(str, fs)), f"several files for channel {c}", "keep one"))
        if sorted(chans) != list(range(expected)):
            problems.append(
                Problem(
                    subject,
                    str(chans[min(chans)][0]),
                    f"channels {sorted(chans)}, expected 0..{expected - 1}",
                    "give every case the same channels (<case>_0000, <case>_0001, ...)",
                )
            )
            continue
        files = [relative_to(chans[c][0], src) for c in range(expected)]
        entry: dict[str, Any] = {"image": files if expected > 1 else files[0], "subject": subject}
        if centers == "auto" and "/" in case:
            entry["center"] = case.split("/")[0]
        lbl = label_of.get(case, [])
        if len(lbl) > 1:
            problems.append(Problem(subject, ", ".join(map(str, lbl)), "several label files", "keep one"))
        if lbl:
            entry["label"] = relative_to(lbl[0], src)
            training.append(entry)
        elif unlabelled == "test":
            test.append(entry)
        elif unlabelled == "error":
            problems.append(Problem(subject, files[0], "image has no label file", f"add it below {labels}"))
    for key in sorted(set(label_of) - set(cases)):
        problems.append(
            Problem(
                key.replace("/", "_") or src.name,
                str(label_of[key][0]),
                "label file without an image",
                "name image and label alike (sub-folders too), or remove it",
            )
        )
    if problems:
        raise DataValidationError(problems, source=str(src))
    hint = label_group or " ".join(sorted({Path(f).name for fs in label_of.values() for f in fs}))
    names = _label_names(src, label_names, hint)
    label_map = None
    if select:
        label_map, names = select_classes(names, select)
    return build_datalist(
        training,
        test,
        name=src.name,
        description=f"images {images!r} paired with labels {labels!r}",
        source_layout="folder",
        dataset_dir=src,
        modality=modality_dict(modality, expected),
        labels=names,
        label_map=label_map,
        folds=folds,
        seed=seed,
        fold_mode=fold_mode,
        center_map=center_map,
        center_regex=center_regex,
    )


def _label_names(src: Path, spec: str | Mapping[str, Any] | None, group: str | None) -> dict[str, str]:
    """From ``spec``, else the first label-names file in ``src`` (``group``: the group or a hint naming it)."""
    if spec is not None:
        return read_label_names(spec, group)
    for name in LABEL_NAME_FILES:
        if (src / name).is_file():
            return read_label_names(src / name, group)
    return {}


convert_folder = datalist_writer(folder_datalist)
