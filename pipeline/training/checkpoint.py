"""The latest full training state, written atomically every epoch, and resuming from it.

MONAI's ``CheckpointSaver`` writes interval checkpoints non-atomically under changing names
(``checkpoint_epoch=N.pt``); a run killed while saving can leave a truncated newest file. ``LatestCheckpoint``
keeps one file, ``checkpoint_latest.pt``, replaced by a rename after a complete write, holding the state dicts
of the network (unwrapped from DDP), optimiser, scheduler and trainer (epoch and iteration). ``resume`` loads
it through MONAI's ``CheckpointLoader``, which continues the epoch count and keeps a larger ``max_epochs``.

Example (bundle config)::

    "run": ["$pipeline.training.resume(@train#trainer, @ckpt_dir, @checkpoint_objects, @resume)",
            "$@train#trainer.run()"]
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader

from pipeline.io.atomic import atomic_path
from pipeline.io.checkpoint import CheckpointError, load_checkpoint

__all__ = ["LATEST", "LatestCheckpoint", "resume"]

logger = logging.getLogger(__name__)

#: File name of the latest full training state.
LATEST = "checkpoint_latest.pt"


def _unwrap(obj: object) -> object:
    """The module inside DistributedDataParallel / DataParallel wrappers."""
    wrapped = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    return obj.module if isinstance(obj, wrapped) else obj


class LatestCheckpoint:
    """Save ``save_dict``'s state dicts to ``save_dir/checkpoint_latest.pt`` every ``interval`` epochs.

    Args:
        save_dir: folder (created).
        save_dict: name -> object with ``state_dict()`` (network, optimizer, lr_scheduler).
        interval: epochs between saves. Defaults to 1.
        filename: file name. Defaults to :data:`LATEST`.
        engine_key: the engine this handler is attached to is saved too, under this name (its epoch and
            iteration counters), so the config need not reference the trainer from inside its own handlers.
            Defaults to ``"trainer"``.
    """

    def __init__(self, save_dir: str | os.PathLike, save_dict: dict, interval: int = 1, filename: str = LATEST,
                 engine_key: str | None = "trainer") -> None:
        if not save_dict:
            raise ValueError("save_dict must name at least one object to save")
        if int(interval) < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        self.save_dir = Path(save_dir)
        self.save_dict = dict(save_dict)
        self.interval = int(interval)
        self.filename = filename
        self.engine_key = engine_key

    def attach(self, engine: Engine) -> None:
        """Save on every ``interval``-th completed epoch (rank 0 only under DDP)."""
        if self.engine_key:
            self.save_dict.setdefault(self.engine_key, engine)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def __call__(self, engine: Engine) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized() and \
                torch.distributed.get_rank() != 0:
            return
        self.save_dir.mkdir(parents=True, exist_ok=True)
        state = {name: _unwrap(obj).state_dict() for name, obj in self.save_dict.items()}
        with atomic_path(self.save_dir / self.filename) as tmp:
            torch.save(state, tmp)
        logger.info("saved the training state of epoch %d to %s", engine.state.epoch, self.save_dir / self.filename)


def resume(trainer: Engine, ckpt_dir: str | os.PathLike, load_dict: dict, enabled: bool = True,
           filename: str = LATEST, on_error: str = "raise") -> str | None:
    """Make ``trainer`` start from ``ckpt_dir/filename`` when ``enabled`` and the file exists.

    The objects are loaded when the trainer starts (MONAI ``CheckpointLoader``): the epoch and iteration
    counters continue, the optimiser and scheduler carry on, and a ``max_epochs`` larger than the saved one
    is kept, so ``--epochs`` can extend a finished run.

    Args:
        trainer: the ``SupervisedTrainer``.
        ckpt_dir: folder of the checkpoint.
        load_dict: name -> object, the same names the checkpoint was saved with.
        enabled: the config's ``resume`` switch. Defaults to True.
        filename: checkpoint file name. Defaults to :data:`LATEST`.
        on_error: ``"raise"``, or ``"exit"``: log why the checkpoint cannot be read and end the process with
            status 1 (a bundle run then prints one line, not a traceback through MONAI's config machinery).
            Defaults to ``"raise"``.

    Returns:
        The path that will be loaded, or None (starting fresh).

    Raises:
        CheckpointError: the checkpoint is empty, truncated or not a PyTorch file (``on_error="raise"``).
    """
    if on_error not in ("raise", "exit"):
        raise ValueError(f"on_error must be 'raise' or 'exit', got '{on_error}'")
    if not enabled:
        return None
    path = Path(ckpt_dir) / filename
    if not path.is_file():
        logger.warning("resume requested but %s does not exist: training starts from epoch 1", path)
        return None
    try:  # read it once here: MONAI's loader fails on an empty file with an empty message
        load_checkpoint(path)
    except CheckpointError as exc:
        logger.error("cannot resume: %s; delete it to start afresh (or restore it), or run with --resume false", exc)
        if on_error == "exit":
            raise SystemExit(1) from None
        raise
    CheckpointLoader(load_path=str(path), load_dict=load_dict, map_location="cpu").attach(trainer)
    logger.info("resuming from %s", path)
    return str(path)
