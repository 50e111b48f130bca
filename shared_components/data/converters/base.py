"""What every converter shares: label names, class selection, centres, folds, and writing a checked datalist.

A datalist written by a converter holds, besides the ``training``/``validation``/``test`` entries
(``{image, label, fold, subject, center?}``, paths relative to ``dataset_dir`` when below it):
``name``, ``description``, ``source_layout``, ``dataset_dir`` (the folder the paths are relative to, for
``prepare_data.py check/fingerprint``; bundles use their own ``dataset_dir``), ``modality`` (MSD-style channel names
``{"0": "FLAIR", ...}``), ``num_channels``, ``labels`` (``{"0": "background", ...}``), optionally ``regions``
(overlapping BraTS-type regions as raw label values) and ``label_map`` (raw value -> class, when classes were
selected), and ``num_folds``/``fold_mode``/``seed``.
"""

from __future__ import annotations

import csv
import inspect
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from shared_components.data.checks import check_datalist
from shared_components.data.datalist import save_datalist
from shared_components.data.errors import DataValidationError, Problem
from shared_components.data.folds import make_folds

SUBJECT_COLUMNS = ("subjectid", "subject_id", "subject", "patientid", "patient_id", "caseid", "case", "id")
CENTER_COLUMNS = ("center", "centre", "site", "institution", "centerid", "centreid")


def datalist_path(dst: str | os.PathLike) -> Path:
    """``dst`` itself when it ends in ``.json``, else ``dst/datalist.json``."""
    dst = Path(dst)
    return dst if dst.suffix == ".json" else dst / "datalist.json"


def modality_dict(modality: str | Sequence[str] | Mapping[str, str] | None, num_channels: int) -> dict[str, str]:
    """MSD-style channel names ``{"0": name, ...}`` from ``"CT"``, ``"FLAIR,T1c"``, a list or a dict."""
    if isinstance(modality, Mapping):
        names = [str(modality[k]) for k in sorted(modality, key=int)]
    elif isinstance(modality, str):
        names = [m.strip() for m in modality.split(",") if m.strip()]
    elif modality is None:
        names = []
    else:
        names = [str(m) for m in modality]
    if len(names) == 1 and num_channels > 1:
        names = [f"{names[0]}_{i}" for i in range(num_channels)]
    if names and len(names) != num_channels:
        raise ValueError(f"{len(names)} modality names {names} for {num_channels} channels; give one per channel.")
    return {str(i): n for i, n in enumerate(names or ["unknown"] * num_channels)}


def read_label_names(spec: str | os.PathLike | Mapping[str, Any] | None, group: str | None = None) -> dict[str, str]:
    """Label names as ``{"0": "background", "1": ...}`` from a dict or a JSON file in any common form:
    ``{"1": "spleen"}``, MSD ``dataset.json`` (``labels``), nnU-Net v2 (``{"labels": {"liver": 1}}``) or nested
    groups (TotalSegmentator's ``{"total": {"1": "spleen", ...}, "total_mr": {...}}``: ``group`` picks one; a
    ``group`` that is no key is a hint, e.g. the label file name, holding the group's name)."""
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        data: Any = dict(spec)
    else:
        path = Path(spec)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"label names file {path} is not readable JSON ({e}).") from e
    if isinstance(data, Mapping) and isinstance(data.get("labels"), Mapping):
        data = data["labels"]
    if isinstance(data, Mapping) and data and all(isinstance(v, Mapping) for v in data.values()):
        if group in data:
            data = data[group]
        else:
            hinted = sorted((k for k in data if group and k in group), key=len)
            if len(data) > 1 and not hinted:
                raise ValueError(f"label names in {spec} come in groups {list(data)}: choose one (--label_group).")
            data = data[hinted[-1] if hinted else next(iter(data))]
    out: dict[int, str] = {}
    for k, v in dict(data).items():
        if str(k).lstrip("-").isdigit():
            out[int(k)] = str(v)
        elif isinstance(v, int | str) and str(v).isdigit():  # nnU-Net v2: name -> value
            out[int(v)] = str(k)
        else:
            raise ValueError(f"cannot read label names from {spec}: entry {k!r}: {v!r} is not value -> name.")
    out.setdefault(0, "background")
    return {str(k): out[k] for k in sorted(out)}


def select_classes(labels: Mapping[str, str], select: str | Sequence[str | int]) -> tuple[dict[str, int], dict]:
    """Keep some classes of a label map: ``(label_map raw -> class, new label names)``; others become background.

    ``select`` names classes by name or raw value, e.g. ``"spleen,liver"`` or ``[1, 5]``: spleen -> 1, liver -> 2.
    """
    items = [s.strip() for s in select.split(",")] if isinstance(select, str) else list(select)
    by_name = {v.lower(): int(k) for k, v in labels.items()}
    label_map: dict[str, int] = {}
    names = {"0": "background"}
    for i, s in enumerate(items, start=1):
        key = str(s).strip()
        if key.lstrip("-").isdigit() and (key in labels or not labels):
            raw = int(key)
        elif key.lower() in by_name:
            raw = by_name[key.lower()]
        else:
            raise ValueError(f"class {s!r} is not among the label names ({', '.join(sorted(by_name)) or 'none'}).")
        label_map[str(raw)] = i
        names[str(i)] = labels.get(str(raw), f"label_{raw}")
    return label_map, names


def load_center_map(center_map: str | os.PathLike | Mapping[str, str] | None) -> dict[str, str]:
    """Subject -> centre from a dict, a JSON file (``{"subject": "centre"}``) or a CSV with a subject and a
    centre column (``SubjectID,Center``)."""
    if center_map is None:
        return {}
    if isinstance(center_map, Mapping):
        return {str(k): str(v) for k, v in center_map.items()}
    path = Path(center_map)
    if not path.is_file():
        raise FileNotFoundError(f"centre map {path} not found (a JSON subject->centre or a CSV SubjectID,Center).")
    if path.suffix == ".json":
        return {str(k): str(v) for k, v in json.loads(path.read_text()).items()}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    cols = {c.lower().strip(): c for c in rows[0]}
    subj = next((cols[c] for c in SUBJECT_COLUMNS if c in cols), None)
    cent = next((cols[c] for c in CENTER_COLUMNS if c in cols), None)
    if subj is None or cent is None:
        raise ValueError(f"centre map {path} needs a subject column and a centre column, found {list(cols)}.")
    return {r[subj].strip(): r[cent].strip() for r in rows}


def apply_centers(
    entries: list[dict[str, Any]],
    center_map: str | os.PathLike | Mapping[str, str] | None = None,
    center_regex: str | None = None,
) -> list[dict[str, Any]]:
    """Set ``center`` from a subject -> centre map, or from the first group of ``center_regex`` matched on the
    subject (e.g. ``brats_(\\w+?)_pat`` gives ``2013``/``tcia`` for BraTS 2015 names)."""
    mapping = load_center_map(center_map)
    pattern = re.compile(center_regex) if center_regex else None
    problems = []
    for e in entries:
        if mapping:
            if e["subject"] in mapping:
                e["center"] = mapping[e["subject"]]
            else:
                problems.append(Problem(e["subject"], str(center_map), "subject missing from the centre map", "add it"))
        elif pattern:
            m = pattern.search(e["subject"])
            if not m:
                problems.append(
                    Problem(e["subject"], "-", f"center_regex {center_regex!r} does not match", "adjust the regex")
                )
            else:
                e["center"] = m.group(1) if m.groups() else m.group(0)
    if problems:
        raise DataValidationError(problems, source="centre assignment")
    return entries


def build_datalist(
    training: list[dict[str, Any]],
    test: list[dict[str, Any]] | None = None,
    validation: list[dict[str, Any]] | None = None,
    *,
    name: str,
    source_layout: str,
    dataset_dir: str | os.PathLike,
    modality: Mapping[str, str],
    labels: Mapping[str, str],
    description: str = "",
    folds: int = 5,
    seed: int = 0,
    fold_mode: str = "kfold",
    regions: Mapping[str, Sequence[int]] | None = None,
    label_map: Mapping[str, int] | None = None,
    center_map: str | os.PathLike | Mapping[str, str] | None = None,
    center_regex: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble a converter's datalist: centres, then folds over ``training``, plus the metadata (module doc)."""
    if not training:
        raise ValueError(f"no labelled cases found in {dataset_dir} for the {source_layout} layout.")
    for part in (training, test or [], validation or []):
        apply_centers(part, center_map, center_regex)
    out: dict[str, Any] = {
        "name": name,
        "description": description,
        "source_layout": source_layout,
        "dataset_dir": str(Path(dataset_dir).resolve()),
        "modality": dict(modality),
        "num_channels": len(modality),
        "labels": dict(labels),
    }
    if regions:
        out["regions"] = {k: [int(v) for v in vs] for k, vs in regions.items()}
    if label_map:
        out["label_map"] = {str(k): int(v) for k, v in label_map.items()}
    out.update(extra or {})
    out.update(num_folds=max(int(folds), 1) if fold_mode == "kfold" else None, fold_mode=fold_mode, seed=seed)
    out["training"] = make_folds(training, folds=folds, seed=seed, mode=fold_mode)
    if out["num_folds"] is None:
        out["num_folds"] = len({e["fold"] for e in out["training"]})
    if validation:
        out["validation"] = validation
    out["test"] = list(test or [])
    return out


def write_datalist(datalist: dict[str, Any], dst: str | os.PathLike, check: str = "quick") -> Path:
    """Check ``datalist`` (``off``/``quick``/``full``, against its ``dataset_dir``) and write it atomically to
    :func:`datalist_path` of ``dst``; nothing is written when a problem is found."""
    args: dict[str, Any] = {}
    if datalist.get("label_map"):
        args["label_map"] = datalist["label_map"]
    elif datalist.get("regions"):
        args["regions"] = datalist["regions"]
    check_datalist(datalist, datalist.get("dataset_dir"), preprocessing_args=args or None, level=check)
    return save_datalist(datalist, datalist_path(dst))


# the options datalist_writer adds, in the ``Args:`` section of every ``convert_<layout>`` (its ``--help``)
WRITER_ARGS = (
    "    dst: output folder for ``datalist.json`` (or the ``.json`` file itself); ``--dst`` = ``--src`` is what\n"
    "        the bundles expect by default.\n"
    "    check: file check before writing: ``off``, ``quick`` (headers) or ``full`` (voxels too).\n"
)


def datalist_writer(make_datalist: Callable[..., dict[str, Any]]) -> Callable[..., Path]:
    """``convert_<layout>(src, dst, <every option of make_datalist>, check="quick")`` for ``<layout>_datalist``: writes
    its datalist with :func:`write_datalist`. The options are declared once, on ``make_datalist``; the signature
    (what ``fire --help`` lists) is derived from it."""
    sig = inspect.signature(make_datalist)
    src, *options = sig.parameters.values()
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    signature = sig.replace(
        parameters=[
            src,
            inspect.Parameter("dst", kind, annotation="str | Path"),
            *options,
            inspect.Parameter("check", kind, default="quick", annotation="str"),
        ],
        return_annotation="Path",
    )

    def convert(*args: Any, **kwargs: Any) -> Path:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        dst, check = values.pop("dst"), values.pop("check")
        return write_datalist(make_datalist(**values), datalist_path(dst), check)

    layout = make_datalist.__name__.removesuffix("_datalist")
    doc = inspect.cleandoc(make_datalist.__doc__ or "Datalist.").rstrip()
    convert.__name__ = convert.__qualname__ = f"convert_{layout}"
    convert.__module__ = make_datalist.__module__
    convert.__signature__ = signature  # type: ignore[attr-defined]
    convert.__doc__ = doc + ("\n" if "\nArgs:\n" in doc else "\n\nArgs:\n") + WRITER_ARGS
    return convert


def report(path: str | os.PathLike) -> str:
    """What a converter wrote, for the command line: the file, the folder its paths are relative to, the counts."""
    from shared_components.data.datalist import describe, load_datalist

    data = load_datalist(path)
    where = data.get("dataset_dir")
    lines = [f"wrote {path}"]
    if where:
        lines.append(f"paths are relative to {where} (bundles: --dataset_dir {where})")
    extra = [f"{k}={data[k]}" for k in ("num_channels", "labels", "regions", "label_map") if data.get(k)]
    return "\n".join(lines + ["; ".join(extra), describe(data)])
