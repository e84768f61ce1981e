"""Read a PyTorch checkpoint, or say in one line why it cannot be read.

``torch.load`` on a 0-byte file raises ``EOFError`` with an empty message, on a truncated one an
``UnpicklingError`` or a zip error deep in its loader; a user sees a traceback and not the file's name. Both the
export (``--checkpoint``) and resuming a training (``checkpoint_latest.pt``) read through :func:`load_checkpoint`.

Example:
    >>> state = load_checkpoint("runs/hippo/models/model.pt")                 # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import PipelineError

__all__ = ["CheckpointError", "load_checkpoint"]


class CheckpointError(PipelineError, ValueError):
    """A checkpoint file is missing, empty, truncated or not a PyTorch file; the message names it."""


def load_checkpoint(path: str | os.PathLike) -> object:
    """``torch.load`` (weights only, onto the CPU) with one-line errors.

    Args:
        path: the checkpoint file.

    Raises:
        CheckpointError: missing, a folder, 0 bytes, truncated, or not a PyTorch checkpoint.
    """
    import torch

    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint '{p}' does not exist")
    if not p.is_file():
        raise CheckpointError(f"checkpoint '{p}' must be a file, got a folder")
    size = p.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint '{p}' is empty (0 bytes): a run stopped while writing it, or a failed copy")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises EOFError, UnpicklingError, RuntimeError, zip errors...
        reason = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else type(exc).__name__
        if len(reason) < 20:  # e.g. the unpickler's bare opcode number
            reason = f"{type(exc).__name__} {reason}".strip()
        if reason.startswith("Weights only load failed"):  # torch's advice to unpickle anything is not ours
            reason = "it holds objects other than tensors and plain containers, or no pickle at all"
        raise CheckpointError(f"checkpoint '{p}' ({size} bytes) is not a readable PyTorch checkpoint (truncated, "
                              f"damaged or another kind of file): {reason[:200]}") from None
