"""Validation of a datalist before training: every problem found is reported at once (see ``errors.py``).

Levels: ``off`` (no file checks); ``quick`` (files exist, headers readable, image/label shapes and affines agree,
channel count, no subject in two folds; headers only); ``full`` (also reads the voxels: corrupt or truncated files,
NaN/Inf intensities, constant images, label values outside the declared classes, non-integer or empty labels). The
bundles run it at ``initialize`` (``--check_data full`` by default, ``--allow_empty_labels true`` for datasets with
negative cases), ``prepare_data.py check`` by hand.

Given the bundle's ``fold``, the split is checked too, whatever the level: cases to train on and to validate on,
and no negative fold without a ``validation`` section. Files in a folder that does not exist (a wrong
``--dataset_dir``) are one problem, not one per file.

With a ``cache_file`` (the bundles: ``@cache_dir/check_cache.json``) what was learnt about each file (header,
voxel statistics) is remembered, keyed by its absolute path, size and modification time, so a rerun reads only
new or changed files; the verdicts are re-derived from these facts, so other classes or options need no re-read.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from shared_components.data.datalist import SECTIONS, load_datalist, resolve_entry, resolve_paths, subject_of
from shared_components.data.errors import DataValidationError, Problem
from shared_components.data.image_files import ImageHeader, read_array, read_header
from shared_components.files import write_text_atomic

logger = logging.getLogger(__name__)

LEVELS = ("off", "quick", "full")
AFFINE_ATOL = 1e-3  # mm / direction-cosine units: header round-off passes, a shifted or flipped grid does not
FIX_PATH = "fix the path in the datalist, or pass the folder the paths are relative to (--dataset_dir)"
FIX_REEXPORT = "re-copy or re-export the file (it may be truncated or corrupt)"
FIX_EMPTY = (
    "check the label (saved blank, or the wrong file?); remove the case, or allow labels without foreground if "
    "negative cases are intended (bundles: --allow_empty_labels true; prepare_data.py check: --allow_empty true)"
)
CACHE_FORMAT = 1
MAX_LABEL_VALUES = 256  # distinct label values remembered per file (more: not a label map)


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


# ---- what is learnt about a file, remembered across runs ---------------------------------------------------------


def _header_facts(f: str) -> dict[str, Any]:
    try:
        h = read_header(f)
    except ValueError as e:
        return {"error": str(e)}
    return {"shape": list(h.shape), "channels": h.channels, "affine": h.affine.tolist(), "dtype": h.dtype}


def _header(facts: Mapping[str, Any]) -> ImageHeader:
    return ImageHeader(tuple(facts["shape"]), int(facts["channels"]), np.asarray(facts["affine"]), facts["dtype"])


def _image_facts(f: str) -> dict[str, Any]:
    try:
        data = read_array(f)
    except ValueError as e:
        return {"error": str(e)}
    nonfinite = 0
    if np.issubdtype(data.dtype, np.floating):
        nonfinite = int(data.size - np.count_nonzero(np.isfinite(data)))
    constant = bool(nonfinite == 0 and data.size and data.min() == data.max())
    return {"nonfinite": nonfinite, "constant": constant, "value": data.flat[0].item() if constant else None}


def _distinct_ints(data: np.ndarray) -> list[int]:
    flat = data.ravel()
    if np.issubdtype(flat.dtype, np.integer) and flat.size and flat.min() >= 0 and flat.max() < 1 << 16:
        counts = np.zeros(int(flat.max()) + 1, np.int64)  # label maps: a histogram beats sorting
        for start in range(0, flat.size, 1 << 24):  # in chunks: bincount copies to 64-bit integers
            counts += np.bincount(flat[start : start + (1 << 24)], minlength=counts.size)
        return [int(v) for v in np.flatnonzero(counts)]
    return [int(v) for v in np.unique(flat)]


def _label_facts(f: str) -> dict[str, Any]:
    try:
        data = read_array(f)
    except ValueError as e:
        return {"error": str(e)}
    non_integer = False
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)):
            return {"nonfinite": True}
        rounded = np.round(data)
        non_integer = not np.array_equal(data, rounded)
        data = rounded
    values = _distinct_ints(data)
    return {"non_integer": non_integer, "values": values[:MAX_LABEL_VALUES], "n_values": len(values)}


class FileFacts:
    """Per-file facts (header, image or label voxel statistics), computed once and, with a ``path``, remembered in
    a JSON file keyed by (absolute path, size, mtime); a file that does not read is read again next time.
    Thread-safe; :meth:`save` merges with the file and writes it atomically."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else None
        self.entries: dict[str, dict[str, Any]] = self._load() if self.path else {}
        self.computed: set[str] = set()  # files read in this run
        self.remembered: set[str] = set()  # files whose facts came from the cache
        self._changed: set[str] = set()
        self._lock = threading.Lock()

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())  # type: ignore[union-attr]
        except (OSError, ValueError):
            return {}
        files = data.get("files") if isinstance(data, dict) and data.get("format") == CACHE_FORMAT else None
        return dict(files) if isinstance(files, dict) else {}

    @staticmethod
    def _stamp(f: str) -> list[int] | None:
        try:
            st = os.stat(f)
        except OSError:
            return None
        return [st.st_size, st.st_mtime_ns]

    def known(self, f: str, kind: str) -> bool:
        """Whether ``kind`` facts of ``f`` are remembered for its current size and mtime."""
        entry = self.entries.get(os.path.abspath(f))
        return bool(entry) and kind in entry and entry.get("stat") == self._stamp(f)

    def get(self, f: str, kind: str, compute: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
        key, stamp = os.path.abspath(f), self._stamp(f)
        with self._lock:
            entry = self.entries.get(key)
            if stamp is not None and entry and entry.get("stat") == stamp and kind in entry:
                self.remembered.add(key)
                return entry[kind]
        value = compute(f)
        with self._lock:
            self.computed.add(key)
            # not remembered: a file that changed while it was read, and failures (an I/O error may be transient)
            if stamp is not None and stamp == self._stamp(f) and "error" not in value:
                entry = self.entries.get(key)
                if not entry or entry.get("stat") != stamp:
                    entry = self.entries[key] = {"stat": stamp}
                entry[kind] = value
                self._changed.add(key)
        return value

    def save(self) -> None:
        """Write the new facts (merged with what another process may have written meanwhile), atomically."""
        if self.path is None or not self._changed:
            return
        merged = self._load()
        merged.update({k: self.entries[k] for k in self._changed})
        merged = {k: v for k, v in merged.items() if os.path.exists(k)}  # forget deleted files (test folders)
        try:
            write_text_atomic(self.path, json.dumps({"format": CACHE_FORMAT, "files": merged}) + "\n")
        except OSError as e:  # a read-only bundle folder: the next run reads the files again
            logger.warning(f"cannot write the data check cache {self.path} ({e})")
        self._changed.clear()


# ---- checks of one case -------------------------------------------------------------------------------------------


def _check_headers(
    case: str, key: str, files: list[str], problems: list[Problem], facts: FileFacts
) -> list[ImageHeader | None]:
    headers: list[ImageHeader | None] = []
    for f in files:
        if not os.path.isfile(f):
            problems.append(Problem(case, f, f"{key} file is missing", FIX_PATH))
            headers.append(None)
            continue
        found = facts.get(f, "header", _header_facts)
        if "error" in found:
            problems.append(Problem(case, f, f"{key} file is unreadable: {found['error']}", FIX_REEXPORT))
            headers.append(None)
        else:
            headers.append(_header(found))
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


def _check_label_voxels(
    case: str, f: str, rules: LabelRules, allow_empty: bool, facts: FileFacts | None = None
) -> list[Problem]:
    found = (facts or FileFacts()).get(f, "label", _label_facts)
    if "error" in found:
        return [Problem(case, f, f"label {found['error']}", FIX_REEXPORT)]
    if found.get("nonfinite"):
        return [Problem(case, f, "label has NaN/Inf values", "re-export the label map as an integer image")]
    problems = []
    if found["non_integer"]:
        problems.append(
            Problem(
                case,
                f,
                "label has non-integer values (resampled with linear interpolation?)",
                "resample label maps with nearest-neighbour interpolation and save them as integers",
            )
        )
    present = set(found["values"])
    if rules.allowed is not None:
        bad = sorted(present - rules.allowed)
        more = int(found["n_values"]) - len(found["values"])
        if bad:
            extra = f" (and {more} more distinct values: an image saved as the label?)" if more > 0 else ""
            problems.append(
                Problem(
                    case,
                    f,
                    f"label values {bad} are outside the declared classes {rules.describe()}{extra}",
                    "fix the label file, or declare the classes (num_classes) or map raw values to classes with "
                    "preprocessing_args.label_map / regions",
                )
            )
    if not allow_empty:
        fg = present - {0} if rules.foreground is None else present & rules.foreground
        if not fg:
            what = "no foreground voxels" if present <= {0} else f"none of the mapped classes ({rules.source})"
            problems.append(Problem(case, f, f"label is empty: {what}", FIX_EMPTY))
    return problems


def _check_image_voxels(case: str, f: str, facts: FileFacts | None = None) -> list[Problem]:
    found = (facts or FileFacts()).get(f, "image", _image_facts)
    if "error" in found:
        return [Problem(case, f, f"image {found['error']}", FIX_REEXPORT)]
    if found["nonfinite"]:
        return [
            Problem(
                case,
                f,
                f"image has {found['nonfinite']} NaN/Inf voxels",
                "replace them (e.g. numpy.nan_to_num) or re-export the image from the source scan",
            )
        ]
    if found["constant"]:
        return [Problem(case, f, f"image is constant (every voxel = {found['value']})", "re-export the image")]
    return []


def check_case(
    entry: Mapping[str, Any],
    section: str = "training",
    num_channels: int | None = None,
    rules: LabelRules | None = None,
    level: str = "quick",
    allow_empty: bool = False,
    facts: FileFacts | None = None,
) -> list[Problem]:
    """Problems of one datalist entry (paths already absolute); ``facts`` remembers what was read."""
    facts = facts if facts is not None else FileFacts()
    case = subject_of(dict(entry))
    problems: list[Problem] = []
    if "image" not in entry:
        return [Problem(case, "-", f"{section} entry has no 'image'", "re-create the datalist with a converter")]
    images = _files(entry["image"])
    has_label = "label" in entry and entry["label"] not in (None, "")
    if section == "training" and not has_label:
        problems.append(Problem(case, images[0], "training entry has no 'label'", "add the label or move it to 'test'"))
    img_headers = _check_headers(case, "image", images, problems, facts)
    lbl_files = _files(entry["label"]) if has_label else []
    lbl_headers = _check_headers(case, "label", lbl_files, problems, facts)
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
            problems += _check_image_voxels(case, f, facts)
        for f in lbl_files:
            problems += _check_label_voxels(case, f, rules or LabelRules(None, None, "undeclared"), allow_empty, facts)
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


def _split_problems(data: Mapping[str, Any], fold: int) -> list[Problem]:
    """The split of the bundle's ``fold`` (``data``: its ``training`` and/or ``validation`` cases): each section
    given holds cases, and a negative fold (every case trains) comes with validation cases of its own."""
    fold = int(fold)
    entries = [e for s in ("training", "validation") for e in data.get(s) or [] if isinstance(e, dict)]
    present = sorted({int(e["fold"]) for e in entries if e.get("fold") is not None})
    if not present:
        folds = "no folds"
    elif present == list(range(present[0], present[-1] + 1)) and len(present) > 2:
        folds = f"folds {present[0]}-{present[-1]}"
    else:
        folds = ("fold " if len(present) == 1 else "folds ") + ", ".join(map(str, present))
    case, where = f"fold {fold}", "datalist"
    problems = []
    if "training" in data and not data.get("training"):
        issue = "no cases to train on" + (f": every case is in fold {fold}" if fold >= 0 and present else "")
        fix = "assign the cases to several folds (prepare_data.py <converter> --folds N), or pass another --fold"
        problems.append(Problem(case, where, issue, fix))
    if "validation" in data and not data.get("validation"):
        if fold < 0:
            issue = (
                f"--fold {fold} is not a fold of the datalist ({folds}): every case would train and none validate, "
                "so no best model would be kept"
            )
            fix = f"pass a fold to hold out ({folds}), or add a 'validation' section to the datalist"
        else:
            issue = f"no cases to validate on in fold {fold} ({folds})"
            fix = f"pass a fold that holds cases ({folds})"
        problems.append(Problem(case, where, issue, fix))
    return problems


def _missing_folders(cases: Sequence[tuple[str, dict[str, Any]]]) -> tuple[list[Problem], set[int]]:
    """One problem per folder that does not exist and holds cases' files (a wrong ``--dataset_dir``), instead of
    one per file, and the indices of the cases concerned."""
    exists: dict[str, bool] = {}
    missing: dict[str, list[int]] = defaultdict(list)  # folder -> cases
    n_files: Counter[str] = Counter()
    for i, (_, entry) in enumerate(cases):
        for key in ("image", "label"):
            for f in _files(entry.get(key) or []):
                folder = os.path.dirname(os.path.abspath(f))
                if folder not in exists:
                    exists[folder] = os.path.isdir(folder)
                if not exists[folder]:
                    missing[folder].append(i)
                    n_files[folder] += 1
    if not missing:
        return [], set()
    common = os.path.commonpath(list(missing)) if len(missing) > 1 else next(iter(missing))
    groups = {common: sorted({i for v in missing.values() for i in v})} if not os.path.isdir(common) else missing
    problems, skipped = [], set()
    for folder, idx in sorted(groups.items()):
        files = sum(n for f, n in n_files.items() if f == folder or f.startswith(folder + os.sep))
        cases_in = sorted(set(idx))
        problems.append(
            Problem(
                f"{len(cases_in)} case(s)",
                folder,
                f"the folder does not exist ({files} file(s) of {len(cases_in)} case(s) are in it)",
                "check --dataset_dir (the folder the datalist's paths are relative to) and --datalist",
            )
        )
        skipped |= set(cases_in)
    return problems, skipped


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
    fold: int | None = None,
    cache_file: str | os.PathLike | None = None,
) -> tuple[int, list[Problem]]:
    """``(cases checked, problems)`` without raising; see :func:`check_datalist`."""
    if level not in LEVELS:
        raise ValueError(f"check level must be one of {LEVELS}, got {level!r}.")
    data = load_datalist(datalist) if not isinstance(datalist, dict) else datalist
    split = _split_problems(data, fold) if fold is not None else []
    if level == "off":
        return 0, split
    t0 = time.perf_counter()
    if num_channels is None and data.get("num_channels"):
        num_channels = int(data["num_channels"])
    rules = label_rules(num_classes, preprocessing_args, data.get("labels"))
    cases = [(s, resolve_entry(e, base_dir)) for s in sections for e in data.get(s) or [] if isinstance(e, dict)]
    cases += [
        (s, {"image": resolve_paths(e, base_dir)}) for s in sections for e in data.get(s) or [] if isinstance(e, str)
    ]
    folders, skipped = _missing_folders(cases)
    todo = [c for i, c in enumerate(cases) if i not in skipped]
    facts = FileFacts(cache_file)
    kinds = ("header", "image", "label") if level == "full" else ("header",)

    def one(item: tuple[str, dict[str, Any]]) -> list[Problem]:
        section, entry = item
        return check_case(entry, section, num_channels, rules, level, allow_empty, facts)

    def remembered(entry: dict[str, Any]) -> bool:
        files = _files(entry.get("image") or []) + _files(entry.get("label") or [])
        return all(facts.known(f, "header") and (len(kinds) == 1 or facts.known(f, k)) for f in files for k in kinds)

    work = len(todo) if cache_file is None else sum(not remembered(e) for _, e in todo)
    workers = num_workers or min(4, os.cpu_count() or 1)
    show = progress if progress is not None else (work >= 50 or (level == "full" and work >= 10))
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        tqdm(total=len(todo), desc=f"checking data ({level})", unit="case", disable=not show) as bar,
    ):
        results = []
        for r in pool.map(one, todo):  # keeps datalist order
            results.append(r)
            bar.update()
    facts.save()
    if cache_file is not None:
        logger.info(
            f"data check ({level}): {len(cases)} cases in {time.perf_counter() - t0:.2f}s, {len(facts.computed)} "
            f"file(s) read, {len(facts.remembered - facts.computed)} remembered in {cache_file}"
        )
    problems = split + folders + [p for r in results for p in r] + _leakage(cases)
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
    fold: int | None = None,
    cache_file: str | os.PathLike | None = None,
) -> int:
    """Check every case of ``datalist`` and raise :class:`DataValidationError` listing all problems.

    Args:
        datalist: datalist file or its content; relative paths are resolved against ``base_dir``.
        num_channels: channels the model expects (default: the datalist's ``num_channels``, if any).
        num_classes, preprocessing_args: the bundle's values; they decide the allowed label values
            (see :func:`label_rules`).
        level: ``off``, ``quick`` (headers only) or ``full`` (voxels too).
        allow_empty: accept labels without foreground (datasets with negative cases).
        fold: the bundle's fold, whose split (``training``/``validation`` cases) is checked at every level.
        cache_file: JSON file remembering each file's facts across runs (see the module docstring).

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
        fold,
        cache_file,
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
