"""MLflow helpers that MONAI's ``--tracking mlflow`` lacks: failure-safe handlers, tags and flattened params,
source and dataset lineage, QC images, the best checkpoint, the exported model as a logged pyfunc model, a Model
Registry entry, and the UI address in Model training mode."""

from __future__ import annotations

from pipeline.tracking.lineage import dataset_identity, log_training_dataset, source_tags
from pipeline.tracking.logged_model import log_pyfunc_model
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
from pipeline.tracking.ui import LIGHT_SERVER_ENV, ui_address, ui_command

__all__ = [
    "BEST_ALIAS", "LIGHT_SERVER_ENV", "RUN_FILE", "SafeMLFlowHandler", "TrainingRecorder", "ValidationTracker",
    "config_params", "configure_http_limits", "datalist_hash", "dataset_identity", "experiment_name",
    "flatten_config", "git_commit", "log_pyfunc_model", "log_training_dataset", "metric_name", "register_model",
    "render_qc", "run_name", "run_tags", "save_run", "saved_run", "source_tags", "tracking_failed", "tracking_uri",
    "ui_address", "ui_command",
]
