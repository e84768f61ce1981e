"""Inference: metadata-driven preprocessing, the predictor, and the batch segmentation job."""

from __future__ import annotations

from pipeline.inference.job import output_names, parse_shard, segment, select_shard, shard_from_env
from pipeline.inference.predictor import Predictor
from pipeline.inference.report import CaseResult, JobReport
from pipeline.inference.preprocessing import build_preprocessing, to_metatensor

__all__ = ["CaseResult", "JobReport", "Predictor", "build_preprocessing", "output_names", "parse_shard", "segment",
           "select_shard", "shard_from_env", "to_metatensor"]
