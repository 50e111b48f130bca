"""Evaluation: per-case metrics, their statistics and reports, cross-validation, the benchmark, and plots."""

from typing import TYPE_CHECKING

from shared_components.lazy import lazy_exports

if TYPE_CHECKING:  # imported on first use, see shared_components.lazy
    from shared_components.evaluation.ensemble import (
        BundleEnsemble,
        FoldEnsemble,
        MirroredInferer,
        ensemble_members,
        mirrored,
        with_members,
    )
    from shared_components.evaluation.handlers import DetectionFROC, SegmentationMetrics, class_names
    from shared_components.evaluation.metrics import METRICS, case_metrics, spacing_from_affine
    from shared_components.evaluation.postprocessing import evaluation_postprocessing

__all__ = [
    "BundleEnsemble",
    "DetectionFROC",
    "FoldEnsemble",
    "METRICS",
    "MirroredInferer",
    "SegmentationMetrics",
    "case_metrics",
    "ensemble_members",
    "class_names",
    "evaluation_postprocessing",
    "mirrored",
    "spacing_from_affine",
    "with_members",
]

lazy_exports(__name__)
