"""Datalists (MSD, nnU-Net v2 raw, paired folders, CSV), validation, summaries, K-fold splits, phantoms, the
data workers' default."""

from __future__ import annotations

from pipeline.data.datalist import (
    FORMATS,
    Datalist,
    case_id,
    load_csv,
    load_datalist,
    load_msd,
    load_nnunet,
    load_paired,
)
from pipeline.data.discover import InputCase, find_cases, find_images
from pipeline.data.folds import fold_datalist, load_splits, make_splits, save_splits, split_items
from pipeline.data.loading import default_num_workers
from pipeline.data.phantoms import LABELS, MODALITIES, make_phantom
from pipeline.data.summary import DatasetSummary, summarize_datalist, summarize_reports
from pipeline.data.synthetic import write_synthetic_dataset
from pipeline.data.validation import (
    CaseReport,
    DatasetValidationError,
    inspect_case,
    inspect_datalist,
    validate_datalist,
)

__all__ = [
    "FORMATS", "LABELS", "MODALITIES", "CaseReport", "Datalist", "DatasetSummary", "DatasetValidationError",
    "InputCase", "case_id", "default_num_workers", "find_cases", "find_images", "fold_datalist", "inspect_case",
    "inspect_datalist", "load_csv", "load_datalist", "load_msd", "load_nnunet", "load_paired", "load_splits", "make_phantom", "make_splits", "save_splits", "split_items",
    "summarize_datalist", "summarize_reports", "validate_datalist", "write_synthetic_dataset",
]
