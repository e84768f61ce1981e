"""Where runs go and what they are called: tracking URI, experiment and run names, HTTP failure limits.

- Tracking URI: ``MLFLOW_TRACKING_URI`` when set (e.g. ``http://127.0.0.1:5000`` of ``make mlflow``), otherwise
  the embedded store: ``sqlite:///<output_dir>/mlruns.db`` with artifacts in ``<output_dir>/mlruns``, browsable
  with ``mlflow ui --backend-store-uri sqlite:///<output_dir>/mlruns.db``.
- Run names are readable and unique (``<bundle>-fold0-20261122-101500-<host>-<pid>``) so that two runs
  started at once never share a run; a resumed training reuses the name saved next to its checkpoint, so it
  continues the same MLflow run.
- MLflow's HTTP client retries a dead server for minutes by default; unless the user set them, a failing
  request here gives up after 2 retries and a 10 s timeout, and the tracking handlers then stop tracking.

Example:
    >>> tracking_uri("/tmp/run/eval").startswith("sqlite:///")   # without MLFLOW_TRACKING_URI in the env
    True
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from pipeline.io.atomic import write_text_atomic

__all__ = [
    "RUN_FILE",
    "configure_http_limits",
    "experiment_name",
    "run_name",
    "save_run",
    "saved_run",
    "tracking_uri",
]

#: File next to the checkpoints that remembers the MLflow run of a training, for resuming.
RUN_FILE = "mlflow_run.json"


def configure_http_limits(retries: int = 2, timeout_s: int = 10, backoff: int = 1) -> None:
    """Cap MLflow's HTTP retries and timeout unless the user set ``MLFLOW_HTTP_REQUEST_*`` themselves."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_s))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", str(backoff))


def tracking_uri(output_dir: str | os.PathLike) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the embedded SQLite store ``<output_dir>/mlruns.db``."""
    configure_http_limits()
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return env
    db = Path(output_dir).resolve() / "mlruns.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def experiment_name(default: str) -> str:
    """``MLFLOW_EXPERIMENT_NAME`` if set, else ``default`` (the bundle name)."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME", "").strip() or str(default)


def saved_run(ckpt_dir: str | os.PathLike) -> dict | None:
    """The ``{"run_id", "run_name", "tracking_uri"}`` saved by a previous training in ``ckpt_dir``, or None."""
    path = Path(ckpt_dir) / RUN_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def save_run(ckpt_dir: str | os.PathLike, run_id: str, name: str, uri: str) -> None:
    """Remember the run of this training next to its checkpoints (atomically)."""
    write_text_atomic(Path(ckpt_dir) / RUN_FILE,
                      json.dumps({"run_id": run_id, "run_name": name, "tracking_uri": uri}) + "\n")


def run_name(ckpt_dir: str | os.PathLike, bundle: str, fold: int | None = None, resume: bool = False) -> str:
    """A new unique readable run name, or, when resuming, the name of the run saved in ``ckpt_dir``.

    Args:
        ckpt_dir: the training's checkpoint folder.
        bundle: bundle name.
        fold: cross-validation fold. Defaults to None.
        resume: the config's ``resume`` switch. Defaults to False.
    """
    if resume:
        saved = saved_run(ckpt_dir)
        if saved and saved.get("run_name"):
            return str(saved["run_name"])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    host = socket.gethostname().split(".")[0][:20]
    fold_part = f"-fold{fold}" if fold is not None else ""
    return f"{bundle}{fold_part}-{stamp}-{host}-{os.getpid()}"
