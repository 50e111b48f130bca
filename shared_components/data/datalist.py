"""Read, write and split datalists in MONAI's decathlon format (``training``/``validation``/``test`` lists).

Every entry holds ``image`` (a path, or a list of channel paths), ``label`` (training only), ``fold`` and
``subject``, and optionally ``center``. Relative paths are relative to the dataset folder (``base_dir``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shared_components.data.image_files import strip_suffix
from shared_components.files import write_text_atomic

SECTIONS = ("training", "validation", "test")


def save_datalist(datalist: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``datalist`` as JSON atomically (a killed run never leaves half a file)."""
    return write_text_atomic(path, json.dumps(datalist, indent=4) + "\n")


def load_datalist(path: str | os.PathLike) -> dict[str, Any]:
    """Load a datalist JSON, with a clear error when it is missing or not a datalist."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Datalist not found: {path}. Create it with `segbundles prepare <converter> --dst ...` "
            "or pass `--datalist <file>` to the bundle."
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"Datalist {path} is not valid JSON ({e}).") from e
    if not isinstance(data, dict) or not any(k in data for k in SECTIONS):
        raise ValueError(f"Datalist {path} has none of the sections {SECTIONS}.")
    return data


def resolve_paths(value: Any, base_dir: str | None) -> Any:
    """A path (or list of paths) made absolute against ``base_dir`` (``None``: unchanged); other values unchanged."""
    if base_dir is None:
        return value
    if isinstance(value, str):
        return value if os.path.isabs(value) else os.path.normpath(os.path.join(base_dir, value))
    if isinstance(value, list | tuple):
        return [resolve_paths(v, base_dir) for v in value]
    return value


def resolve_entry(entry: dict[str, Any], base_dir: str | None, keys: Sequence[str] = ("image", "label")) -> dict:
    """Copy of ``entry`` with the file paths under ``keys`` made absolute against ``base_dir``."""
    out = dict(entry)
    for k in keys:
        if k in out:
            out[k] = resolve_paths(out[k], base_dir)
    return out


def split(
    datalist: str | os.PathLike | dict[str, Any],
    fold: int | None = 0,
    part: str = "train",
    base_dir: str | None = None,
    selection_fold: int | str | None = None,
) -> list[dict[str, Any]]:
    """Entries of one part of a cross-validation split, with absolute paths.

    Args:
        datalist: a datalist file or its loaded content.
        fold: the fold held out for validation; ``None`` or ``-1`` trains on every ``training`` entry.
        part: ``train`` (training entries not in ``fold``), ``val`` (entries in ``fold``, plus any ``validation``
            section), ``select`` (the entries that pick the best checkpoint: ``selection_fold``'s, else ``val``),
            ``all`` (every training entry) or ``test``.
        base_dir: folder that relative paths are relative to (the bundle's ``dataset_dir``).
        selection_fold: a second held-out fold, which picks the checkpoint (``select``) and is not trained on, so
            ``fold`` is scored by a model chosen without it; ``"next"``: the fold after ``fold`` (cyclically, so a
            cross-validation keeps one setting for every fold); ``None``: ``fold`` does both (the usual, optimistic).
    """
    data = load_datalist(datalist) if not isinstance(datalist, dict) else datalist
    training = data.get("training", [])
    use_folds = fold is not None and int(fold) >= 0
    if use_folds and training and any("fold" not in e for e in training):
        raise ValueError("Some training entries have no 'fold'; re-create the datalist with --folds N.")
    present = sorted({int(e["fold"]) for e in training}) if use_folds else []
    if use_folds and training and int(fold) not in present:
        raise ValueError(f"fold={fold} is not in the datalist (folds present: {present}).")
    if selection_fold == "next" and use_folds and int(fold) in present and len(present) > 1:
        selection_fold = present[(present.index(int(fold)) + 1) % len(present)]
    if isinstance(selection_fold, str) and not selection_fold.lstrip("-").isdigit():
        raise ValueError(f"selection_fold={selection_fold!r} must be a fold number, 'next' or null.")
    chosen = None if selection_fold is None else int(selection_fold)
    if chosen is not None and not (use_folds and chosen != int(fold) and chosen in present):
        others = [f for f in present if not use_folds or f != int(fold)]
        raise ValueError(
            f"selection_fold={selection_fold} must be another fold of the datalist than fold={fold} "
            f"(one of {others}), or null."
        )
    held_out = {int(fold), *([] if chosen is None else [chosen])} if use_folds else set()
    if part == "select":
        part, fold = "val", fold if chosen is None else chosen
    if part == "train":
        items = [e for e in training if not use_folds or int(e["fold"]) not in held_out]
    elif part == "val":
        items = [e for e in training if use_folds and int(e["fold"]) == int(fold)] + data.get("validation", [])
    elif part == "all":
        items = list(training)
    elif part == "test":
        items = data.get("test", [])
    else:
        raise ValueError(f"part must be one of train, val, select, all, test; got {part!r}.")
    return [resolve_entry(e, base_dir) for e in items]


def subject_of(entry: dict[str, Any]) -> str:
    """Case name of an entry: its ``subject`` or the file name of its (first) image without extension."""
    if entry.get("subject"):
        return str(entry["subject"])
    image = entry["image"]
    first = image[0] if isinstance(image, list | tuple) else image
    name = os.path.basename(str(first))
    return name[: -len(".npy")] if name.endswith(".npy") else strip_suffix(name)


def describe(datalist: str | os.PathLike | dict[str, Any]) -> str:
    """One-paragraph summary: cases per section and per fold (and per centre when present)."""
    data = load_datalist(datalist) if not isinstance(datalist, dict) else datalist
    lines = []
    for section in SECTIONS:
        entries = data.get(section, [])
        if not entries:
            continue
        line = f"{section}: {len(entries)} cases"
        folds = sorted({e["fold"] for e in entries if "fold" in e})
        if folds:
            line += " | per fold " + ", ".join(f"{f}: {sum(e.get('fold') == f for e in entries)}" for f in folds)
        centres = sorted({str(e["center"]) for e in entries if e.get("center") is not None})
        if centres:
            line += " | per centre " + ", ".join(
                f"{c}: {sum(str(e.get('center')) == c for e in entries)}" for c in centres
            )
        lines.append(line)
    return "\n".join(lines)


def allows_empty_labels(datalist: str | os.PathLike | Mapping[str, Any]) -> bool:
    """Whether a datalist declares cases without foreground as intended (``"allow_empty_labels": true``, e.g. the
    ADAM converter's scans without aneurysm): the bundles' default for ``--allow_empty_labels``."""
    data = datalist if isinstance(datalist, Mapping) else load_datalist(datalist)
    return bool(data.get("allow_empty_labels", False))
