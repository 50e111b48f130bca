"""BraTS-style per-subject folders: one folder per subject holding one file per channel and a label map.

Built-in layouts (``layout='auto'`` picks the one whose files are there):

- ``brats2021`` (BraTS 2018-2021): ``BraTS2021_XXXXX/BraTS2021_XXXXX_{flair,t1,t1ce,t2,seg}.nii.gz``;
- ``brats2023`` (BraTS 2023+): ``BraTS-GLI-XXXXX-XXX/BraTS-GLI-XXXXX-XXX-{t2f,t1n,t1c,t2w,seg}.nii.gz``;
- ``brats2015_examples``: the two-channel, z-scored BraTS 2015 export in ``../shared/data/brats2015_examples``
  (``Flair_subtrMeanDivStd``, ``T1c_subtrMeanDivStd``, ``OTMultiClass``), with ``train/validation/test``
  sub-folders.

Any other per-subject layout works with ``channels`` (comma-separated glob patterns without extension, ``{subject}``
standing for the folder name), ``label`` and ``convention``. Channels are listed FLAIR, T1, T1-Gd, T2 (the MSD
Task01 order), so models trained on one BraTS release accept the others. The datalist records the label names
and the TC/WT/ET ``regions`` of the convention (``conventions.py``).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shared_components.data.conventions import convention as get_convention
from shared_components.data.converters.base import build_datalist, datalist_writer, modality_dict
from shared_components.data.errors import DataValidationError, Problem
from shared_components.data.image_files import IMAGE_SUFFIXES, relative_to

LAYOUTS: dict[str, dict[str, Any]] = {
    "brats2021": {
        "channels": {"FLAIR": "{subject}_flair", "T1": "{subject}_t1", "T1CE": "{subject}_t1ce", "T2": "{subject}_t2"},
        "label": "{subject}_seg",
        "convention": "brats2021",
    },
    "brats2023": {
        "channels": {
            "T2-FLAIR": "{subject}-t2f",
            "T1": "{subject}-t1n",
            "T1-Gd": "{subject}-t1c",
            "T2": "{subject}-t2w",
        },
        "label": "{subject}-seg",
        "convention": "brats2023",
    },
    "brats2015_examples": {
        "channels": {"FLAIR": "Flair_subtrMeanDivStd", "T1c": "T1c_subtrMeanDivStd"},
        "label": "OTMultiClass",
        "convention": "brats2015",
    },
}
SPLITS = {"train": "training", "training": "training", "validation": "validation", "val": "validation"}
SPLITS |= {"test": "test", "testing": "test"}


def _match(folder: Path, pattern: str) -> list[Path]:
    """Files in ``folder`` matching the glob ``pattern`` (``{subject}`` = folder name) plus an image extension."""
    stem = pattern.replace("{subject}", glob.escape(folder.name))
    out = {n for ext in IMAGE_SUFFIXES for n in glob.glob(stem + ext, root_dir=folder)}
    return sorted(folder / n for n in out if not n.startswith("."))


def _subject_folders(src: Path, patterns: Sequence[str]) -> list[Path]:
    folders = []
    for root, dirs, _files in os.walk(src):
        dirs.sort()
        if any(_match(Path(root), p) for p in patterns):
            folders.append(Path(root))
    return folders


def _layout(src: Path, layout: str, channels: Any, label: str | None, convention: str | None) -> dict[str, Any]:
    if channels:
        items = channels.split(",") if isinstance(channels, str) else list(channels)
        if isinstance(channels, Mapping):
            chans = {str(k): str(v) for k, v in channels.items()}
        else:
            chans = {p.strip().split("{subject}")[-1].strip("_-*") or f"ch{i}": p.strip() for i, p in enumerate(items)}
        if not label:
            raise ValueError("custom channels need the label pattern too (--label, e.g. '{subject}_seg').")
        return {"channels": chans, "label": label, "convention": convention or "brats2021", "name": "custom"}
    if layout != "auto":
        if layout not in LAYOUTS:
            raise ValueError(f"unknown BraTS layout {layout!r}: use auto, {', '.join(LAYOUTS)} or --channels/--label.")
        chosen = dict(LAYOUTS[layout], name=layout)
    else:
        counts = {
            n: len(_subject_folders(src, [lay["label"], *lay["channels"].values()])) for n, lay in LAYOUTS.items()
        }
        best = max(counts, key=lambda n: counts[n])
        if counts[best] == 0:
            expected = "; ".join(
                f"{n}: {', '.join(lay['channels'].values())}, {lay['label']}" for n, lay in LAYOUTS.items()
            )
            raise FileNotFoundError(
                f"no BraTS subject folders found below {src} (looked for {expected}); "
                "give the file patterns with --channels and --label."
            )
        chosen = dict(LAYOUTS[best], name=best)
    if label:
        chosen["label"] = label
    if convention:
        chosen["convention"] = convention
    return chosen


def brats_datalist(
    src: str | Path,
    folds: int = 5,
    seed: int = 0,
    fold_mode: str = "kfold",
    layout: str = "auto",
    channels: str | Sequence[str] | Mapping[str, str] | None = None,
    label: str | None = None,
    convention: str | None = None,
    use_split_folders: bool = False,
    center_map: str | Mapping[str, str] | None = None,
    center_regex: str | None = None,
) -> dict[str, Any]:
    """Datalist of per-subject BraTS folders (2018-2021, 2023, the 2015 export, or your own channel patterns).

    Subject folders are searched recursively below ``src``; every problem is listed at once. Subjects with a label
    map are ``training`` cases (k folds), those without go to ``test``.

    Args:
        src: the folder holding the subject folders, e.g. ``BraTS2021_TrainingData``.
        folds: number of cross-validation folds, grouped by subject (stratified by centre when cases have one); 1
            puts every case in fold 0 (all of them evaluation cases of ``--fold 0``).
        seed: seed of the fold assignment (the same seed gives the same folds).
        fold_mode: ``kfold`` (k folds, ``--folds``) or ``loco`` (leave one centre out: fold i is centre i).
        layout: ``auto`` (the built-in layout whose files are there), ``brats2021``, ``brats2023`` or
            ``brats2015_examples``.
        channels: channel file patterns without extension, comma-separated (``{subject}`` = the folder name), e.g.
            ``'Flair_*,T1c_*'``; default: the layout's.
        label: label file pattern without extension, e.g. ``OTMultiClass``; default: the layout's.
        convention: label convention (``brats2015``, ``brats2021``, ``brats2023``, ``msd``): label names and the
            TC/WT/ET regions; default: the layout's.
        use_split_folders: fill ``training``/``validation``/``test`` from sub-folders named ``train``,
            ``validation``, ``test``.
        center_map: CSV (``SubjectID,Center``) or JSON (``{"subject": "centre"}``) file giving each subject's
            centre.
        center_regex: regular expression whose first group, matched on the subject name, is its centre.
    """
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"BraTS folder {src} not found.")
    lay = _layout(src, layout, channels, label, convention)
    conv = get_convention(lay["convention"])
    folders = _subject_folders(src, [lay["label"], *lay["channels"].values()])
    problems: list[Problem] = []
    sections: dict[str, list[dict[str, Any]]] = {"training": [], "validation": [], "test": []}
    seen: dict[str, Path] = {}
    for folder in folders:
        subject = folder.name
        if subject in seen:
            problems.append(Problem(subject, str(folder), f"subject folder also at {seen[subject]}", "keep one copy"))
            continue
        seen[subject] = folder
        files = []
        for name, pattern in lay["channels"].items():
            found = _match(folder, pattern)
            if len(found) != 1:
                what = "is missing" if not found else f"is ambiguous ({', '.join(p.name for p in found)})"
                problems.append(
                    Problem(
                        subject,
                        str(folder / pattern.format(subject=subject)),
                        f"{name} channel {what}",
                        "restore the file from the release or fix --channels so exactly one file matches",
                    )
                )
            else:
                files.append(relative_to(found[0], src))
        labels = _match(folder, lay["label"])
        if len(labels) > 1:
            problems.append(
                Problem(
                    subject, str(folder), f"label pattern {lay['label']!r} matches {len(labels)} files", "fix --label"
                )
            )
        entry: dict[str, Any] = {"image": files, "subject": subject}
        if labels:
            entry["label"] = relative_to(labels[0], src)
        top = folder.relative_to(src).parts[0].lower() if folder != src else ""
        section = SPLITS.get(top, "training") if use_split_folders else "training"
        if "label" not in entry and section != "test":
            section = "test"
        sections[section].append(entry)
    if problems:
        raise DataValidationError(problems, source=str(src))
    return build_datalist(
        sections["training"],
        sections["test"],
        sections["validation"],
        name=f"BraTS ({lay['name']})",
        description=f"Brain-tumour MRI, {len(lay['channels'])} channels, {lay['convention']} labels",
        source_layout=f"brats:{lay['name']}",
        dataset_dir=src,
        modality=modality_dict(list(lay["channels"]), len(lay["channels"])),
        labels=conv["labels"],
        regions=conv["regions"],
        folds=folds,
        seed=seed,
        fold_mode=fold_mode,
        center_map=center_map,
        center_regex=center_regex,
        extra={"convention": lay["convention"]},
    )


convert_brats = datalist_writer(brats_datalist)
