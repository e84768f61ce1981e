"""Distributed training set-up for ``torchrun``: NCCL on CUDA, gloo on CPU, one device per local rank.

Example (multi_gpu_train.json)::

    "device": "$pipeline.training.init_distributed()"
"""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist

__all__ = ["RANK_ZERO_ONLY", "init_distributed", "is_main_process", "rank_and_world", "rank_zero_handlers"]

logger = logging.getLogger(__name__)


def init_distributed(backend: str | None = None) -> torch.device:
    """Join the process group that ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ...).

    Args:
        backend: ``"nccl"`` or ``"gloo"``. Defaults to None: NCCL when CUDA is available, gloo otherwise.

    Returns:
        This process's device: ``cuda:LOCAL_RANK`` on GPU machines, ``cpu`` otherwise.

    Raises:
        RuntimeError: not started by torchrun (no ``WORLD_SIZE`` in the environment).
    """
    if "WORLD_SIZE" not in os.environ:
        raise RuntimeError("distributed training must be started with torchrun "
                           "(WORLD_SIZE is not set): torchrun --nproc_per_node=N -m monai.bundle run ...")
    use_cuda = torch.cuda.is_available()
    backend = backend or ("nccl" if use_cuda else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    logger.info("rank %d of %d on %s (%s)", dist.get_rank(), dist.get_world_size(), device, backend)
    return device


def rank_and_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True on rank 0, or when not distributed."""
    return rank_and_world()[0] == 0


#: Handlers that only rank 0 should run: logging, best-model saving, progress bars, tracking, the level record.
RANK_ZERO_ONLY = ("StatsHandler", "CheckpointSaver", "ProgressBar", "TensorBoardStatsHandler", "MLFlowHandler",
                  "SafeMLFlowHandler", "TrainingRecorder", "ValidationTracker", "LevelSelection", "ModelCardWriter")


def rank_zero_handlers(handlers: list | None) -> list | None:
    """``handlers`` on rank 0; on other ranks only those that must run everywhere (schedulers, validation,
    metric reports that gather across ranks, rank-aware savers), so logs and files are written once.

    Args:
        handlers: the engine's handler list (or None).
    """
    if handlers is None or is_main_process():
        return handlers
    return [h for h in handlers if type(h).__name__ not in RANK_ZERO_ONLY]
