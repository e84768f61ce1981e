"""``select_fn`` for MONAI's ``CropForegroundd`` that keeps its threshold readable.

A lambda (``"$lambda x: x > -500"``) works in a config but cannot be inspected, so an export could not tell a
deployment which threshold training cropped with. ``ForegroundThreshold`` is the same function with the value
on the object; :mod:`pipeline.deploy.steps` records it and the deployed batch job calls this same class.

Example:
    >>> import torch
    >>> ForegroundThreshold(-500)(torch.tensor([-1000.0, 40.0]))
    tensor([False,  True])
    >>> ForegroundThreshold(None)(torch.tensor([-1000.0, 40.0]))
    tensor([True, True])
"""

from __future__ import annotations

import torch

__all__ = ["ForegroundThreshold"]


class ForegroundThreshold:
    """``x > threshold``: the foreground of ``CropForegroundd`` (e.g. the body in CT at -500 HU, the non-zero
    region of MRI at 0).

    Args:
        threshold: values strictly above it are foreground; None makes every voxel foreground (no crop).
    """

    def __init__(self, threshold: float | None) -> None:
        self.threshold = None if threshold is None else float(threshold)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.threshold is None:
            return torch.ones_like(image, dtype=torch.bool)
        return image > self.threshold

    def __repr__(self) -> str:
        return f"ForegroundThreshold({self.threshold})"
