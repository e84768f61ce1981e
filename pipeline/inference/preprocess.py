"""A deployed model's preprocessing, rebuilt from its metadata in plain torch, and its exact inverse.

The steps are the ones the bundle trained with (:mod:`pipeline.export.metadata` reads them off the bundle's
MONAI transforms) and follow MONAI's definitions: ``Orientationd`` (nibabel's orientation maths), ``Spacingd``
(output size ``round((n - 1) * s_in / s_out + 1)``, linear sampling at voxel positions, border padding),
``NormalizeIntensityd`` (mean and population std over non-zero voxels), ``ScaleIntensityRanged`` and
``CropForegroundd`` (bounding box of the threshold plus margin, clipped to the image). Tests check each against
MONAI on real and synthetic images. :meth:`Preprocessor.invert` undoes crop, resampling and reorientation on
the network's probabilities, as ``Invertd`` does, so labels land on the input's own grid.

It does not import MONAI: a deployed batch job then starts in about 2 s instead of 8-10 s.

Example:
    >>> prep = Preprocessor(meta)                                  # doctest: +SKIP
    >>> image, state = prep(volume.array, volume.geometry.affine)  # doctest: +SKIP
    >>> probs = prep.invert(predictor(image), state)               # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from nibabel.orientations import axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

__all__ = ["Preprocessor", "resample_axes"]


@dataclass
class _State:
    """What the inverse needs: one undo entry per step, in order."""

    undo: list[tuple[str, Any]] = field(default_factory=list)


def _apply_ornt(x: torch.Tensor, transform: np.ndarray) -> torch.Tensor:
    """nibabel's ``apply_orientation`` on the spatial axes of a channel-first tensor."""
    for axis, flip in enumerate(transform[:, 1]):
        if flip == -1:
            x = torch.flip(x, dims=[axis + 1])
    order = [0] + [int(np.where(transform[:, 0] == k)[0][0]) + 1 for k in range(transform.shape[0])]
    return x.permute(order)


def resample_axes(x: torch.Tensor, ratios: list[float], out_shape: list[int]) -> torch.Tensor:
    """Linear sampling of a channel-first tensor at positions ``i * ratio`` (voxel units) along each spatial axis,
    border-padded, to ``out_shape``: MONAI ``Spacing``'s grid for an axis-aligned zoom."""
    dims = x.ndim - 1
    in_shape = list(x.shape[1:])
    if in_shape == out_shape and all(abs(r - 1.0) < 1e-9 for r in ratios):
        return x
    axes = []
    for d in range(dims):
        pos = torch.arange(out_shape[d], dtype=torch.float64) * ratios[d]
        scale = 2.0 / max(in_shape[d] - 1, 1)
        axes.append((pos * scale - 1.0).float())
    grids = torch.meshgrid(*axes, indexing="ij")
    grid = torch.stack(list(reversed(grids)), dim=-1)[None]  # grid_sample wants (x=last axis, ..., first axis)
    mode = "bilinear"
    return F.grid_sample(x[None].float(), grid.to(x.device), mode=mode, padding_mode="border",
                         align_corners=True)[0]


class Preprocessor:
    """Callable preprocessing of one image, described by a model's metadata.

    Args:
        metadata: the exported model's metadata (``preprocessing.steps``).

    Raises:
        ValueError: a step this version does not know.
    """

    KNOWN = ("orient", "resample", "zscore", "window", "crop_foreground")

    def __init__(self, metadata: Mapping[str, Any]) -> None:
        self.steps = list(metadata.get("preprocessing", {}).get("steps", []))
        for step in self.steps:
            if step.get("kind") not in self.KNOWN:
                raise ValueError(f"model metadata names an unknown preprocessing step '{step.get('kind')}' (known: "
                                 f"{', '.join(self.KNOWN)}); export the model with this version of the pipeline")

    def __call__(self, array: np.ndarray, affine: np.ndarray) -> tuple[torch.Tensor, _State]:
        """Args:
            array: voxels in index order, ``(X, Y, Z)`` or ``(X, Y, Z, C)``.
            affine: the RAS affine of that grid (``Geometry.affine``).

        Returns:
            ``(image (C, ...), state)``; the state is what :meth:`invert` needs.
        """
        x = torch.as_tensor(np.asarray(array, dtype=np.float32))
        x = x[None] if x.ndim == 3 else x.permute(3, 0, 1, 2)
        affine = np.asarray(affine, dtype=float)
        state = _State()
        for step in self.steps:
            x, affine = getattr(self, f"_{step['kind']}")(x, affine, step, state)
        return x.contiguous(), state

    # -- steps: each returns (tensor, affine) and records its undo ---------------------------------------------
    def _orient(self, x: torch.Tensor, affine: np.ndarray, step: Mapping, state: _State) -> tuple[torch.Tensor,
                                                                                                  np.ndarray]:
        transform = ornt_transform(io_orientation(affine), axcodes2ornt(tuple(step["axcodes"])))
        shape = tuple(x.shape[1:])
        state.undo.append(("orient", ornt_transform(axcodes2ornt(tuple(step["axcodes"])), io_orientation(affine))))
        return _apply_ornt(x, transform), affine @ inv_ornt_aff(transform, shape)

    def _resample(self, x: torch.Tensor, affine: np.ndarray, step: Mapping, state: _State) -> tuple[torch.Tensor,
                                                                                                    np.ndarray]:
        spacing_in = np.linalg.norm(affine[:3, :3], axis=0)
        spacing_out = np.asarray(step["pixdim"], dtype=float)
        shape_in = list(x.shape[1:])
        shape_out = [int(np.round((n - 1) * si / so + 1.0)) for n, si, so in zip(shape_in, spacing_in, spacing_out)]
        state.undo.append(("resample", (shape_in, (spacing_out / spacing_in).tolist(), shape_out)))
        out = resample_axes(x, (spacing_out / spacing_in).tolist(), shape_out)
        new_affine = affine.copy()
        new_affine[:3, :3] = affine[:3, :3] / spacing_in * spacing_out
        return out, new_affine

    def _zscore(self, x: torch.Tensor, affine: np.ndarray, step: Mapping, state: _State) -> tuple[torch.Tensor,
                                                                                                  np.ndarray]:
        def norm(v: torch.Tensor) -> torch.Tensor:
            mask = v != 0 if step.get("nonzero", False) else torch.ones_like(v, dtype=torch.bool)
            if not mask.any():
                return v
            values = v[mask]
            std = float(torch.std(values, unbiased=False))
            v = v.clone()
            v[mask] = (values - float(values.mean())) / (std if std != 0.0 else 1.0)
            return v

        out = torch.stack([norm(c) for c in x]) if step.get("channel_wise", False) else norm(x)
        return out, affine

    def _window(self, x: torch.Tensor, affine: np.ndarray, step: Mapping, state: _State) -> tuple[torch.Tensor,
                                                                                                  np.ndarray]:
        a0, a1, b0, b1 = (float(step[k]) for k in ("a_min", "a_max", "b_min", "b_max"))
        out = (x - a0) / (a1 - a0) * (b1 - b0) + b0 if a1 != a0 else x - a0
        if step.get("clip", False):
            out = torch.clamp(out, min(b0, b1), max(b0, b1))
        return out, affine

    def _crop_foreground(self, x: torch.Tensor, affine: np.ndarray, step: Mapping, state: _State) -> \
            tuple[torch.Tensor, np.ndarray]:
        mask = (x > float(step["threshold"])).any(dim=0)
        shape = list(x.shape[1:])
        margin = step.get("margin", 0)
        margins = list(margin) if isinstance(margin, (list, tuple)) else [int(margin)] * len(shape)
        if not mask.any():  # nothing above the threshold: keep the whole image
            state.undo.append(("crop", (shape, [0] * len(shape), shape)))
            return x, affine
        start, end = [], []
        for d in range(len(shape)):
            other = tuple(k for k in range(len(shape)) if k != d)
            idx = torch.nonzero(mask.any(dim=other)).flatten()
            start.append(max(int(idx[0]) - margins[d], 0))
            end.append(min(int(idx[-1]) + 1 + margins[d], shape[d]))
        state.undo.append(("crop", (shape, start, end)))
        new_affine = affine.copy()
        new_affine[:3, 3] = affine[:3, :3] @ np.asarray(start, dtype=float) + affine[:3, 3]
        return x[(slice(None), *(slice(s, e) for s, e in zip(start, end)))], new_affine

    # -- inverse ------------------------------------------------------------------------------------------------
    def invert(self, probs: torch.Tensor, state: _State) -> torch.Tensor:
        """Map ``(K, ...)`` network probabilities from the preprocessed grid back to the input grid (linear
        resampling, zeros outside a crop), undoing the steps in reverse order."""
        x = probs
        handlers: dict[str, Callable] = {"orient": self._undo_orient, "resample": self._undo_resample,
                                         "crop": self._undo_crop}
        for kind, info in reversed(state.undo):
            x = handlers[kind](x, info)
        return x

    @staticmethod
    def _undo_orient(x: torch.Tensor, transform: np.ndarray) -> torch.Tensor:
        return _apply_ornt(x, transform)

    @staticmethod
    def _undo_resample(x: torch.Tensor, info: tuple) -> torch.Tensor:
        shape_in, ratios, _ = info
        return resample_axes(x, [1.0 / r for r in ratios], list(shape_in))

    @staticmethod
    def _undo_crop(x: torch.Tensor, info: tuple) -> torch.Tensor:
        shape, start, end = info
        if list(start) == [0] * len(shape) and list(end) == list(shape):
            return x
        out = torch.zeros((x.shape[0], *shape), dtype=x.dtype, device=x.device)
        out[(slice(None), *(slice(s, e) for s, e in zip(start, end)))] = x
        return out
