"""Helpers that bundle configs call: checked fold datalists, per-class metrics and reports, the latest
checkpoint and resuming, a time budget, a progress bar, distributed set-up, training precision and memory
layout, gradient clipping and skipping of non-finite steps, the model card beside the best model, and the
deployment level chosen from validation."""

from __future__ import annotations

from pipeline.training.budget import TimeBudget, process_start_time
from pipeline.training.card import ModelCardWriter, dataset_record
from pipeline.training.checkpoint import LATEST, LatestCheckpoint, resume
from pipeline.training.datalist import inference_items, prepare_fold
from pipeline.training.distributed import init_distributed, is_main_process, rank_and_world, rank_zero_handlers
from pipeline.training.guard import GradientGuard
from pipeline.training.handlers import handler_ref
from pipeline.training.levels import LevelSelection, choose_level, score_levels
from pipeline.training.metrics import MetricsReport, dice_scores, per_class_metrics
from pipeline.training.precision import AutocastInferer, prepare_network, training_autocast, training_precision
from pipeline.training.progress import ProgressBar

__all__ = [
    "LATEST",
    "AutocastInferer",
    "GradientGuard",
    "LatestCheckpoint",
    "LevelSelection",
    "MetricsReport",
    "ModelCardWriter",
    "ProgressBar",
    "TimeBudget",
    "choose_level",
    "dataset_record",
    "dice_scores",
    "handler_ref",
    "inference_items",
    "init_distributed",
    "is_main_process",
    "per_class_metrics",
    "prepare_fold",
    "prepare_network",
    "process_start_time",
    "rank_and_world",
    "rank_zero_handlers",
    "resume",
    "score_levels",
    "training_autocast",
    "training_precision",
]
