"""Deep-supervised Dice + cross-entropy with the head order and weights spelled out and checked.

MONAI's ``DeepSupervisionLoss`` weights a list of outputs in list order and quietly falls back to its
``weight_mode`` when the list has more entries than ``weights``. :class:`DeepSupervisedDiceCELoss` keeps MONAI's
loss (and its handling of heads at lower resolution) but makes the contract explicit:

- the outputs arrive **deepest head first**, the order in which ``UNetPlusPlus`` returns them in training;
- ``weights[i]`` weighs output ``i``; there must be exactly one weight per head, and the first (the final,
  deepest head, the one used at inference) must weigh the most;
- a single tensor (a network without deep supervision) gets plain DiceCE.

The default weights, ``(1, 0.5, 0.25, 0.125)``, are MONAI's ``"exp"`` mode for four heads.

Example:
    >>> import torch
    >>> loss = DeepSupervisedDiceCELoss(weights=(1.0, 0.5, 0.25, 0.125), to_onehot_y=True, softmax=True)
    >>> heads = [torch.randn(2, 3, 16, 16, 16) for _ in range(4)]      # deepest first
    >>> target = torch.randint(0, 3, (2, 1, 16, 16, 16))
    >>> loss(heads, target).ndim
    0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss

__all__ = ["DeepSupervisedDiceCELoss"]


class DeepSupervisedDiceCELoss(DeepSupervisionLoss):
    """``sum_i weights[i] * DiceCE(outputs[i], target)``, outputs deepest head first.

    Args:
        weights: one weight per head, deepest (final) head first; ``weights[0]`` must be the largest.
            Defaults to ``(1.0, 0.5, 0.25, 0.125)``.
        normalize_weights: divide the weights by their sum, so the loss scale does not depend on the number
            of heads. Defaults to False (MONAI's behaviour).
        dice_ce_kwargs: passed to ``monai.losses.DiceCELoss`` (``to_onehot_y``, ``softmax``, ``lambda_dice``,
            ``lambda_ce``, ``include_background``, ``batch``, ...).

    Raises:
        ValueError: empty or negative weights, or a first weight smaller than another.
    """

    def __init__(self, weights: Sequence[float] = (1.0, 0.5, 0.25, 0.125), normalize_weights: bool = False,
                 **dice_ce_kwargs: Any) -> None:
        w = [float(v) for v in weights]
        if not w or min(w) < 0:
            raise ValueError(f"weights must be one non-negative number per head, got {tuple(weights)}")
        if w[0] < max(w):
            raise ValueError(f"the final (deepest) head comes first and must weigh the most, got weights {tuple(w)}")
        if normalize_weights:
            total = sum(w)
            w = [v / total for v in w]
        super().__init__(DiceCELoss(**dice_ce_kwargs), weight_mode="exp", weights=w)
        self.head_weights = w

    def forward(self, input: torch.Tensor | list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """Args:
            input: the network's output: a list of heads (deepest first) or one tensor.
            target: labels, ``(B, 1, *spatial)`` indices (with ``to_onehot_y``) or one-hot.

        Raises:
            ValueError: the number of heads differs from the number of weights.
        """
        if isinstance(input, (list, tuple)) and len(input) != len(self.head_weights):
            raise ValueError(f"got {len(input)} heads but {len(self.head_weights)} weights; give one weight per "
                             f"head, deepest first")
        return super().forward(input, target)
