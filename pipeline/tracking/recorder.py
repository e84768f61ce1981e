"""The trainer's MLflow handler: MONAI's logging plus what MONAI leaves out.

At start: continue the saved run when resuming, tag the run (bundle, git commit, host, device, dataset summary
and datalist hash, MLflow's source and user tags), record the training data as the run's dataset input
(:mod:`pipeline.tracking.lineage`) and remember the run next to the checkpoints. At the end: log the best
checkpoint and its model card, export it to TorchScript with :func:`pipeline.export.export_checkpoint`
(``<ckpt_dir>/export/model.ts``: the same function, and so the same file, as ``pipeline export --checkpoint
<ckpt_dir>/model.pt``), log that as an MLflow pyfunc logged model of the run named ``model``, with signature, input
example and model card (:mod:`pipeline.tracking.logged_model`), and register that logged model in the MLflow Model
Registry under the bundle's name, with the best validation metrics as version tags and the ``best`` alias on the
best version so far (:mod:`pipeline.tracking.registry`).

Example (tracking settings file, see ``configs/mlflow.json``)::

    "trainer": {"_target_": "pipeline.tracking.TrainingRecorder", "ckpt_dir": "@ckpt_dir", ...}
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from ignite.engine import Engine, Events
from monai.handlers import MLFlowHandler

from pipeline.deploy.card import CARD_FILE
from pipeline.deploy.files import find_card
from pipeline.export.checkpoint import export_checkpoint
from pipeline.io.atomic import write_text_atomic
from pipeline.tracking.lineage import log_training_dataset
from pipeline.tracking.logged_model import log_pyfunc_model
from pipeline.tracking.registry import register_model
from pipeline.tracking.safe_handler import SafeMLFlowHandler, metric_name
from pipeline.tracking.settings import save_run, saved_run
from pipeline.training.distributed import is_main_process

__all__ = ["TrainingRecorder"]

logger = logging.getLogger(__name__)


class TrainingRecorder(SafeMLFlowHandler):
    """Trainer handler: iteration loss and learning rate (MONAI's), plus tags, resume, model export and registry.

    Args:
        ckpt_dir: the training's checkpoint folder (``model.pt`` is the best model).
        tags: run tags (see :func:`pipeline.tracking.run_tags`). Defaults to None.
        resume: continue the run saved in ``ckpt_dir``. Defaults to False.
        validator: the validation engine, whose best metrics tag the registered version. Defaults to None.
        bundle_meta: bundle metadata (its description goes to the registered model). Defaults to None.
        registered_model_name: Model Registry name; None skips registration. Defaults to None.
        export: export the best model with its card at the end (level and everything else from the card).
            Defaults to True.
        **kwargs: as ``monai.handlers.MLFlowHandler``.
    """

    def __init__(self, ckpt_dir: str | os.PathLike, tags: Mapping[str, str] | None = None, resume: bool = False,
                 validator: Engine | None = None, bundle_meta: Mapping | None = None,
                 registered_model_name: str | None = None, export: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ckpt_dir = Path(ckpt_dir)
        self.tags = dict(tags or {})
        self.resume = bool(resume)
        self.validator = validator
        self.bundle_meta = dict(bundle_meta or {})
        self.registered_model_name = registered_model_name
        self.export = bool(export)
        self.best: dict[str, float] = {}
        self.key_metric: str | None = None

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        if self.validator is not None:
            self.validator.add_event_handler(Events.EPOCH_COMPLETED, self._remember_best)

    def _remember_best(self, engine: Engine) -> None:
        if getattr(engine.state, "best_metric_epoch", -1) == engine.state.epoch:
            self.best = {metric_name(k): float(v) for k, v in engine.state.metrics.items()
                         if isinstance(v, (int, float))}
            self.best["best_epoch"] = float(engine.state.epoch)
            key = getattr(engine.state, "key_metric_name", None)
            self.key_metric = metric_name(key) if key else None

    def start(self, engine: Engine) -> None:
        self.guarded("start", self._start, engine)

    def _start(self, engine: Engine) -> None:
        saved = saved_run(self.ckpt_dir) if self.resume else None
        if saved and saved.get("run_name") == self.run_name and saved.get("tracking_uri") == self.uri:
            self._continue(saved["run_id"])
        MLFlowHandler.start(self, engine)  # MONAI's own, unguarded: its failures reach `guarded` above
        run_id = self.cur_run.info.run_id
        tags = [mlflow.entities.RunTag(k, str(v)[:5000]) for k, v in self.tags.items()]
        for first in range(0, len(tags), 100):
            self.client.log_batch(run_id=run_id, tags=tags[first: first + 100])
        if {"dataset.datalist_sha1", "dataset.source", "dataset.name"} <= set(self.tags):
            log_training_dataset(self.client, run_id, self.tags["dataset.name"], self.tags["dataset.datalist_sha1"],
                                 self.tags["dataset.source"])
        if is_main_process():
            save_run(self.ckpt_dir, run_id, self.run_name or self.cur_run.info.run_name, self.uri)

    def _continue(self, run_id: str) -> None:
        """Make the saved run the current one, unless it was deleted or is gone (a reset store): then MONAI's
        start opens a new run, rather than logging into a run the UI hides or turning tracking off."""
        try:
            run = self.client.get_run(run_id)
        except mlflow.exceptions.MlflowException as exc:
            logger.warning("the saved MLflow run %s cannot be continued (%s); starting a new run", run_id,
                           str(exc).splitlines()[0])
            return
        if run.info.lifecycle_stage == "deleted":
            logger.warning("the saved MLflow run %s was deleted; starting a new run", run_id)
            return
        if run.info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        self.cur_run = self.client.get_run(run_id)
        logger.info("continuing MLflow run %s (%s)", self.run_name, run_id)

    def complete(self) -> None:
        if not is_main_process():
            return
        export_dir = self._export()  # local export happens even when tracking is off
        self.guarded("artifact logging", self._log_final, export_dir)

    def _export(self) -> Path | None:
        best = self.ckpt_dir / "model.pt"
        if not self.export or not best.is_file():
            return None
        folder = self.ckpt_dir / "export"
        try:
            result = export_checkpoint(best, folder / "model.ts")
            write_text_atomic(folder / CARD_FILE, result.card.to_json())  # the embedded card, readable
            logger.info("exported the best model to %s (parity %.2g)", result.path, result.max_abs_diff)
            return folder
        except Exception as exc:  # noqa: BLE001 - an export problem must not fail a finished training
            logger.warning("TorchScript export at the end of training failed: %s", exc)
            return None

    def _log_final(self, export_dir: Path | None) -> None:
        MLFlowHandler.complete(self)  # MONAI's own: the executed config and other artifacts
        if self.cur_run is None:
            return
        run_id = self.cur_run.info.run_id
        card = find_card(self.ckpt_dir / "model.pt")
        if not self.best and card is not None and card.training.validation:  # resumed without a better model
            self.best = {metric_name(k) if k != "best_epoch" else k: float(v)
                         for k, v in card.training.validation.items()}
            self.key_metric = self.key_metric or ("val/mean_dice" if "val/mean_dice" in self.best else None)
        for name in ("model.pt", CARD_FILE):
            if (self.ckpt_dir / name).is_file():
                self.client.log_artifact(run_id, str(self.ckpt_dir / name), "checkpoints")
        if self.best:
            self.client.log_batch(run_id=run_id, tags=[mlflow.entities.RunTag(f"best.{k}", f"{v:.6g}")
                                                       for k, v in self.best.items()])
        if export_dir is None:
            return
        info = log_pyfunc_model(self.client, run_id, export_dir / "model.ts", metrics=self.best)
        if self.registered_model_name:
            register_model(self.client, self.registered_model_name, info.model_id, self.best, self.key_metric,
                           description=self.bundle_meta.get("description", ""))
