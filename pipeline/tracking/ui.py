"""The MLflow UI as a model-training user needs it: the address that opens an experiment in "Model training" mode,
and a light local server.

MLflow 3.17's UI opens in its GenAI mode (traces, evaluations; no model registry in the sidebar). It reads the mode
from the page's ``workflowType`` query parameter (``genai`` or ``machine_learning``) and otherwise from the
browser's local storage (``mlflow.workflowType``, default ``genai``), so ``#/experiments/<id>?workflowType=
machine_learning`` opens the experiment's runs in Model training mode, where the sidebar's Models page is the
registry. ``mlflow ui``/``mlflow server`` start 4 uvicorn workers and, by default, MLflow's GenAI job runners
(huey consumers); a local user needs one worker and no job runners (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``).

Example:
    >>> ui_address("sqlite:///demo_output/training/eval/mlruns.db", "unetpp_ct_segmentation")  # doctest: +SKIP
    'http://127.0.0.1:5000/#/experiments/1?workflowType=machine_learning'
"""

from __future__ import annotations

import logging

__all__ = ["LIGHT_SERVER_ENV", "ui_address", "ui_command"]

logger = logging.getLogger(__name__)

#: The environment that keeps MLflow's server from starting its GenAI job runners (6-7 extra processes).
LIGHT_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}

_MODE = "workflowType=machine_learning"


def ui_address(tracking_uri: str, experiment: str, base: str = "http://127.0.0.1:5000") -> str:
    """The UI address of ``experiment`` in Model training mode (the experiment list when it does not exist yet).

    Args:
        tracking_uri: the store the UI serves (``sqlite:///...`` or ``http://...``).
        experiment: the experiment name (the bundle's).
        base: the UI's address. Defaults to ``"http://127.0.0.1:5000"``.

    Returns:
        ``<base>/#/experiments/<id>?workflowType=machine_learning``.

    Example:
        >>> ui_address("http://127.0.0.1:5000", "unetpp_mri_segmentation")                # doctest: +SKIP
        'http://127.0.0.1:5000/#/experiments/1?workflowType=machine_learning'
    """
    import mlflow

    try:
        found = mlflow.MlflowClient(tracking_uri).get_experiment_by_name(experiment)
    except mlflow.exceptions.MlflowException as exc:  # an address without the id still opens the right mode
        logger.warning("could not look up MLflow experiment %s at %s: %s", experiment, tracking_uri, exc)
        found = None
    where = f"experiments/{found.experiment_id}" if found else "experiments"
    return f"{base.rstrip('/')}/#/{where}?{_MODE}"


def ui_command(db: str, port: int = 5000, mlflow: str = ".venv/bin/mlflow") -> str:
    """The shell command of a light ``mlflow ui`` (one worker, no job runners) on an embedded SQLite store.

    Args:
        db: the ``mlruns.db`` file.
        port: the port. Defaults to 5000.
        mlflow: the ``mlflow`` executable. Defaults to ``".venv/bin/mlflow"``.

    Returns:
        The command line.

    Example:
        >>> ui_command("/tmp/eval/mlruns.db")
        'MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false .venv/bin/mlflow ui --backend-store-uri sqlite:////tmp/eval/mlruns.db --port 5000 --workers 1'
    """
    env = " ".join(f"{k}={v}" for k, v in LIGHT_SERVER_ENV.items())
    return f"{env} {mlflow} ui --backend-store-uri sqlite:///{db} --port {port} --workers 1"
