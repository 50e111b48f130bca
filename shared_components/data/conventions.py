"""Brain-tumour label conventions and their overlapping evaluation regions (tumour core TC, whole tumour WT,
enhancing tumour ET) as lists of raw label values, for ``preprocessing_args.regions``.

| convention | labels | TC | WT | ET |
|---|---|---|---|---|
| ``brats2015`` (BraTS 2013-2015) | 1 necrosis, 2 oedema, 3 non-enhancing, 4 enhancing | 1,3,4 | 1,2,3,4 | 4 |
| ``brats2021`` (BraTS 2017-2021) | 1 necrotic/non-enhancing core, 2 oedema, 4 enhancing | 1,3,4 | 1,2,3,4 | 4 |
| ``brats2023`` (BraTS 2023+) | 1 necrotic core, 2 oedema, 3 enhancing | 1,3 | 1,2,3 | 3 |
| ``msd`` (MSD Task01) | 1 oedema, 2 non-enhancing tumour, 3 enhancing tumour | 2,3 | 1,2,3 | 3 |

(The ``brats2021`` lists keep 3, which that convention never uses, so one region set serves 2013-2021 data.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

CONVENTIONS: dict[str, dict] = {
    "brats2015": {
        "labels": {
            "0": "background",
            "1": "necrosis",
            "2": "edema",
            "3": "non-enhancing tumor",
            "4": "enhancing tumor",
        },
        "regions": {"TC": [1, 3, 4], "WT": [1, 2, 3, 4], "ET": [4]},
    },
    "brats2021": {
        "labels": {"0": "background", "1": "necrotic tumor core", "2": "peritumoral edema", "4": "enhancing tumor"},
        "regions": {"TC": [1, 3, 4], "WT": [1, 2, 3, 4], "ET": [4]},
    },
    "brats2023": {
        "labels": {"0": "background", "1": "necrotic tumor core", "2": "peritumoral edema", "3": "enhancing tumor"},
        "regions": {"TC": [1, 3], "WT": [1, 2, 3], "ET": [3]},
    },
    "msd": {
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
        "regions": {"TC": [2, 3], "WT": [1, 2, 3], "ET": [3]},
    },
}
ALIASES = {
    "brats2013": "brats2015",
    "brats2014": "brats2015",
    "brats2017": "brats2021",
    "brats2018": "brats2021",
    "brats2019": "brats2021",
    "brats2020": "brats2021",
    "brats2024": "brats2023",
    "msd_task01": "msd",
    "task01": "msd",
}


def convention(name: str) -> dict:
    """``{"labels": ..., "regions": ...}`` of a named convention (aliases: ``brats2013``..``brats2024``)."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in CONVENTIONS:
        raise ValueError(f"unknown label convention {name!r}: use one of {sorted(CONVENTIONS)} or {sorted(ALIASES)}.")
    return CONVENTIONS[key]


def regions_of(spec: str | Mapping[str, Sequence[int]] | None) -> dict[str, list[int]] | None:
    """Regions from a convention name or an explicit ``{"TC": [...], ...}`` mapping."""
    if spec is None:
        return None
    if isinstance(spec, str):
        return {k: list(v) for k, v in convention(spec)["regions"].items()}
    return {str(k): [int(v) for v in vs] for k, vs in spec.items()}
