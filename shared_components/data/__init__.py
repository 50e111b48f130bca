"""Datalists, converters from official dataset layouts, folds, validation and synthetic data."""

from shared_components.data.checks import check_datalist
from shared_components.data.datalist import load_datalist, save_datalist, split, subject_of
from shared_components.data.datasets import inference_items, make_dataset
from shared_components.data.errors import DataValidationError, Problem
from shared_components.data.folds import assign_folds, leave_one_center_out

__all__ = [
    "DataValidationError",
    "Problem",
    "assign_folds",
    "check_datalist",
    "inference_items",
    "leave_one_center_out",
    "load_datalist",
    "make_dataset",
    "save_datalist",
    "split",
    "subject_of",
]
