"""MLflow helpers that MONAI's ``--tracking mlflow`` lacks: failure-safe handlers, tags and flattened params,
QC images, the best checkpoint, the exported TorchScript model and a Model Registry entry."""

from __future__ import annotations

from pipeline.tracking.params import datalist_hash, git_commit, run_tags
from pipeline.tracking.qc import ValidationTracker, render_qc
from pipeline.tracking.recorder import TrainingRecorder
from pipeline.tracking.registry import BEST_ALIAS, register_model
from pipeline.tracking.resolved import config_params, flatten_config
from pipeline.tracking.safe_handler import SafeMLFlowHandler, metric_name, tracking_failed
from pipeline.tracking.settings import (
    RUN_FILE,
    configure_http_limits,
    experiment_name,
    run_name,
    save_run,
    saved_run,
    tracking_uri,
)

__all__ = [
    "BEST_ALIAS", "RUN_FILE", "SafeMLFlowHandler", "TrainingRecorder", "ValidationTracker", "config_params",
    "configure_http_limits", "datalist_hash", "experiment_name", "flatten_config", "git_commit", "metric_name",
    "register_model", "render_qc", "run_name", "run_tags", "save_run", "saved_run", "tracking_failed", "tracking_uri",
]
