"""The trainer's side of the model card: written beside ``model.pt`` each time a better model is saved.

:class:`ModelCardWriter` is a validation handler placed after MONAI's ``CheckpointSaver``: when ``model.pt`` has
changed, it completes the card that :func:`pipeline.deploy.describe_model` read off the training's own objects with
the training record (precision, the dataset's case ids and their fingerprint, the folds, the validation metrics of
that model, the checkpoint's SHA-256) and writes ``model_card.json`` beside it, atomically. So a ``model.pt`` on disk
always has the card of the training that wrote it, also when the run is killed afterwards.
:class:`~pipeline.training.levels.LevelSelection` adds the chosen level at the end of the training.

Example (bundle config)::

    "model_card": {"_target_": "pipeline.training.ModelCardWriter", "card": "$pipeline.deploy.describe_model(...)",
                   "ckpt_dir": "@ckpt_dir", "datalist": "@datalist", "dataset_dir": "@dataset_dir",
                   "folds": {"fold": "@fold", "num_folds": "@num_folds", "seed": "@seed"},
                   "precision": "$pipeline.training.training_precision(@device, @precision)"}
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from pipeline.data.folds import cases_fingerprint
from pipeline.deploy.card import ModelCard
from pipeline.deploy.files import card_path, file_sha256, find_card, write_card
from pipeline.training.distributed import is_main_process

__all__ = ["ModelCardWriter", "dataset_record"]

logger = logging.getLogger(__name__)


def dataset_record(datalist: Mapping[str, list[dict]], source: str | os.PathLike | None = None) -> dict[str, Any]:
    """What a card records of the training data: its source, case count, a fingerprint of the case ids (SHA-256 of
    the sorted ids, one per line) and the training and validation case ids.

    Args:
        datalist: ``{"train": [...], "val": [...], "all": [...]}`` of items with a ``case`` key
            (:func:`pipeline.training.prepare_fold`).
        source: the dataset folder or file. Defaults to None.

    Example:
        >>> dataset_record({"train": [{"case": "a"}], "val": [{"case": "b"}]})["num_cases"]
        2
    """
    train = [str(i["case"]) for i in datalist.get("train", [])]
    val = [str(i["case"]) for i in datalist.get("val", [])]
    cases = sorted({str(i["case"]) for i in datalist.get("all", [])} or set(train + val))
    return {"source": str(source or ""), "num_cases": len(cases), "cases_sha256": cases_fingerprint(cases),
            "train": train, "val": val}


class ModelCardWriter:
    """Validation handler: write the model card beside ``model.pt`` whenever ``model.pt`` has changed.

    Args:
        card: the card read off the training's objects (:func:`pipeline.deploy.describe_model`).
        ckpt_dir: the folder of ``model.pt``.
        datalist: the fold's datalist (:func:`pipeline.training.prepare_fold`). Defaults to None.
        dataset_dir: the dataset's folder or file, for the record. Defaults to None.
        folds: ``fold``, ``num_folds``, ``seed`` (and any other split settings). Defaults to None.
        precision: the training's precision (:func:`pipeline.training.training_precision`). Defaults to ``""``.
    """

    def __init__(self, card: ModelCard, ckpt_dir: str | os.PathLike, datalist: Mapping | None = None,
                 dataset_dir: str | os.PathLike | None = None, folds: Mapping | None = None,
                 precision: str = "") -> None:
        if not isinstance(card, ModelCard):
            raise ValueError(f"card must be a pipeline.deploy.ModelCard, got {type(card).__name__}")
        self.ckpt_dir = Path(ckpt_dir)
        self.card = card.replace(training={
            "precision": str(precision), "dataset": dataset_record(datalist or {}, dataset_dir),
            "folds": dict(folds or {})})
        self.written = ""

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        best = self.ckpt_dir / "model.pt"
        if not is_main_process() or not best.is_file():
            return
        sha = file_sha256(best)
        if sha == self.written:
            return
        previous = find_card(best)
        if not self.written and previous is not None and previous.training.checkpoint_sha256 == sha:
            self.written = sha  # a resumed run whose model.pt is still the one its card (and level) describes
            return
        state = engine.state
        if getattr(state, "best_metric_epoch", -1) == state.epoch:
            validation = {str(k): float(v) for k, v in state.metrics.items() if isinstance(v, (int, float))}
            validation["best_epoch"] = int(state.epoch)
        else:  # a model.pt this run did not just save, and no card of its own: its metrics are not known
            validation = {}
        card = self.card.replace(training={"validation": validation, "checkpoint_sha256": sha})
        write_card(card, card_path(best))
        self.written = sha
        logger.info("wrote the model card of %s (epoch %s) to %s", best.name, validation.get("best_epoch", "?"),
                    card_path(best))
