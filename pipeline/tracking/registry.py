"""The Model Registry entry of a finished training: an MLflow model version and the ``best`` alias.

A version is created for every finished training that exported a model (its source is the run's ``model``
folder, an MLflow pyfunc model, see :mod:`pipeline.export.mlflow_model`). The alias ``best`` moves to the new
version only when its validation key metric (``val/mean_dice`` in the bundles) is at least that of the version
that holds the alias now (a version without validation metrics takes it only from nobody), so
``models:/<name>@best`` always loads the best model registered so far; the metric values are version tags.

Example:
    >>> register_model(client, "unetpp_mri_segmentation", run_id, {"val/mean_dice": 0.83}, "val/mean_dice")
    ... # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import mlflow
from mlflow.entities.model_registry import ModelVersion

__all__ = ["BEST_ALIAS", "register_model"]

logger = logging.getLogger(__name__)

#: The alias that follows the best validation key metric.
BEST_ALIAS = "best"


def _ensure_registered(client: mlflow.MlflowClient, name: str, description: str) -> None:
    try:
        client.create_registered_model(name, description=description)
    except mlflow.exceptions.MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
            raise


def _current_best(client: mlflow.MlflowClient, name: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, BEST_ALIAS)
    except mlflow.exceptions.MlflowException:  # no version holds the alias yet
        return None


def _beats(score: float | None, holder: ModelVersion | None, key_metric: str) -> bool:
    if holder is None:
        return True
    if score is None or math.isnan(score):
        return False
    try:
        held = float(holder.tags.get(key_metric, "nan"))
    except ValueError:
        return True
    return math.isnan(held) or score >= held


def register_model(client: mlflow.MlflowClient, name: str, run_id: str, metrics: Mapping[str, float],
                   key_metric: str | None, description: str = "", artifact_path: str = "model") -> ModelVersion:
    """Register ``runs:/<run_id>/<artifact_path>`` as a new version of ``name`` and move ``best`` if it is better.

    Args:
        client: an MLflow client of the tracking/registry server.
        name: registered model name (the bundle's).
        run_id: the training run that logged the model.
        metrics: its best validation metrics (MLflow names), stored as version tags.
        key_metric: the metric that decides the ``best`` alias (higher is better); None (no validation ran):
            the version takes the alias only when no version holds it.
        description: registered model description, used when the name is new. Defaults to ``""``.
        artifact_path: the model folder inside the run's artifacts. Defaults to ``"model"``.

    Returns:
        The new model version.
    """
    _ensure_registered(client, name, description)
    summary = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
    version = client.create_model_version(name, f"runs:/{run_id}/{artifact_path}", run_id=run_id,
                                          tags={k: f"{v:.6g}" for k, v in metrics.items()},
                                          description=f"UNet++ from run {run_id}; best validation {summary}")
    holder = _current_best(client, name)
    score = metrics.get(key_metric) if key_metric else None
    if _beats(score, holder, key_metric or ""):
        client.set_registered_model_alias(name, BEST_ALIAS, version.version)
        logger.info("registered %s version %s with alias '%s' (%s)", name, version.version, BEST_ALIAS, summary)
    else:
        logger.info("registered %s version %s; alias '%s' stays on version %s (%s %s > %s)", name,
                    version.version, BEST_ALIAS, holder.version, key_metric, holder.tags.get(key_metric), score)
    return version
