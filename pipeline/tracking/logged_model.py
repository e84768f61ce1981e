"""The exported model as an MLflow 3 logged model of the training run (the run's "Logged models", the
experiment's Models tab), logged with MLflow's own ``Model.log`` and the pyfunc folder of
:func:`pipeline.export.mlflow_model.pyfunc_arguments`.

``mlflow.pyfunc.log_model`` is a thin wrapper of ``mlflow.models.Model.log(flavor=mlflow.pyfunc, ...)``. It takes
no run id (it uses the active fluent run) and neither takes a tracking URI: both read the process-wide tracking
URI, and without an active run ``Model.log`` files a new logged model under the *Default* experiment. The recorder
talks to its own tracking URI through a client and starts no fluent run, so :func:`log_pyfunc_model` creates the
logged model with that client in the run's experiment, then calls ``Model.log`` with the run id and that model id
while the process-wide tracking URI points at the client's, and restores the URI (and ``MLFLOW_TRACKING_URI``,
which MLflow's own temporary switch would unset) afterwards. ``Model.log`` links the model to the run as an
output, uploads the folder, checks the input example by serving it, and marks the model READY.

Example:
    >>> info = log_pyfunc_model(client, run_id, "models/export/model.ts", metrics={"val/mean_dice": 1})  # doctest: +SKIP
    >>> info.model_uri                                                                      # doctest: +SKIP
    'models:/m-...'
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import mlflow
from mlflow.entities import LoggedModelStatus, Metric
from mlflow.models import Model
from mlflow.models.model import ModelInfo

from pipeline.export.mlflow_model import pyfunc_arguments

__all__ = ["log_pyfunc_model", "process_tracking_uri"]

logger = logging.getLogger(__name__)


@contextmanager
def process_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's process-wide tracking URI at ``uri`` for the block; restore it and the env var after.

    For the MLflow functions that read no client's URI: ``Model.log``, and the embedded (SQLite) registry store,
    which looks up a ``models:/<model_id>`` version source through the process-wide URI.

    Args:
        uri: the tracking URI of the client in use.

    Example:
        >>> with process_tracking_uri(str(client.tracking_uri)):                   # doctest: +SKIP
        ...     Model.log(...)
    """
    from mlflow.tracking._tracking_service import utils
    from mlflow.tracking.fluent import _last_logged_model_id

    saved_uri, saved_env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    saved_last = _last_logged_model_id.get()
    try:
        with utils._use_tracking_uri(uri):
            yield
    finally:
        if saved_uri is None and saved_env is not None:  # restoring "unset" deletes the user's env var
            os.environ["MLFLOW_TRACKING_URI"] = saved_env
        _last_logged_model_id.set(saved_last)  # mlflow.last_logged_model() stays the user's
        logger.debug("process-wide MLflow tracking URI restored to %s", saved_uri or saved_env)


def _link_metrics(client: mlflow.MlflowClient, run_id: str, model_id: str, keys: list[str], step: int) -> None:
    """Attach the run's values of ``keys`` at ``step`` to the logged model (what ``Model.log`` does for all metrics
    of its ``step``; limited here to the validation metrics, whose step is the epoch: ``train/loss``'s is the
    iteration). The same timestamp and value make the run's own history skip them as duplicates."""
    found = []
    for key in keys:
        found += [Metric(m.key, m.value, m.timestamp, m.step, run_id=run_id, model_id=model_id)
                  for m in client.get_metric_history(run_id, key) if m.step == step]
    if found:
        client.log_batch(run_id=run_id, metrics=found)


def log_pyfunc_model(client: mlflow.MlflowClient, run_id: str, torchscript: str | os.PathLike, name: str = "model",
                     metrics: Mapping[str, float] | None = None, params: Mapping[str, str] | None = None,
                     tags: Mapping[str, str] | None = None) -> ModelInfo:
    """Log an exported TorchScript file as an MLflow pyfunc logged model of ``run_id``.

    Args:
        client: a client of the tracking server that holds the run.
        run_id: the training run (the model's source run, in whose experiment it is filed).
        torchscript: a file from :func:`pipeline.export.export_torchscript` (card embedded).
        name: the logged model's name; ``runs:/<run_id>/<name>`` loads it too. Defaults to ``"model"``.
        metrics: the best validation metrics (MLflow names) with ``best_epoch``: the run's values of these names
            at that epoch are attached to the model. Defaults to None.
        params: logged model params (the Models tab's columns). Defaults to None (the run's params, as
            ``Model.log`` itself takes them).
        tags: logged model tags. Defaults to None.

    Returns:
        MLflow's ``ModelInfo`` (``model_id``, ``model_uri`` = ``models:/<model_id>``, signature, metadata).

    Example:
        >>> log_pyfunc_model(client, run_id, "model.ts").model_id                      # doctest: +SKIP
        'm-0123456789abcdef'
    """
    run = client.get_run(run_id)
    params = dict(run.data.params if params is None else params)
    model = client.create_logged_model(experiment_id=run.info.experiment_id, name=name, source_run_id=run_id,
                                       params={k: str(v) for k, v in params.items()}, tags=dict(tags or {}))
    metrics = dict(metrics or {})
    epoch = int(metrics.pop("best_epoch", 0))
    try:
        with pyfunc_arguments(torchscript) as kwargs, process_tracking_uri(str(client.tracking_uri)):
            info = Model.log(artifact_path=None, name=name, flavor=mlflow.pyfunc, run_id=run_id,
                             model_id=model.model_id, **kwargs)
    except Exception:
        # Model.log marks its own failures FAILED; a failure before it must not leave a PENDING model behind
        if str(client.get_logged_model(model.model_id).status) == "PENDING":
            client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        raise
    if epoch and metrics:
        _link_metrics(client, run_id, model.model_id, sorted(metrics), epoch)
    logger.info("logged the MLflow model %s (%s) of run %s", info.model_uri, name, run_id)
    return info
