"""``select_fn`` for MONAI's ``CropForegroundd`` that keeps its threshold readable.

A lambda (``"$lambda x: x > -500"``) works in a config but cannot be inspected, so an export could not tell a
deployment which threshold training cropped with. ``ForegroundThreshold`` is the same function with the value
on the object, and :mod:`pipeline.export.metadata` records it.

Example:
    >>> import torch
    >>> ForegroundThreshold(-500)(torch.tensor([-1000.0, 40.0]))
    tensor([False,  True])
"""

from __future__ import annotations

import torch

__all__ = ["ForegroundThreshold"]


class ForegroundThreshold:
    """``x > threshold``: the foreground of ``CropForegroundd`` (e.g. the body in CT at -500 HU).

    Args:
        threshold: values strictly above it are foreground.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = float(threshold)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image > self.threshold

    def __repr__(self) -> str:
        return f"ForegroundThreshold({self.threshold})"
