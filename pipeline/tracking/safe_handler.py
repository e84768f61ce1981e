"""MONAI's ``MLFlowHandler`` made safe for long trainings: tracking failures never stop training.

When the tracking server is unreachable at start or dies mid-run, the first failing call logs one warning naming
the tracking URI, every handler of that URI stops tracking for the rest of the process, and training goes on
(checkpoints are written as usual). It also logs on rank 0 only under DDP, logs parameters in batches of at most
100 (MLflow's limit), and, on a resumed run, skips parameters already recorded instead of failing on changed
values (the new values are recorded as ``resumed.<param>`` tags). Metric names follow one scheme (:func:`metric_name`):
``train/loss`` and ``lr`` per iteration, ``val/<metric>`` per epoch (the trainer's epoch is the step).

Example (tracking settings file)::

    "validator": {"_target_": "pipeline.tracking.SafeMLFlowHandler", "tracking_uri": "@tracking_uri",
                  "experiment_name": "@experiment_name", "run_name": "@run_name", "iteration_log": false}
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import mlflow
from ignite.engine import Engine
from monai.handlers import MLFlowHandler

from pipeline.training.distributed import is_main_process

__all__ = ["SafeMLFlowHandler", "metric_name", "tracking_failed"]

logger = logging.getLogger(__name__)

_FAILED: dict[str, str] = {}  # tracking URI -> first error, shared by every handler of this process
_BATCH = 100


def metric_name(key: str) -> str:
    """The MLflow name of an engine metric: ``val_<name>`` -> ``val/<name>``, ``train_<name>`` -> ``train/<name>``,
    MONAI's ``lr_group_0`` -> ``lr`` (further parameter groups ``lr/group_<i>``); other names unchanged.

    Example:
        >>> [metric_name(k) for k in ("val_mean_dice", "val_dice_anterior", "train_loss", "lr_group_0", "lr_group_1")]
        ['val/mean_dice', 'val/dice_anterior', 'train/loss', 'lr', 'lr/group_1']
    """
    group = re.fullmatch(r"lr_group_(\d+)", key)
    if group:
        return "lr" if group.group(1) == "0" else f"lr/group_{group.group(1)}"
    for prefix in ("val", "train"):
        if key.startswith(prefix + "_"):
            return f"{prefix}/{key[len(prefix) + 1:]}"
    return key


def tracking_failed(uri: str) -> bool:
    """True once any handler of this process failed to reach ``uri``."""
    return uri in _FAILED


class SafeMLFlowHandler(MLFlowHandler):
    """``monai.handlers.MLFlowHandler`` whose failures disable tracking instead of raising.

    Args:
        *args, **kwargs: as ``monai.handlers.MLFlowHandler``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.uri = str(self.client.tracking_uri)

    @property
    def active(self) -> bool:
        """Tracking is on: rank 0 and no failure so far for this URI."""
        return is_main_process() and self.uri not in _FAILED

    def guarded(self, what: str, fn: Callable, *args: Any) -> Any:
        """Call ``fn`` if tracking is active; on an exception warn once per URI and turn tracking off."""
        if not self.active:
            return None
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - any tracking failure must leave training running
            if self.uri not in _FAILED:
                _FAILED[self.uri] = f"{type(exc).__name__}: {exc}"
                logger.warning("MLflow tracking at %s failed during %s (%s); training continues without "
                               "tracking, checkpoints are written as usual", self.uri, what,
                               str(exc).splitlines()[0][:300])
            return None

    def start(self, engine: Engine) -> None:
        self.guarded("start", super().start, engine)

    def iteration_completed(self, engine: Engine) -> None:
        self.guarded("iteration logging", super().iteration_completed, engine)

    def epoch_completed(self, engine: Engine) -> None:
        self.guarded("epoch logging", super().epoch_completed, engine)

    def complete(self) -> None:
        self.guarded("artifact logging", super().complete)

    def close(self) -> None:
        if self.active:
            self.guarded("closing the run", super().close)
        else:  # still release a local SQLite engine, quietly
            try:
                self._dispose_sqlite_store()
            except Exception as exc:  # noqa: BLE001 - closing must never fail the training it followed
                logger.debug("releasing the local SQLite store failed: %s", exc)

    def _log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        super()._log_metrics({metric_name(str(k)): v for k, v in metrics.items()}, step)

    def _log_params(self, params: dict[str, Any]) -> None:
        if not self.cur_run:
            raise ValueError("Current Run is not Active to log params")
        run_id = self.cur_run.info.run_id
        existing = self.client.get_run(run_id).data.params
        fresh = {k: str(v) for k, v in params.items() if k not in existing}
        changed = {f"resumed.{k}": str(v)[:5000] for k, v in params.items()
                   if k in existing and existing[k] != str(v)}
        items = list(fresh.items())
        for start in range(0, len(items), _BATCH):
            chunk = [mlflow.entities.Param(k, v) for k, v in items[start: start + _BATCH]]
            self.client.log_batch(run_id=run_id, params=chunk)
        if changed:
            tags = [mlflow.entities.RunTag(k, v) for k, v in changed.items()]
            for start in range(0, len(tags), _BATCH):
                self.client.log_batch(run_id=run_id, tags=tags[start: start + _BATCH])
