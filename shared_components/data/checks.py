"""Validation of a datalist before training: every problem found is reported at once (see ``errors.py``).

Levels: ``off``; ``quick`` (files exist, headers readable, image/label shapes and affines agree, channel count,
no subject in two folds; headers only, so it takes seconds); ``full`` (also reads the voxels: corrupt or truncated
files, NaN/Inf intensities, constant images, label values outside the declared classes, non-integer or empty
labels). The bundles run it at ``initialize`` (``--check_data quick|full|off``), ``prepare_data.py check`` by hand.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from shared_components.data.datalist import SECTIONS, load_datalist, resolve_entry, resolve_paths, subject_of
from shared_components.data.errors import DataValidationError, Problem
from shared_components.data.image_files import ImageHeader, read_array, read_header

LEVELS = ("off", "quick", "full")
AFFINE_ATOL = 1e-3  # mm / direction-cosine units: header round-off passes, a shifted or flipped grid does not
FIX_PATH = "fix the path in the datalist, or pass the folder the paths are relative to (--dataset_dir)"
FIX_REEXPORT = "re-copy or re-export the file (it may be truncated or corrupt)"


def _files(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


@dataclass(frozen=True)
class LabelRules:
    """Which raw label values a case may hold and which of them count as foreground (``None``: any)."""

    allowed: frozenset[int] | None
    foreground: frozenset[int] | None
    source: str

    def describe(self) -> str:
        return f"{sorted(self.allowed)} ({self.source})" if self.allowed is not None else "any"


def label_rules(
    num_classes: int | None = None,
    preprocessing_args: Mapping[str, Any] | None = None,
    labels: Mapping[str, Any] | None = None,
) -> LabelRules:
    """Allowed raw label values from what a bundle declares.

    ``label_map`` (raw -> class; unlisted raw values become background) allows any value and counts the mapped
    ones as foreground; ``regions`` allow 0 plus the region values; else ``num_classes`` allows ``0..n-1``; else
    the datalist's ``labels`` names allow their keys.
    """
    args = dict(preprocessing_args or {})
    label_map = args.get("label_map")
    regions = args.get("regions")
    if label_map:
        fg = frozenset(int(k) for k, v in dict(label_map).items() if int(v) != 0)
        return LabelRules(None, fg, "label_map")
    if regions:
        vals = frozenset(int(v) for vs in dict(regions).values() for v in vs)
        return LabelRules(vals | {0}, vals - {0}, "0 plus the region values")
    if num_classes:
        vals = frozenset(range(int(num_classes)))
        return LabelRules(vals, vals - {0}, f"num_classes={num_classes}")
    if labels:
        vals = frozenset(int(k) for k in labels)
        return LabelRules(vals, vals - {0}, "the datalist's 'labels'")
    return LabelRules(None, None, "undeclared")


def _check_headers(case: str, key: str, files: list[str], problems: list[Problem]) -> list[ImageHeader | None]:
    headers: list[ImageHeader | None] = []
    for f in files:
        if not os.path.isfile(f):
            problems.append(Problem(case, f, f"{key} file is missing", FIX_PATH))
            headers.append(None)
            continue
        try:
            headers.append(read_header(f))
        except ValueError as e:
            problems.append(Problem(case, f, f"{key} file is unreadable: {e}", FIX_REEXPORT))
            headers.append(None)
    return headers


def _same_grid(case: str, ref: ImageHeader, ref_file: str, other: ImageHeader, f: str, what: str) -> list[Problem]:
    if other.shape != ref.shape:
        return [
            Problem(
                case,
                f,
                f"{what} shape {list(other.shape)} differs from the image's {list(ref.shape)} ({ref_file})",
                "resample the file onto the image grid, or pair it with the right image",
            )
        ]
    if not np.allclose(other.affine, ref.affine, atol=AFFINE_ATOL, rtol=0):
        diff = float(np.abs(other.affine - ref.affine).max())
        return [
            Problem(
                case,
                f,
                f"{what} affine differs from the image's ({ref_file}) by up to {diff:.4g} (spacing "
                f"{np.round(other.spacing, 4).tolist()} vs {np.round(ref.spacing, 4).tolist()})",
                "if the voxels are aligned, copy the image's affine into this header (nibabel: "
                "nib.save(nib.Nifti1Image(data, image.affine), path)); otherwise resample it onto the image grid",
            )
        ]
    return []


def _check_label_voxels(case: str, f: str, rules: LabelRules, allow_empty: bool) -> list[Problem]:
    try:
        data = read_array(f)
    except ValueError as e:
        return [Problem(case, f, f"label {e}", FIX_REEXPORT)]
    problems = []
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)):
            return [Problem(case, f, "label has NaN/Inf values", "re-export the label map as an integer image")]
        if not np.array_equal(data, np.round(data)):
            problems.append(
                Problem(
                    case,
                    f,
                    "label has non-integer values (resampled with linear interpolation?)",
                    "resample label maps with nearest-neighbour interpolation and save them as integers",
                )
            )
        data = np.round(data)
    values = np.unique(data.astype(np.int64, copy=False))
    present = {int(v) for v in values}
    if rules.allowed is not None:
        bad = sorted(present - rules.allowed)
        if bad:
            problems.append(
                Problem(
                    case,
                    f,
                    f"label values {bad} are outside the declared classes {rules.describe()}",
                    "fix the label file, or declare the classes (num_classes) or map raw values to classes with "
                    "preprocessing_args.label_map / regions",
                )
            )
    if not allow_empty:
        fg = present - {0} if rules.foreground is None else present & rules.foreground
        if not fg:
            what = "no foreground voxels" if present <= {0} else f"none of the mapped classes ({rules.source})"
            problems.append(
                Problem(
                    case,
                    f,
                    f"label is empty: {what}",
                    "check the label (saved blank, or the wrong file?); remove the case, or pass allow_empty=True "
                    "if negative cases are intended",
                )
            )
    return problems


def _check_image_voxels(case: str, f: str) -> list[Problem]:
    try:
        data = read_array(f)
    except ValueError as e:
        return [Problem(case, f, f"image {e}", FIX_REEXPORT)]
    if np.issubdtype(data.dtype, np.floating):
        finite = np.isfinite(data)
        n_bad = int(data.size - np.count_nonzero(finite))
        if n_bad:
            return [
                Problem(
                    case,
                    f,
                    f"image has {n_bad} NaN/Inf voxels",
                    "replace them (e.g. numpy.nan_to_num) or re-export the image from the source scan",
                )
            ]
    if data.size and data.min() == data.max():
        return [Problem(case, f, f"image is constant (every voxel = {data.flat[0]})", "re-export the image")]
    return []


def check_case(
    entry: Mapping[str, Any],
    section: str = "training",
    num_channels: int | None = None,
    rules: LabelRules | None = None,
    level: str = "quick",
    allow_empty: bool = False,
) -> list[Problem]:
    """Problems of one datalist entry (paths already absolute)."""
    case = subject_of(dict(entry))
    problems: list[Problem] = []
    if "image" not in entry:
        return [Problem(case, "-", f"{section} entry has no 'image'", "re-create the datalist with a converter")]
    images = _files(entry["image"])
    has_label = "label" in entry and entry["label"] not in (None, "")
    if section == "training" and not has_label:
        problems.append(Problem(case, images[0], "training entry has no 'label'", "add the label or move it to 'test'"))
    img_headers = _check_headers(case, "image", images, problems)
    lbl_files = _files(entry["label"]) if has_label else []
    lbl_headers = _check_headers(case, "label", lbl_files, problems)
    ref = next((h for h in img_headers if h is not None), None)
    ref_file = images[img_headers.index(ref)] if ref is not None else ""
    if ref is not None:
        for h, f in zip(img_headers, images, strict=True):
            if h is not None and h is not ref:
                problems += _same_grid(case, ref, ref_file, h, f, "channel file")
        for h, f in zip(lbl_headers, lbl_files, strict=True):
            if h is None:
                continue
            problems += _same_grid(case, ref, ref_file, h, f, "label")
            if h.channels != 1:
                problems.append(
                    Problem(case, f, f"label has {h.channels} channels, expected one label map", "save a 3D label map")
                )
        if num_channels is not None and all(h is not None for h in img_headers):
            found = sum(h.channels for h in img_headers if h is not None)
            if found != int(num_channels):
                problems.append(
                    Problem(
                        case,
                        images[0] if len(images) == 1 else ", ".join(images),
                        f"image has {found} channel(s), the model expects {num_channels}",
                        "list one file per channel (or one 4D file) in the same order for every case, or set "
                        "num_channels",
                    )
                )
    if level == "full" and not problems:
        for f in images:
            problems += _check_image_voxels(case, f)
        for f in lbl_files:
            problems += _check_label_voxels(case, f, rules or LabelRules(None, None, "undeclared"), allow_empty)
    return problems


def _leakage(cases: Iterable[tuple[str, dict[str, Any]]]) -> list[Problem]:
    folds: dict[str, set] = defaultdict(set)
    sections: dict[str, set] = defaultdict(set)
    for section, e in cases:
        s = subject_of(e)
        sections[s].add(section)
        if section == "training" and "fold" in e:
            folds[s].add(int(e["fold"]))
    problems = []
    fix = "re-create the folds grouped by subject (prepare_data.py <converter> --folds N)"
    for s, f in sorted(folds.items()):
        if len(f) > 1:
            problems.append(Problem(s, "-", f"subject is in several folds {sorted(f)} (data leakage)", fix))
    for s, secs in sorted(sections.items()):
        if len(secs) > 1:  # e.g. trained on in 'training' and validated on in 'validation'
            problems.append(Problem(s, "-", f"subject is in several sections {sorted(secs)} (data leakage)", fix))
    return problems


def find_problems(
    datalist: str | os.PathLike | dict[str, Any],
    base_dir: str | None = None,
    num_channels: int | None = None,
    num_classes: int | None = None,
    preprocessing_args: Mapping[str, Any] | None = None,
    level: str = "quick",
    sections: Sequence[str] = SECTIONS,
    allow_empty: bool = False,
    num_workers: int | None = None,
    progress: bool | None = None,
) -> tuple[int, list[Problem]]:
    """``(cases checked, problems)`` without raising; see :func:`check_datalist`."""
    if level not in LEVELS:
        raise ValueError(f"check level must be one of {LEVELS}, got {level!r}.")
    if level == "off":
        return 0, []
    data = load_datalist(datalist) if not isinstance(datalist, dict) else datalist
    if num_channels is None and data.get("num_channels"):
        num_channels = int(data["num_channels"])
    rules = label_rules(num_classes, preprocessing_args, data.get("labels"))
    cases = [(s, resolve_entry(e, base_dir)) for s in sections for e in data.get(s, []) if isinstance(e, dict)]
    cases += [
        (s, {"image": resolve_paths(e, base_dir)}) for s in sections for e in data.get(s, []) if isinstance(e, str)
    ]

    def one(item: tuple[str, dict[str, Any]]) -> list[Problem]:
        section, entry = item
        return check_case(entry, section, num_channels, rules, level, allow_empty)

    workers = num_workers or min(4, os.cpu_count() or 1)
    show = progress if progress is not None else (len(cases) >= 50 or (level == "full" and len(cases) >= 10))
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        tqdm(total=len(cases), desc=f"checking data ({level})", unit="case", disable=not show) as bar,
    ):
        results = []
        for r in pool.map(one, cases):  # keeps datalist order
            results.append(r)
            bar.update()
    problems = [p for r in results for p in r] + _leakage(cases)
    return len(cases), problems


def check_datalist(
    datalist: str | os.PathLike | dict[str, Any],
    base_dir: str | None = None,
    num_channels: int | None = None,
    num_classes: int | None = None,
    preprocessing_args: Mapping[str, Any] | None = None,
    level: str = "quick",
    sections: Sequence[str] = SECTIONS,
    allow_empty: bool = False,
    num_workers: int | None = None,
    progress: bool | None = None,
) -> int:
    """Check every case of ``datalist`` and raise :class:`DataValidationError` listing all problems.

    Args:
        datalist: datalist file or its content; relative paths are resolved against ``base_dir``.
        num_channels: channels the model expects (default: the datalist's ``num_channels``, if any).
        num_classes, preprocessing_args: the bundle's values; they decide the allowed label values
            (see :func:`label_rules`).
        level: ``off``, ``quick`` (headers only) or ``full`` (voxels too).
        allow_empty: accept labels without foreground (datasets with negative cases).

    Returns the number of cases checked.
    """
    n, problems = find_problems(
        datalist,
        base_dir,
        num_channels,
        num_classes,
        preprocessing_args,
        level,
        sections,
        allow_empty,
        num_workers,
        progress,
    )
    if problems:
        raise DataValidationError(problems, source=str(datalist) if not isinstance(datalist, dict) else "datalist")
    return n


def check_datalist_file(
    datalist: str | os.PathLike,
    dataset_dir: str | None = None,
    level: str = "quick",
    num_channels: int | None = None,
    num_classes: int | None = None,
    label_map: Mapping[Any, int] | None = None,
    regions: str | Mapping[str, Sequence[int]] | None = None,
    allow_empty: bool = False,
) -> int:
    """:func:`check_datalist` with defaults from the datalist itself (``prepare_data.py check``): its
    ``dataset_dir`` (else its folder), and its ``label_map``/``regions``/``labels`` for the allowed label values.
    ``regions`` may name a convention (``brats2015``, ``brats2021``, ``brats2023``, ``msd``)."""
    from shared_components.data.conventions import regions_of

    data = load_datalist(datalist)
    base = dataset_dir or data.get("dataset_dir") or os.path.dirname(os.path.abspath(datalist))
    args: dict[str, Any] = {}
    if label_map or data.get("label_map"):
        args["label_map"] = label_map or data["label_map"]
    elif regions or data.get("regions"):
        args["regions"] = regions_of(regions or data["regions"])
    return check_datalist(
        data, base, num_channels, num_classes, args or None, level, allow_empty=allow_empty, progress=None
    )
