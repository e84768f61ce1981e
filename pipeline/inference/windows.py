"""Sliding-window inference with Gaussian blending, in plain torch (no MONAI import at run time).

It follows ``monai.inferers.sliding_window_inference`` step for step (same padding of small images, scan
interval ``int(roi * (1 - overlap))``, window starts, importance map with ``sigma = sigma_scale * roi`` clamped
at ``max(min, 1e-3)``, weighted average), and tests check it against MONAI to 1e-5. It exists because importing
MONAI costs a deployed batch job seconds of start-up, more than segmenting many small volumes (docs/performance.md).

Example:
    >>> import torch
    >>> out = sliding_window(torch.zeros(1, 1, 40, 37, 35), lambda x: x.repeat(1, 2, 1, 1, 1), [32, 32, 32])
    >>> out.shape
    torch.Size([1, 2, 40, 37, 35])
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F

__all__ = ["importance_map", "sliding_window", "window_starts"]


@lru_cache(maxsize=8)
def _importance(roi: tuple[int, ...], mode: str, sigma_scale: float) -> torch.Tensor:
    if mode == "constant":
        return torch.ones(roi)
    if mode != "gaussian":
        raise ValueError(f"blending mode must be gaussian or constant, got '{mode}'")
    weight = None
    for size in roi:
        x = torch.arange(-(size - 1) / 2.0, (size - 1) / 2.0 + 1, dtype=torch.float)
        g = torch.exp(x ** 2 / (-2 * (size * sigma_scale) ** 2))
        weight = g if weight is None else weight.unsqueeze(-1) * g
    return torch.clamp(weight, min=max(float(weight.min()), 1e-3))


def importance_map(roi: Sequence[int], mode: str = "gaussian", sigma_scale: float = 0.125) -> torch.Tensor:
    """Per-voxel window weights (MONAI's ``compute_importance_map``)."""
    return _importance(tuple(int(r) for r in roi), mode, float(sigma_scale))


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Start indices of the windows along one axis of length ``size`` (>= ``roi``)."""
    interval = roi if roi == size else max(int(roi * (1 - overlap)), 1)
    count = 1
    for d in range(math.ceil(size / interval)):
        if d * interval + roi >= size:
            count = d + 1
            break
    return [i * interval - max(i * interval + roi - size, 0) for i in range(count)]


def sliding_window(image: torch.Tensor, model: Callable[[torch.Tensor], torch.Tensor], roi: Sequence[int],
                   overlap: float = 0.25, mode: str = "gaussian", sigma_scale: float = 0.125,
                   sw_batch_size: int = 1) -> torch.Tensor:
    """Blend ``model`` over windows of ``image``.

    Args:
        image: ``(B, C, *spatial)``.
        model: windows ``(N, C, *roi)`` -> ``(N, K, *roi)``.
        roi: window size.
        overlap: fraction of overlap in [0, 1). Defaults to 0.25.
        mode: ``"gaussian"`` or ``"constant"``. Defaults to ``"gaussian"``.
        sigma_scale: Gaussian sigma as a fraction of the window. Defaults to 0.125.
        sw_batch_size: windows per call. Defaults to 1.

    Returns:
        ``(B, K, *spatial)`` in the image's dtype and device.
    """
    dims = image.ndim - 2
    roi = [int(r) for r in roi]
    if len(roi) != dims:
        raise ValueError(f"roi must have {dims} values for a {dims}D image, got {roi}")
    sizes = list(image.shape[2:])
    pad = []
    for k in range(dims - 1, -1, -1):  # F.pad order: last axis first
        diff = max(roi[k] - sizes[k], 0)
        pad.extend([diff // 2, diff - diff // 2])
    if any(pad):
        image = F.pad(image, pad, mode="constant", value=0.0)
    padded = list(image.shape[2:])
    starts = list(itertools.product(*(window_starts(padded[d], roi[d], overlap) for d in range(dims))))
    weight = importance_map(roi, mode, sigma_scale).to(device=image.device, dtype=torch.float32)
    out: torch.Tensor | None = None
    count = torch.zeros((1, 1, *padded), device=image.device, dtype=torch.float32)
    for b in range(image.shape[0]):
        for first in range(0, len(starts), sw_batch_size):
            group = starts[first: first + sw_batch_size]
            slices = [tuple(slice(s, s + r) for s, r in zip(start, roi)) for start in group]
            batch = torch.cat([image[(slice(b, b + 1), slice(None), *sl)] for sl in slices])
            pred = model(batch).float()
            if out is None:
                out = torch.zeros((image.shape[0], pred.shape[1], *padded), device=image.device, dtype=torch.float32)
            for i, sl in enumerate(slices):
                out[(slice(b, b + 1), slice(None), *sl)] += pred[i: i + 1] * weight
                if b == 0:
                    count[(slice(None), slice(None), *sl)] += weight
    out /= count
    if any(pad):
        crop = [slice(None), slice(None)]
        for k in range(dims):
            before = pad[2 * (dims - 1 - k)]
            crop.append(slice(before, before + sizes[k]))
        out = out[tuple(crop)]
    return out
