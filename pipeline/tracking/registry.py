"""The Model Registry entry of a finished training: an MLflow model version and the ``best`` alias.

A version is created for every finished training that exported a model: its source is the run's logged model
(``models:/<model_id>``, an MLflow pyfunc, see :mod:`pipeline.tracking.logged_model`), so the version, the run's
"Logged models" and the experiment's Models tab show the same model. The alias ``best`` moves to the new
version only when its validation key metric (``val/mean_dice`` in the bundles) is at least that of the version
that holds the alias now (a version without validation metrics takes it only from nobody), so
``models:/<name>@best`` always loads the best model registered so far; the metric values are version tags.

Example:
    >>> register_model(client, "unetpp_mri_segmentation", info.model_id, {"val/mean_dice": 0.83},
    ...                "val/mean_dice")                                                  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

from pipeline.tracking.logged_model import process_tracking_uri

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


def _link_version(client: mlflow.MlflowClient, model_id: str, version: ModelVersion) -> None:
    """Record the version on the logged model (its page lists it) as ``mlflow.register_model`` does; a tracking
    server does it itself (the version as an int), the embedded store does not."""
    held = client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS)
    versions = json.loads(held) if held else []
    if not any(v.get("name") == version.name and str(v.get("version")) == str(version.version) for v in versions):
        entry = {"name": version.name, "version": int(version.version)}
        client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps([*versions, entry])})


def register_model(client: mlflow.MlflowClient, name: str, model_id: str, metrics: Mapping[str, float],
                   key_metric: str | None, description: str = "") -> ModelVersion:
    """Register the logged model ``models:/<model_id>`` as a new version of ``name``; move ``best`` if it is better.

    Args:
        client: an MLflow client of the tracking/registry server.
        name: registered model name (the bundle's).
        model_id: the logged model (:func:`pipeline.tracking.log_pyfunc_model`); its source run becomes the
            version's run.
        metrics: its best validation metrics (MLflow names), stored as version tags.
        key_metric: the metric that decides the ``best`` alias (higher is better); None (no validation ran):
            the version takes the alias only when no version holds it.
        description: registered model description, used when the name is new. Defaults to ``""``.

    Returns:
        The new model version.

    Example:
        >>> register_model(client, "unetpp_mri_segmentation", "m-0123", {}, None).source    # doctest: +SKIP
        'models:/m-0123'
    """
    _ensure_registered(client, name, description)
    run_id = client.get_logged_model(model_id).source_run_id
    summary = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
    with process_tracking_uri(str(client.tracking_uri)):  # an embedded registry resolves models:/ through it
        version = client.create_model_version(name, f"models:/{model_id}", run_id=run_id, model_id=model_id,
                                              tags={k: f"{v:.6g}" for k, v in metrics.items()},
                                              description=f"UNet++ from run {run_id}; best validation {summary}")
    _link_version(client, model_id, version)
    holder = _current_best(client, name)
    score = metrics.get(key_metric) if key_metric else None
    if _beats(score, holder, key_metric or ""):
        client.set_registered_model_alias(name, BEST_ALIAS, version.version)
        logger.info("registered %s version %s with alias '%s' (%s)", name, version.version, BEST_ALIAS, summary)
    else:
        logger.info("registered %s version %s; alias '%s' stays on version %s (%s %s > %s)", name,
                    version.version, BEST_ALIAS, holder.version, key_metric, holder.tags.get(key_metric), score)
    return version
