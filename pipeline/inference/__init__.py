"""Deployment-time inference without MONAI at run time: metadata-driven preprocessing and its inverse, sliding
windows, the predictor, and the batch segmentation job (importing MONAI would cost a batch job 6-8 s)."""

from __future__ import annotations

from pipeline.inference.cases import output_names, parse_shard, select_shard, shard_from_env, without_own_outputs
from pipeline.inference.job import segment
from pipeline.inference.outputs import OutputFolder, Provenance
from pipeline.inference.predictor import Predictor
from pipeline.inference.preprocess import Preprocessor, resample_axes
from pipeline.inference.report import CaseResult, JobReport
from pipeline.inference.windows import importance_map, sliding_window, window_starts

__all__ = ["CaseResult", "JobReport", "OutputFolder", "Predictor", "Preprocessor", "Provenance", "importance_map",
           "output_names", "parse_shard", "resample_axes", "segment", "select_shard", "shard_from_env",
           "sliding_window", "window_starts", "without_own_outputs"]
