"""Deployment-time inference without MONAI: the model card's preprocessing and its inverse, sliding windows, the
predictor, and the batch segmentation job (a deployed batch job does not pay MONAI's import time)."""

from __future__ import annotations

from pipeline.inference.cases import output_names, parse_shard, select_shard, shard_from_env, without_own_outputs
from pipeline.inference.extras import Extras
from pipeline.inference.job import segment
from pipeline.inference.outputs import OutputFolder, Provenance
from pipeline.inference.predictor import Predictor
from pipeline.inference.preprocess import Preprocessor
from pipeline.inference.report import CaseResult, JobReport
from pipeline.inference.windows import importance_map, sliding_window, window_starts

__all__ = ["CaseResult", "Extras", "JobReport", "OutputFolder", "Predictor", "Preprocessor", "Provenance", "importance_map",
           "output_names", "parse_shard", "segment", "select_shard", "shard_from_env", "sliding_window",
           "window_starts", "without_own_outputs"]
