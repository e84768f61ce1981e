"""Gradient clipping and a guard against non-finite steps, so that one bad batch cannot end a training.

A single step whose gradient holds an inf or NaN makes AdamW's moments NaN, and from then on every weight; the
training then runs to its end (or its time budget) producing nothing, and the best model stops improving without
a word. :class:`GradientGuard` runs after the backward pass (MONAI's ``IterationEvents.BACKWARD_COMPLETED``, before
the optimiser step): it clips the gradient norm to ``max_norm`` (nnU-Net clips at 12) and, where the norm is not
finite, drops the gradients so that the optimiser skips the step, with a warning. After ``patience`` such steps in
a row the training stops with an error that names the step and the loss; the best model and the latest checkpoint
written so far are kept. Under MONAI's fp16 AMP the gradients are unscaled first and a non-finite step is left to
the gradient scaler, which skips it and lowers its scale (the usual start of fp16 training).

Example (bundle config)::

    "train": {"handlers": [..., {"_target_": "pipeline.training.GradientGuard", "max_norm": 12.0}]}
"""

from __future__ import annotations

import logging
import math

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents

__all__ = ["GradientGuard"]

logger = logging.getLogger(__name__)


class GradientGuard:
    """Clip the gradient norm, skip steps whose gradients are not finite, stop a training that keeps failing.

    Args:
        max_norm: largest gradient norm (2-norm over all parameters); None: no clipping. Defaults to 12.0.
        patience: non-finite steps in a row after which the training stops with an error. Defaults to 20.

    Raises:
        ValueError: ``max_norm`` not > 0 or ``patience`` < 1.

    Example:
        >>> guard = GradientGuard(max_norm=1.0)
        >>> guard.max_norm, guard.skipped
        (1.0, 0)
    """

    def __init__(self, max_norm: float | None = 12.0, patience: int = 20) -> None:
        if max_norm is not None and not float(max_norm) > 0:
            raise ValueError(f"max_norm must be > 0 (or null for no clipping), got {max_norm}")
        if int(patience) < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.max_norm = None if max_norm is None else float(max_norm)
        self.patience = int(patience)
        self.skipped = 0
        self._in_a_row = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        params = [p for p in engine.network.parameters() if p.grad is not None]
        if not params:
            return
        scaler = getattr(engine, "scaler", None) if getattr(engine, "amp", False) else None
        if scaler is not None:
            scaler.unscale_(engine.optimizer)  # clip the true gradients; the scaler remembers it unscaled them
        norm = torch.nn.utils.clip_grad_norm_(params, self.max_norm or math.inf)
        if bool(torch.isfinite(norm)):
            self._in_a_row = 0
            return
        if scaler is not None:
            return  # GradScaler.step skips it and lowers the scale
        for p in params:
            p.grad = None  # torch optimisers leave parameters without a gradient untouched
        self.skipped += 1
        self._in_a_row += 1
        loss = engine.state.output.get("loss") if isinstance(engine.state.output, dict) else None
        loss_text = f"{float(loss):.4g}" if isinstance(loss, torch.Tensor) else "unknown"
        logger.warning("step %d skipped: gradient norm %s (loss %s); %d step(s) skipped so far",
                       engine.state.iteration, float(norm), loss_text, self.skipped)
        if self._in_a_row >= self.patience:
            raise RuntimeError(
                f"training diverged: the last {self._in_a_row} steps (up to step {engine.state.iteration}) all "
                f"had non-finite gradients (loss {loss_text}); the best model and the latest checkpoint written "
                f"before are kept. Lower the learning rate or try --precision fp32, then resume or restart")
