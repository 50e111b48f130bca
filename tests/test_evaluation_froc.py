"""The aneurysm detection evaluation (``shared_components.evaluation.froc``) against hand-computed cases: the ADAM hit
rule (a hit at exactly the radius, treated aneurysms ignored), FROC and CPM with MONAI's functions, bootstrap CIs,
sensitivity by size, candidates and their coordinates, the files; plus volumetric similarity, the segmentation
handler's ignored label, and the leaderboard's detection columns."""

from __future__ import annotations

import json
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from shared_components.evaluation import froc
from shared_components.evaluation.metrics import case_metrics, volumetric_similarity

EYE = np.eye(4)


def aneurysm(centre, radius, treated=False):
    return {"center": list(centre), "center_mm": list(centre), "radius_mm": radius, "treated": treated}


def cand(centre, score):
    return froc.Candidate(np.asarray(centre, dtype=float), score)


def test_hit_rule_at_exactly_the_radius_and_beyond():
    a = [aneurysm((0, 0, 0), 2.0)]
    on_radius = froc.match_case("c", [cand((2.0, 0, 0), 0.7)], a)
    assert on_radius.outcome == ["tp"] and on_radius.target_scores.tolist() == [0.7]
    beyond = froc.match_case("c", [cand((2.0001, 0, 0), 0.7)], a)
    assert beyond.outcome == ["fp"] and beyond.target_scores.tolist() == [0.0]
    # two hits on one aneurysm: its score is the best, neither candidate is a false positive
    both = froc.match_case("c", [cand((1, 0, 0), 0.4), cand((0, 1, 0), 0.9)], a)
    assert both.outcome == ["tp", "tp"] and both.target_scores.tolist() == [0.9] and len(both.fp_scores) == 0


def test_treated_aneurysms_are_ignored():
    a = [aneurysm((0, 0, 0), 2.0), aneurysm((10, 0, 0), 3.0, treated=True)]
    r = froc.match_case("c", [cand((11, 0, 0), 0.8), cand((30, 0, 0), 0.5)], a)
    assert r.outcome == ["ignored", "fp"]  # within the treated aneurysm's radius: neither hit nor false positive
    assert len(r.target_scores) == 1 and r.target_scores[0] == 0  # the treated one is no target
    # a candidate on a voxel of the ignored label (raw 2) is ignored too, even outside every radius
    label = np.zeros((40, 10, 10), np.uint8)
    label[20, 5, 5] = 2
    rule = froc.IgnoredLabel(label, EYE, 2)
    r = froc.match_case("c", [cand((20, 5, 5), 0.6), cand((25, 5, 5), 0.6)], a, rule)
    assert r.outcome == ["ignored", "fp"]
    summary = froc.froc([r], n_bootstrap=0)
    assert summary["aneurysms"] == 1 and summary["treated_aneurysms"] == 1 and summary["ignored_candidates"] == 1
    assert summary["all_candidates"]["false_positives_per_scan"] == 1.0


def test_no_candidate():
    r = froc.match_case("c", [], [aneurysm((0, 0, 0), 2.0)])
    s = froc.froc([r, r], n_bootstrap=50)
    assert s["cpm"] == 0.0 and all(x["sensitivity"] == 0.0 for x in s["sensitivity"])
    assert s["all_candidates"] == {"sensitivity": 0.0, "mean_case_sensitivity": 0.0, "false_positives_per_scan": 0.0}


def test_all_false_positives():
    a = [aneurysm((0, 0, 0), 2.0)]
    scans = [froc.match_case(str(i), [cand((50, 0, 0), s) for s in (0.9, 0.5, 0.2)], a) for i in range(2)]
    s = froc.froc(scans, n_bootstrap=50)
    assert s["cpm"] == 0.0 and s["cpm_ci_high"] == 0.0
    assert s["all_candidates"]["false_positives_per_scan"] == 3.0 and s["all_candidates"]["sensitivity"] == 0.0


def test_froc_and_cpm_hand_computed():
    """Scan A: its aneurysm hit at 0.9, a false positive at 0.8; scan B: its aneurysm hit at 0.3, false positives at
    0.6 and 0.5. Operating points (FP/scan, sensitivity): 0.9 (0, 1/2), 0.8 (1/2, 1/2), 0.6 (1, 1/2),
    0.5 (3/2, 1/2), 0.3 (3/2, 1). Linear interpolation gives 1/2 at 1/8..1 FP/scan and 1 at 2, 4, 8 (past the last
    point): CPM = (4 x 1/2 + 3 x 1) / 7 = 5/7."""
    a = [aneurysm((0, 0, 0), 2.0)]
    scan_a = froc.match_case("a", [cand((0, 0, 1), 0.9), cand((9, 9, 9), 0.8)], a)
    scan_b = froc.match_case("b", [cand((1, 0, 0), 0.3), cand((9, 9, 9), 0.6), cand((-9, 9, 9), 0.5)], a)
    s = froc.froc([scan_a, scan_b], n_bootstrap=200, seed=0)
    assert [x["sensitivity"] for x in s["sensitivity"]] == pytest.approx([0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0])
    assert s["cpm"] == pytest.approx(5 / 7)
    assert froc.sensitivity_at(s, 1.0) == pytest.approx(0.5)
    curve = sorted(zip(s["curve"]["fp_per_scan"], s["curve"]["sensitivity"], strict=True))
    assert (1.5, 1.0) in curve and (0.0, 0.5) in curve  # every candidate's score is an operating point
    assert s["all_candidates"] == {"sensitivity": 1.0, "mean_case_sensitivity": 1.0, "false_positives_per_scan": 1.5}
    assert 0.0 <= s["cpm_ci_low"] <= s["cpm"] <= s["cpm_ci_high"] <= 1.0
    assert (
        s["n_bootstrap"] == 200
        and froc.froc([scan_a, scan_b], n_bootstrap=200, seed=0)["cpm_ci_low"] == s["cpm_ci_low"]
    )  # seeded
    assert s["threshold_at_1fp"] == 0.6  # lowest score with at most 1 FP/scan


def test_sensitivity_by_size():
    a = [aneurysm((0, 0, 0), 1.0), aneurysm((20, 0, 0), 2.5), aneurysm((40, 0, 0), 4.5)]  # 2, 5, 9 mm
    fps = [cand((60, 0, 0), 0.8), cand((80, 0, 0), 0.85)]
    r = froc.match_case("c", [cand((0, 0, 0), 0.9), cand((40, 0, 0), 0.2), *fps], a)
    rows = {b["diameter"]: b for b in froc.froc([r], n_bootstrap=0)["by_size"]}
    assert list(rows) == ["<3 mm", "3-7 mm", ">=7 mm"]
    assert [rows[k]["sensitivity"] for k in rows] == [1.0, 0.0, 1.0]
    assert rows[">=7 mm"]["sensitivity_at_1fp"] == 0.0  # found only below the 1 FP/scan threshold (0.85)
    assert rows["<3 mm"]["sensitivity_at_1fp"] == 1.0
    assert 0.0 <= rows["<3 mm"]["ci_low"] < 1.0 == rows["<3 mm"]["sensitivity"] <= rows["<3 mm"]["ci_high"] + 1e-9


def test_candidates_from_probability_and_boxes():
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 1.0]
    prob = np.zeros((20, 20, 10), np.float32)
    prob[2:5, 2:5, 2:5] = 0.9
    prob[3, 3, 3] = 0.95
    prob[10:12, 14:16, 6] = 0.6
    prob[18, 18, 9] = 0.4  # below the threshold
    c = froc.candidates_from_probability(prob, affine, threshold=0.5)
    assert [round(x.score, 3) for x in c] == [0.95, 0.6] and [x.voxels for x in c] == [27, 4]
    assert np.allclose(c[0].centre_mm, [-10 + 1.5, 5 + 1.5, 1 + 6.0])  # voxel (3, 3, 3)
    assert np.allclose(c[1].centre_mm, [-10 + 5.25, 5 + 7.25, 1 + 12.0])  # voxel (10.5, 14.5, 6)
    boxes = froc.candidates_from_boxes(np.array([[2, 2, 2, 5, 5, 5]]), np.array([0.7]), affine)
    assert np.allclose(boxes[0].centre_mm, c[0].centre_mm) and boxes[0].score == pytest.approx(0.7)


def test_write_froc_files(tmp_path: Path):
    a = [aneurysm((0, 0, 0), 2.0)]
    scans = [
        froc.match_case("a", [cand((0, 0, 1), 0.9), cand((9, 9, 9), 0.8)], a, affine=EYE, fold="0"),
        froc.match_case("b", [], a, affine=EYE, fold="0"),
    ]
    summary = froc.write_froc(tmp_path, scans, {"task": "test"}, n_bootstrap=20)
    for name in (froc.SUMMARY, froc.CURVE, froc.PER_CASE, froc.CANDIDATES, froc.ANEURYSMS, froc.BY_SIZE, froc.PLOT):
        assert (tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0, name
    written = json.loads((tmp_path / froc.SUMMARY).read_text())
    assert written["task"] == "test" and written["cpm"] == pytest.approx(summary["cpm"])
    lines = (tmp_path / froc.CANDIDATES).read_text().splitlines()
    assert len(lines) == 3 and "0.0 0.0 1.0" in lines[1]  # the candidate's voxel in the reference grid
    assert "FROC over 2 scans" in froc.summary_line(summary)


def test_volumetric_similarity():
    p = torch.zeros(3, 6, 6, 6, dtype=torch.bool)
    r = torch.zeros_like(p)
    p[0, :2, :2, :2] = True  # 8 voxels vs 12
    r[0, :3, :2, :2] = True
    r[1, :1, :1, :1] = True  # prediction empty: 0; channel 2 both empty: 1
    assert volumetric_similarity(p, r) == pytest.approx([0.8, 0.0, 1.0])
    values = case_metrics(p, r, (1.0, 1.0, 1.0), 1.0, ("dice", "vs"))
    assert values["vs"] == pytest.approx([0.8, 0.0, 1.0]) and values["dice"][0] == pytest.approx(0.8)


def test_segmentation_handler_ignores_the_treated_label(tmp_path: Path):
    """With a detection datalist, voxels of raw label 2 count neither way (Dice 1 for a prediction covering the
    treated aneurysm too), volumetric similarity is added and the FROC files are written next to the tables."""
    from shared_components.evaluation.handlers import SegmentationMetrics

    raw = np.zeros((16, 16, 16), np.uint8)
    raw[2:6, 2:6, 2:6] = 1
    raw[10:14, 10:14, 10:14] = 2
    affine = np.diag([0.5, 0.5, 0.5, 1.0])
    nib.save(nib.Nifti1Image(raw, affine), tmp_path / "aneurysms.nii.gz")
    meta = {"filename_or_obj": str(tmp_path / "aneurysms.nii.gz"), "affine": torch.as_tensor(affine)}

    def onehot(mask):
        return MetaTensor(torch.stack([~mask, mask]).float(), meta=dict(meta))

    out = {"pred": onehot(torch.as_tensor(raw >= 1)), "label": onehot(torch.as_tensor(raw == 1))}
    centre = (affine[:3, :3] @ [3.5, 3.5, 3.5]).tolist()
    datalist = {
        "evaluation": {"froc": True, "ignore_label": 2, "metrics": ["vs"]},
        "aneurysms": {"c1": [{"center": [3.5] * 3, "center_mm": centre, "radius_mm": 1.8, "treated": False}]},
    }
    plain = SegmentationMetrics(str(tmp_path / "plain"), 1.0, ["aneurysm"])
    plain._case(out, {"subject": "c1"}, 0.0, 0.0)
    assert [r["value"] for r in plain.rows if r["metric"] == "dice"][0] == pytest.approx(2 / 3)  # 2*64 / (128+64)
    h = SegmentationMetrics(str(tmp_path / "eval"), 1.0, ["aneurysm"], datalist=datalist, n_bootstrap=10)
    assert h.metrics[-1] == "vs"
    candidates = froc.candidates_from_probability((raw >= 1).astype(np.float32), affine)
    h._case(out, {"subject": "c1", "fold": "0"}, 0.0, 0.0, candidates)
    values = {r["metric"]: r["value"] for r in h.rows}
    assert values["dice"] == pytest.approx(1.0) and values["vs"] == pytest.approx(1.0)
    engine = types.SimpleNamespace(state=types.SimpleNamespace(metrics={}))
    h._epoch_completed(engine)
    summary = json.loads((tmp_path / "eval" / froc.SUMMARY).read_text())
    assert summary["aneurysms"] == 1 and summary["ignored_candidates"] == 1  # the component on the treated one
    assert (
        summary["all_candidates"]["sensitivity"] == 1.0 and summary["all_candidates"]["false_positives_per_scan"] == 0
    )
    assert engine.state.metrics["froc_cpm"] == pytest.approx(1.0)


def test_oracle_candidates_hit_every_aneurysm_through_the_transforms(tmp_path: Path):
    """The reference itself, resampled and reoriented by the bundles' preprocessing, as probabilities (segmentation)
    and as boxes (detector), hits every untreated aneurysm of the datalist and nothing else: world coordinates agree
    between the resampled grid and the original one."""
    from shared_components.data.converters.adam import convert_adam
    from shared_components.data.datalist import split
    from shared_components.data.synthetic.mra import write_adam
    from shared_components.transforms.boxes import detection_transforms
    from shared_components.transforms.chains import val_transforms

    src = write_adam(tmp_path / "ADAM", n=2, seed=4, shape=(64, 64, 48))
    data = json.loads(Path(convert_adam(src, src, folds=1)).read_text())
    args = {"pixdim": [0.8, 0.8, 1.2], "orientation": "RAS", "intensity": "zscore", "label_map": {1: 1}}
    seg, det = val_transforms(**args), detection_transforms("val", preprocessing_args=args)
    targets = froc.detection_targets(data)
    for entry in split(data, None, "all", str(src)):
        item = seg(entry)
        prob = item["label"][0].numpy().astype(np.float32)
        cands = froc.candidates_from_probability(prob, item["image"].affine.numpy())
        r = froc.match_case(entry["subject"], cands, targets[entry["subject"]])
        assert r.outcome and set(r.outcome) == {"tp"} and (r.target_scores == 1).all(), entry["subject"]
        boxed = det(entry)
        cands = froc.candidates_from_boxes(
            boxed["box"].numpy(), np.ones(len(boxed["box"])), boxed["image"].affine.numpy()
        )
        r = froc.match_case(entry["subject"], cands, targets[entry["subject"]])
        assert set(r.outcome) == {"tp"} and (r.target_scores == 1).all(), entry["subject"]


def test_leaderboard_detection_columns(tmp_path: Path):
    import pandas as pd

    from shared_components.experiments.leaderboard import _detection, _detection_lines

    a = [aneurysm((0, 0, 0), 2.0)]
    froc.write_froc(tmp_path / "f0", [froc.match_case("a", [cand((0, 0, 0), 0.9)], a)], n_bootstrap=0)
    row = _detection([tmp_path / "f0", tmp_path / "missing"])
    assert row["froc_cpm"] == pytest.approx(1.0) and row["froc_sensitivity_1fp"] == pytest.approx(1.0)
    assert _detection([tmp_path / "missing"]) == {}
    lines = _detection_lines(pd.DataFrame([{"model": "unet", **row}]))
    assert lines[1] == "## Detection" and lines[-1].startswith("| unet | 1.000")
    assert _detection_lines(pd.DataFrame([{"model": "unet"}])) == []
