"""Deterministic cross-validation folds: grouped by subject, optionally stratified by centre."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any


def assign_folds(
    entries: Sequence[dict[str, Any]],
    n_folds: int = 5,
    seed: int = 0,
    group_key: str = "subject",
    stratify_key: str | None = "center",
) -> list[dict[str, Any]]:
    """Copies of ``entries`` with a ``fold`` in ``[0, n_folds)``.

    All entries sharing ``group_key`` land in the same fold (no subject leaks across folds). When the entries
    carry ``stratify_key`` (e.g. a centre), each stratum is spread evenly over the folds. Groups are shuffled with
    ``seed`` and dealt greedily to the currently smallest fold, so fold sizes differ by at most one group.
    ``n_folds=1`` puts every entry in fold 0 (all of them evaluation cases of ``--fold 0``).
    """
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}.")
    if n_folds == 1:
        return [{**e, "fold": 0} for e in entries]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(entries):
        groups[str(e.get(group_key) or f"__entry{i}")].append(i)
    if len(groups) < n_folds:
        raise ValueError(f"Cannot make {n_folds} folds from {len(groups)} subjects; lower --folds.")
    strata: dict[str, list[str]] = defaultdict(list)
    for g, idx in sorted(groups.items()):
        s = str(entries[idx[0]].get(stratify_key, "")) if stratify_key else ""
        strata[s].append(g)
    rng = random.Random(seed)
    sizes = [0] * n_folds
    fold_of: dict[str, int] = {}
    for s in sorted(strata):
        names = strata[s]
        rng.shuffle(names)
        counts = [0] * n_folds  # per-stratum balance first, then overall size, then a seeded tie-break
        order = list(range(n_folds))
        rng.shuffle(order)
        for g in names:
            f = min(order, key=lambda k: (counts[k], sizes[k]))
            fold_of[g] = f
            counts[f] += 1
            sizes[f] += len(groups[g])
    out = []
    for i, e in enumerate(entries):
        item = dict(e)
        item["fold"] = fold_of[str(e.get(group_key) or f"__entry{i}")]
        out.append(item)
    return out


def leave_one_center_out(entries: Sequence[dict[str, Any]], center_key: str = "center") -> list[dict[str, Any]]:
    """Copies of ``entries`` whose ``fold`` is the index of their centre (sorted), for leave-one-centre-out."""
    centers = sorted({str(e.get(center_key)) for e in entries if e.get(center_key) is not None})
    if len(centers) < 2:
        raise ValueError("Leave-one-centre-out needs entries from at least two centres (a 'center' per entry).")
    missing = [e for e in entries if e.get(center_key) is None]
    if missing:
        raise ValueError(f"{len(missing)} entries have no '{center_key}', e.g. {missing[0].get('image')}.")
    index = {c: i for i, c in enumerate(centers)}
    return [{**e, "fold": index[str(e[center_key])]} for e in entries]


FOLD_MODES = ("kfold", "loco")


def make_folds(
    entries: Sequence[dict[str, Any]],
    folds: int = 5,
    seed: int = 0,
    mode: str = "kfold",
    group_key: str = "subject",
    center_key: str = "center",
) -> list[dict[str, Any]]:
    """Folds for a converter: ``kfold`` (:func:`assign_folds`: grouped by subject, stratified by centre when entries
    have one; ``folds <= 1`` puts every entry in fold 0) or ``loco`` (:func:`leave_one_center_out`: fold = centre)."""
    if mode in ("loco", "leave_one_center_out", "center"):
        return leave_one_center_out(entries, center_key=center_key)
    if mode != "kfold":
        raise ValueError(f"fold mode must be one of {FOLD_MODES}, got {mode!r}.")
    if not entries:
        return []
    if folds <= 1:
        return [{**e, "fold": 0} for e in entries]
    stratify = center_key if any(e.get(center_key) is not None for e in entries) else None
    return assign_folds(entries, n_folds=folds, seed=seed, group_key=group_key, stratify_key=stratify)
