"""Helpers that bundle configs call: checked fold datalists, per-class metrics and reports, the latest
checkpoint and resuming, a time budget, a progress bar, distributed set-up, and training precision and memory
layout."""

from __future__ import annotations

from pipeline.training.budget import TimeBudget, process_start_time
from pipeline.training.checkpoint import LATEST, LatestCheckpoint, resume
from pipeline.training.datalist import inference_items, prepare_fold
from pipeline.training.distributed import init_distributed, is_main_process, rank_and_world, rank_zero_handlers
from pipeline.training.metrics import MetricsReport, per_class_metrics
from pipeline.training.precision import AutocastInferer, prepare_network, training_autocast
from pipeline.training.progress import ProgressBar

__all__ = [
    "LATEST", "AutocastInferer", "LatestCheckpoint", "MetricsReport", "ProgressBar", "TimeBudget",
    "inference_items", "init_distributed", "is_main_process", "per_class_metrics",
    "prepare_fold", "prepare_network", "process_start_time", "rank_and_world", "rank_zero_handlers", "resume",
    "training_autocast",
]
