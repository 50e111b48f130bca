"""Folds: grouped by subject (no leakage), stable for a seed, stratified by centre, leave-one-centre-out."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from shared_components.data.folds import make_folds


def _entries(n_subjects=20, scans=(1, 2, 3), centres=("a", "b", "c")):
    """Subjects with 1-3 scans each (longitudinal data), spread over centres unevenly."""
    out = []
    for s in range(n_subjects):
        centre = centres[0] if s % 5 < 2 else centres[1 + s % 2]
        for k in range(scans[s % len(scans)]):
            out.append({"image": f"{centre}/sub{s:02d}_ses{k}.nii.gz", "subject": f"sub{s:02d}", "center": centre})
    return out


def _folds_of_subjects(entries):
    folds = defaultdict(set)
    for e in entries:
        folds[e["subject"]].add(e["fold"])
    return folds


def test_kfold_groups_subjects_and_is_stable():
    entries = _entries()
    a = make_folds(entries, folds=5, seed=0)
    assert all(len(f) == 1 for f in _folds_of_subjects(a).values())  # no subject in two folds
    assert a == make_folds(entries, folds=5, seed=0)  # stable across runs
    assert [e["fold"] for e in a] != [e["fold"] for e in make_folds(entries, folds=5, seed=1)]
    scans = Counter(e["fold"] for e in a)  # balanced in cases, up to one subject's scans (at most 3)
    assert sorted(scans) == [0, 1, 2, 3, 4] and max(scans.values()) - min(scans.values()) <= 3
    assert [e["image"] for e in a] == [e["image"] for e in entries]  # order and content kept


def test_kfold_stratifies_by_centre():
    entries = _entries(n_subjects=30)
    folded = make_folds(entries, folds=3, seed=0)
    subjects = {e["subject"]: (e["center"], e["fold"]) for e in folded}
    for centre in ("a", "b", "c"):
        per_fold = Counter(f for c, f in subjects.values() if c == centre)
        assert sorted(per_fold) == [0, 1, 2], centre  # every centre in every fold
        assert max(per_fold.values()) - min(per_fold.values()) <= 1, centre


def test_leave_one_centre_out():
    entries = _entries()
    folded = make_folds(entries, mode="loco")
    assert {e["center"]: e["fold"] for e in folded} == {"a": 0, "b": 1, "c": 2}
    with pytest.raises(ValueError, match="at least two centres"):
        make_folds([{**e, "center": "a"} for e in entries], mode="loco")
    with pytest.raises(ValueError, match="have no 'center'"):
        make_folds([*entries, {"image": "x.nii.gz", "subject": "x"}], mode="loco")


def test_fold_edge_cases():
    entries = _entries(n_subjects=3)
    assert {e["fold"] for e in make_folds(entries, folds=1)} == {0}
    with pytest.raises(ValueError, match="Cannot make 5 folds from 3 subjects; lower --folds"):
        make_folds(entries, folds=5)
    with pytest.raises(ValueError, match="fold mode"):
        make_folds(entries, mode="random")


def _datalist(folds: int = 3, per_fold: int = 2) -> dict:
    training = [{"image": f"c{f}_{i}.nii.gz", "label": f"l{f}_{i}.nii.gz", "fold": f} for f in range(folds)
                for i in range(per_fold)]  # fmt: skip
    return {"training": training, "validation": [{"image": "v.nii.gz", "label": "lv.nii.gz"}]}


def test_a_selection_fold_is_left_out_of_training_and_picks_the_checkpoint():
    from shared_components.data.datalist import split

    data = _datalist()

    def folds(part: str, selection: int | None) -> list:
        return [e.get("fold") for e in split(data, 0, part, "/d", selection)]

    assert folds("train", None) == [1, 1, 2, 2] and folds("select", None) == folds("val", None) == [0, 0, None]
    assert folds("train", 1) == [2, 2]  # neither the scored fold nor the selection fold
    assert folds("select", 1) == [1, 1, None] and folds("val", 1) == [0, 0, None]  # val: still the scored fold
    assert [e.get("fold") for e in split(data, 1, "select", "/d", 0)] == [0, 0, None]  # fold 0 may select
    for bad in (0, 7):
        with pytest.raises(ValueError, match=r"another fold of the datalist than fold=0 \(one of \[1, 2\]\)"):
            split(data, 0, "train", "/d", bad)


def test_selection_fold_next_is_the_following_fold_cyclically():
    """`selection_fold: next`, one setting for a whole cross-validation: fold k is chosen on fold k+1 (the last on
    the first), never trained on."""
    from shared_components.data.datalist import split

    data = _datalist()
    for fold, after in ((0, 1), (1, 2), (2, 0)):
        assert {e.get("fold") for e in split(data, fold, "select", "/d", "next")} == {after, None}
        assert {e["fold"] for e in split(data, fold, "train", "/d", "next")} == {0, 1, 2} - {fold, after}
    with pytest.raises(ValueError, match="'next' or null"):
        split(data, 0, "train", "/d", "previous")
