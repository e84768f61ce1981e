"""A deployed model's preprocessing, rebuilt from its model card, and its exact inverse.

The steps are the ones the bundle trained with, recorded in the card by :mod:`pipeline.deploy.steps` (which
also defines how each is applied and undone). :meth:`Preprocessor.invert` undoes crop, resampling and
reorientation on the network's probabilities, as ``Invertd`` does, so labels land on the input's own grid.

It does not import MONAI, so that a deployed batch job starts without MONAI's import time.

Example:
    >>> prep = Preprocessor(card)                                  # doctest: +SKIP
    >>> image, state = prep(volume.array, volume.geometry.affine)  # doctest: +SKIP
    >>> probs = prep.invert(predictor(image), state)               # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pipeline.deploy.card import ModelCard
from pipeline.deploy.steps import Step, build_steps

__all__ = ["Preprocessor"]


@dataclass
class _State:
    """What the inverse needs: the steps that changed the grid, in order, with their undo information."""

    undo: list[tuple[Step, Any]] = field(default_factory=list)


class Preprocessor:
    """Callable preprocessing of one image, described by a model's card.

    Args:
        card: the exported model's card (its ``preprocessing`` steps).

    Raises:
        ValueError: a step this version does not know.
    """

    def __init__(self, card: ModelCard) -> None:
        self.steps = build_steps(card.preprocessing)

    def __call__(self, array: np.ndarray, affine: np.ndarray, spatial_dims: int | None = None) -> \
            tuple[torch.Tensor, _State]:
        """Args:
            array: voxels in index order, ``(X, Y[, Z])``, or with a trailing channel axis ``(X, Y[, Z], C)``
                (a multi-channel case, as :func:`pipeline.io.read_case` returns it).
            affine: the RAS affine of that grid (``Geometry.affine``).
            spatial_dims: 2 or 3; needed only for a 2D multi-channel ``(X, Y, C)`` array. Defaults to None
                (``array.ndim``, at most 3).

        Returns:
            ``(image (C, ...), state)``; the state is what :meth:`invert` needs.
        """
        x = torch.as_tensor(np.asarray(array, dtype=np.float32))
        spatial = int(spatial_dims or min(x.ndim, 3))
        x = x[None] if x.ndim == spatial else x.permute(x.ndim - 1, *range(x.ndim - 1))
        affine = np.asarray(affine, dtype=float)
        state = _State()
        for step in self.steps:
            x, affine, info = step.apply(x, affine)
            if info is not None:
                state.undo.append((step, info))
        return x.contiguous(), state

    def invert(self, probs: torch.Tensor, state: _State) -> torch.Tensor:
        """Map ``(K, ...)`` network probabilities from the preprocessed grid back to the input grid (linear
        resampling, zeros outside a crop), undoing the steps in reverse order."""
        x = probs
        for step, info in reversed(state.undo):
            x = step.invert(x, info)
        return x

