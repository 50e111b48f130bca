"""Validation of a datalist before training: every problem found is reported at once (see ``errors.py``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from shared_components.data.datalist import load_datalist, resolve_entry, subject_of
from shared_components.data.errors import DataValidationError, Problem

LEVELS = ("off", "quick", "full")


def _files(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def check_datalist(
    datalist: str | dict[str, Any],
    base_dir: str | None = None,
    num_channels: int | None = None,
    num_classes: int | None = None,
    preprocessing_args: Mapping[str, Any] | None = None,
    level: str = "quick",
) -> int:
    """Check every case of ``datalist`` and raise :class:`DataValidationError` listing all problems.

    ``quick`` checks that files exist; ``full`` also reads them. Returns the number of cases checked.
    """
    if level not in LEVELS:
        raise ValueError(f"check level must be one of {LEVELS}, got {level!r}.")
    if level == "off":
        return 0
    data = load_datalist(datalist) if not isinstance(datalist, dict) else datalist
    problems: list[Problem] = []
    n = 0
    for section in ("training", "validation", "test"):
        for entry in data.get(section, []):
            n += 1
            e = resolve_entry(entry, base_dir)
            case = subject_of(e)
            for key in ("image", "label"):
                for f in _files(e.get(key, [])):
                    if not os.path.isfile(f):
                        problems.append(
                            Problem(
                                case, f, f"{key} file is missing", "fix the path in the datalist or set --dataset_dir"
                            )
                        )
    if problems:
        raise DataValidationError(problems, source=str(datalist) if isinstance(datalist, str) else "datalist")
    return n
