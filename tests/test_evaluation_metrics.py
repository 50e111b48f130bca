"""Per-case metrics against values computed by hand on small label maps, and against MONAI's metric classes."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDiceMetric, SurfaceDistanceMetric

from shared_components.evaluation.metrics import case_metrics, spacing_from_affine


def cube(lo: tuple[int, int, int], size: int = 4, shape=(10, 10, 10)) -> torch.Tensor:
    m = torch.zeros(shape, dtype=torch.bool)
    m[lo[0] : lo[0] + size, lo[1] : lo[1] + size, lo[2] : lo[2] + size] = True
    return m


# Reference: a 4x4x4 cube; prediction: the same cube shifted by one voxel along axis 0.
# Overlap 3x4x4 = 48 voxels -> Dice 2*48/128 = 0.75. Each cube has 56 boundary voxels (64 minus its 2x2x2 core).
# Prediction -> reference: the 16 voxels of the face that left the reference are one x-step away; the 4 core
# voxels of the face that entered it are one step (the smallest spacing) from the reference boundary; the other
# 36 boundary voxels lie on the reference boundary (0). Reference -> prediction is the mirror image.
REF, PRED = cube((2, 2, 2)), cube((3, 2, 2))


def test_shifted_cube_isotropic():
    m = case_metrics(PRED[None], REF[None], (1.0, 1.0, 1.0), tolerance_mm=1.0)
    assert m["dice"] == pytest.approx([0.75])
    assert m["hd95"] == pytest.approx([1.0])  # 95th percentile of 36 zeros and 20 ones
    assert m["msd"] == pytest.approx([40 / 112])  # 2 x 20 unit distances over 112 boundary voxels
    assert m["nsd"] == pytest.approx([1.0])  # every boundary voxel within 1 mm
    assert case_metrics(PRED[None], REF[None], (1.0, 1.0, 1.0), tolerance_mm=0.5)["nsd"] == pytest.approx([72 / 112])


def test_shifted_cube_anisotropic_spacing():
    # 2 mm along the shift axis: the 16 face voxels are 2 mm away, the 4 core voxels 1 mm (a 1 mm in-plane step)
    m = case_metrics(PRED[None], REF[None], (2.0, 1.0, 1.0), tolerance_mm=1.5)
    assert m["dice"] == pytest.approx([0.75])  # overlap does not depend on spacing
    assert m["hd95"] == pytest.approx([2.0])
    assert m["msd"] == pytest.approx([2 * (16 * 2.0 + 4 * 1.0) / 112])
    assert m["nsd"] == pytest.approx([2 * (36 + 4) / 112])


def test_empty_structures_follow_the_brats_convention():
    empty = torch.zeros_like(REF)
    spacing = (2.0, 1.0, 1.0)
    diagonal = math.sqrt(20**2 + 10**2 + 10**2)  # 10 voxels per axis
    both = case_metrics(empty[None], empty[None], spacing, 1.0)
    assert both == {"dice": [1.0], "hd95": [0.0], "msd": [0.0], "nsd": [1.0]}
    for pred, ref in ((empty, REF), (REF, empty)):  # missed structure, and a false positive on an empty reference
        m = case_metrics(pred[None], ref[None], spacing, 1.0)
        assert m["dice"] == [0.0] and m["nsd"] == [0.0]
        assert m["hd95"] == pytest.approx([diagonal]) and m["msd"] == pytest.approx([diagonal])


def test_classes_are_independent_and_subset_of_metrics():
    pred = torch.stack([PRED, REF])  # class 1 shifted, class 2 perfect
    ref = torch.stack([REF, REF])
    m = case_metrics(pred, ref, (1.0, 1.0, 1.0), [1.0, 0.1])
    assert m["dice"] == pytest.approx([0.75, 1.0])
    assert m["hd95"] == pytest.approx([1.0, 0.0]) and m["msd"] == pytest.approx([40 / 112, 0.0])
    assert m["nsd"] == pytest.approx([1.0, 1.0])
    assert set(case_metrics(pred, ref, (1, 1, 1), 1.0, metrics=("dice",))) == {"dice"}
    with pytest.raises(ValueError, match="Unknown metric"):
        case_metrics(pred, ref, (1, 1, 1), 1.0, metrics=("jaccard",))
    with pytest.raises(ValueError, match="spacing"):
        case_metrics(pred, ref, (1, 1), 1.0)
    with pytest.raises(ValueError, match="shape"):
        case_metrics(pred, ref[:1], (1, 1, 1), 1.0)


def test_same_values_as_monai_metric_classes():
    """The shared-distance implementation reduces exactly like HausdorffDistanceMetric(percentile=95),
    SurfaceDistanceMetric(symmetric=True) and SurfaceDiceMetric, on irregular shapes with anisotropic spacing."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)

    def blob() -> torch.Tensor:
        return torch.as_tensor(gaussian_filter(rng.random((24, 30, 20)), 2.0) > 0.52)

    pred, ref = torch.stack([blob(), blob()]), torch.stack([blob(), blob()])
    assert all(bool(x.any()) for x in (*pred, *ref))
    spacing, tol = (1.5, 0.8, 2.5), [2.0, 1.0]
    mine = case_metrics(pred, ref, spacing, tol)
    p, r = pred[None].float(), ref[None].float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = {
            "dice": DiceMetric(include_background=True)(p, r),
            "hd95": HausdorffDistanceMetric(include_background=True, percentile=95)(p, r, spacing=spacing),
            "msd": SurfaceDistanceMetric(include_background=True, symmetric=True)(p, r, spacing=spacing),
            "nsd": SurfaceDiceMetric(tol, include_background=True)(p, r, spacing=spacing),
        }
    for name, value in expected.items():
        assert mine[name] == pytest.approx(value[0].tolist(), rel=1e-5), name


def test_spacing_from_affine_handles_rotation_and_axis_order():
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    assert spacing_from_affine(affine) == pytest.approx((0.8, 0.8, 3.0))
    c, s = math.cos(0.3), math.sin(0.3)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    permuted = np.eye(4)
    permuted[:3, :3] = rot @ np.diag([2.0, 0.5, 1.0])[:, [2, 0, 1]]  # axes stored as (z, x, y)
    assert spacing_from_affine(torch.as_tensor(permuted)) == pytest.approx((1.0, 2.0, 0.5))
