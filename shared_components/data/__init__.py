"""Datalists, converters from official dataset layouts, folds, validation, fingerprints and synthetic data."""

from typing import TYPE_CHECKING

from shared_components.lazy import lazy_exports

if TYPE_CHECKING:  # imported on first use, see shared_components.lazy
    from shared_components.data.checks import check_datalist, check_datalist_file
    from shared_components.data.converters.abdomenct1k import convert_abdomenct1k
    from shared_components.data.converters.brats import convert_brats
    from shared_components.data.converters.csv_table import convert_table
    from shared_components.data.converters.folders import convert_folder
    from shared_components.data.converters.lits import convert_lits
    from shared_components.data.converters.msd import convert_msd
    from shared_components.data.datalist import allows_empty_labels, load_datalist, save_datalist, split, subject_of
    from shared_components.data.datasets import CaseLoadError, inference_items, make_dataset
    from shared_components.data.errors import DataValidationError, Problem
    from shared_components.data.fingerprint import fingerprint, recommended
    from shared_components.data.folds import assign_folds, leave_one_center_out, make_folds
    from shared_components.data.seeding import SeededDataset, SeededSampler

__all__ = [
    "allows_empty_labels",
    "CaseLoadError",
    "DataValidationError",
    "Problem",
    "SeededDataset",
    "SeededSampler",
    "assign_folds",
    "check_datalist",
    "check_datalist_file",
    "convert_abdomenct1k",
    "convert_brats",
    "convert_folder",
    "convert_lits",
    "convert_msd",
    "convert_table",
    "fingerprint",
    "inference_items",
    "leave_one_center_out",
    "load_datalist",
    "make_dataset",
    "make_folds",
    "recommended",
    "save_datalist",
    "split",
    "subject_of",
]

lazy_exports(__name__)
