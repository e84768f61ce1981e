"""nnU-Net's postprocessing, chosen on validation: keep the largest connected component, for the foreground as a
whole and per class, only where it does not lower the validation Dice.

Isensee et al., "nnU-Net: a self-configuring method for deep learning-based biomedical image segmentation", Nature
Methods 18, 2021 (and ``nnunetv2/postprocessing/remove_connected_components.py``): first the foreground as a whole
(the union of every label > 0 keeps its largest component; whatever lies outside it becomes background) is tried and
kept if the mean foreground Dice does not drop; then, on top of that decision, each class k keeps its largest
component if the Dice of class k does not drop.

The operation is what ``monai.transforms.KeepLargestConnectedComponent`` does on a label map (``applied_labels=[k]``,
``independent=True`` per class; ``applied_labels=[1..K]``, ``independent=False`` for the foreground), with its
default full connectivity (26 neighbours in 3D). The deploy core and the batch job run without MONAI (the layering
contract in ``pyproject.toml``), so the components come from ``scipy.ndimage.label`` with the same connectivity;
MONAI itself delegates to scikit-image's ``label`` (a test checks the two agree). The decision is recorded in the
model card (``inference.postprocessing``; its numbers in ``training.postprocessing_choice``) and every deployment
form applies it through :func:`apply`.

Example:
    >>> import numpy as np
    >>> m = np.zeros((1, 9), np.uint8); m[0, :3] = 1; m[0, 5] = 1
    >>> apply(m, Postprocessing(labels=(1,)))[0].tolist()
    [1, 1, 1, 0, 0, 0, 0, 0, 0]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import ndimage

__all__ = ["Choice", "Postprocessing", "PostprocessingChoice", "apply", "apply_postprocessing", "choose",
           "choose_postprocessing", "dice_per_class"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Postprocessing:
    """What to apply to a label map after the argmax (the card's ``inference.postprocessing``).

    Args:
        foreground: keep the largest component of the foreground as a whole. Defaults to False.
        labels: the label ids that keep their largest component, each on its own. Defaults to ``()`` (none).
    """

    foreground: bool = False
    labels: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.foreground or self.labels)

    def to_dict(self) -> dict[str, Any]:
        """The card's layout: ``{"foreground": bool, "largest_component_labels": [...]}``."""
        return {"foreground": bool(self.foreground), "largest_component_labels": [int(k) for k in self.labels]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Postprocessing:
        """The record from the card's layout (None or ``{}``: none)."""
        data = data or {}
        return cls(bool(data.get("foreground", False)),
                   tuple(sorted(int(k) for k in data.get("largest_component_labels") or ())))


@dataclass(frozen=True)
class Choice:
    """The decision and the validation numbers it rests on (the card's ``training.postprocessing_choice``).

    Args:
        decision: the :class:`Postprocessing` chosen.
        tolerance: the Dice drop still accepted.
        cases: validation cases measured.
        dice_before: mean Dice per class (label id as a string) without postprocessing.
        dice_foreground: mean Dice per class with the foreground as a whole kept largest.
        dice_after: mean Dice per class with the chosen decision.
        dice_per_label: label id -> mean Dice of that class with its own largest component kept (on top of the
            foreground decision).
    """

    decision: Postprocessing
    tolerance: float
    cases: int
    dice_before: Mapping[str, float] = field(default_factory=dict)
    dice_foreground: Mapping[str, float] = field(default_factory=dict)
    dice_after: Mapping[str, float] = field(default_factory=dict)
    dice_per_label: Mapping[str, float] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The card's ``training.postprocessing_choice``."""
        return {"rule": "nnunet", "tolerance": self.tolerance, "cases": self.cases,
                "dice_before": dict(self.dice_before), "dice_foreground": dict(self.dice_foreground),
                "dice_per_label": dict(self.dice_per_label), "dice_after": dict(self.dice_after)}


def _largest(mask: np.ndarray) -> np.ndarray:
    """The largest fully connected component of a boolean mask (the first in raster order on a tie, as MONAI)."""
    components, count = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    if count <= 1:
        return mask
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(np.argmax(sizes))


def apply(labels_map: np.ndarray | torch.Tensor, decision: Postprocessing) -> np.ndarray | torch.Tensor:
    """``labels_map`` with ``decision`` applied: first the foreground as a whole, then each listed label.

    Args:
        labels_map: integer label map (any number of spatial axes, no channel axis), numpy or torch.
        decision: what to apply.

    Returns:
        A new label map of the same type, dtype and device (the input unchanged); voxels removed become 0.

    Example:
        >>> m = np.array([[1, 0, 2, 2]]); apply(m, Postprocessing(foreground=True)).tolist()
        [[0, 0, 2, 2]]
    """
    if not decision:
        return labels_map
    as_tensor = isinstance(labels_map, torch.Tensor)
    out = labels_map.detach().cpu().numpy().copy() if as_tensor else np.array(labels_map, copy=True)
    if decision.foreground:
        foreground = out > 0
        out[foreground & ~_largest(foreground)] = 0
    for label in decision.labels:
        mask = out == label
        out[mask & ~_largest(mask)] = 0
    return torch.as_tensor(out, device=labels_map.device) if as_tensor else out


def _dice(prediction: np.ndarray, reference: np.ndarray, label: int) -> float:
    """Dice of one class; 1.0 where both lack it (nnU-Net counts such cases as perfect)."""
    p, r = prediction == label, reference == label
    total = int(p.sum()) + int(r.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(p, r).sum()) / total


def dice_per_class(predictions: Sequence[np.ndarray], references: Sequence[np.ndarray],
                   label_ids: Sequence[int]) -> dict[str, float]:
    """Mean Dice per class over cases.

    Args:
        predictions: label maps.
        references: the reference label maps, same shapes.
        label_ids: the foreground label ids.

    Raises:
        ValueError: different numbers of cases or shapes.
    """
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"predictions and references must be non-empty and pair up, got {len(predictions)} and "
                         f"{len(references)}")
    for p, r in zip(predictions, references):
        if np.shape(p) != np.shape(r):
            raise ValueError(f"a prediction and its reference must have the same shape, got {np.shape(p)} and "
                             f"{np.shape(r)}")
    return {str(k): float(np.mean([_dice(np.asarray(p), np.asarray(r), k) for p, r in zip(predictions, references)]))
            for k in label_ids}


def choose(predictions: Sequence[np.ndarray], references: Sequence[np.ndarray], label_ids: Sequence[int],
           tolerance: float = 0.0) -> Choice:
    """nnU-Net's rule (module docstring): foreground as a whole first, then each class on top of it.

    Args:
        predictions: validation label maps (argmax, without postprocessing).
        references: their reference label maps.
        label_ids: the foreground label ids (the card's labels > 0).
        tolerance: how much a Dice may drop and still keep the step. Defaults to 0.0.

    Raises:
        ValueError: ``tolerance`` < 0, no foreground label, or predictions and references that do not pair up.

    Example:
        >>> ref = np.zeros((1, 9), np.uint8); ref[0, :3] = 1
        >>> pred = ref.copy(); pred[0, 7] = 1
        >>> choose([pred], [ref], [1]).decision
        Postprocessing(foreground=True, labels=(1,))
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    ids = sorted(int(k) for k in label_ids if int(k) > 0)
    if not ids:
        raise ValueError(f"label_ids must hold a foreground label (> 0), got {list(label_ids)}")
    before = dice_per_class(predictions, references, ids)
    with_fg = dice_per_class([apply(p, Postprocessing(foreground=True)) for p in predictions], references, ids)
    foreground = float(np.mean(list(with_fg.values()))) >= float(np.mean(list(before.values()))) - tolerance
    base = with_fg if foreground else before
    kept, per_label = [], {}
    for k in ids:
        trial = Postprocessing(foreground, (k,))
        per_label[str(k)] = dice_per_class([apply(p, trial) for p in predictions], references, [k])[str(k)]
        if per_label[str(k)] >= base[str(k)] - tolerance:
            kept.append(k)
    decision = Postprocessing(foreground, tuple(kept))
    after = dice_per_class([apply(p, decision) for p in predictions], references, ids)
    logger.info("postprocessing chosen on %d case(s): %s", len(predictions), decision)
    return Choice(decision, float(tolerance), len(predictions), before, with_fg, after, per_label)


#: Package-level names (``pipeline.deploy``), where ``apply`` and ``choose`` alone would say too little.
PostprocessingChoice = Choice
apply_postprocessing = apply
choose_postprocessing = choose
