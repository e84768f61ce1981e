"""``KeepLargestComponentd``: bundle inference applies the postprocessing the model card records.

The operation is :func:`pipeline.deploy.postprocess.apply` (keep the largest connected component of the foreground as a
whole and/or per class, as chosen on validation by ``pipeline postprocess``), the same code the batch job and the
MLflow model run, on the argmax label map (after ``AsDiscreted``, before ``SaveImaged``). ``postprocessing="auto"``
reads the decision from the card beside the checkpoint (``models/model_card.json``), for the checkpoint it describes
(same SHA-256; another checkpoint gets none, as :func:`pipeline.deploy.card_level` does for the level); ``"none"``
applies nothing; a dict in the card's layout applies that.

Example (bundle config)::

    {"_target_": "pipeline.transforms.KeepLargestComponentd", "keys": "pred", "postprocessing": "@postprocess",
     "checkpoint": "@ckpt_path"}
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from pipeline.deploy.files import file_sha256, find_card
from pipeline.deploy.postprocess import Postprocessing, apply

__all__ = ["KeepLargestComponentd", "card_postprocessing"]

logger = logging.getLogger(__name__)


def card_postprocessing(value: str | Mapping[str, Any], checkpoint: str | os.PathLike | None) -> Postprocessing:
    """The postprocessing ``value`` (a bundle's ``postprocess`` key) means for ``checkpoint``.

    Args:
        value: ``"auto"`` (the card beside ``checkpoint``, for that checkpoint), ``"none"``, or a dict
            ``{"foreground": bool, "largest_component_labels": [...]}``.
        checkpoint: the model file (``models/model.pt``); None: nothing is looked for.

    Raises:
        ValueError: another string than ``auto`` or ``none``.
    """
    if isinstance(value, Mapping):
        return Postprocessing.from_dict(value)
    choice = str(value).strip().lower()
    if choice not in ("auto", "none"):
        raise ValueError(f"postprocess must be 'auto', 'none' or an object like {Postprocessing().to_dict()}, "
                         f"got '{value}'")
    card = find_card(checkpoint) if choice == "auto" and checkpoint is not None else None
    if card is None or not card.postprocessing:
        return Postprocessing()
    path = Path(checkpoint)
    sha = card.training.checkpoint_sha256
    if sha and path.is_file() and file_sha256(path) != sha:
        logger.info("the postprocessing in the model card was chosen for another checkpoint than %s: none applied",
                    path)
        return Postprocessing()
    return card.postprocessing


class KeepLargestComponentd(MapTransform):
    """Apply the card's postprocessing to channel-first label maps (module docstring).

    Args:
        keys: keys of the label maps (after ``AsDiscreted(argmax=True)``).
        postprocessing: ``"auto"``, ``"none"`` or a dict (:func:`card_postprocessing`). Defaults to ``"auto"``.
        checkpoint: the checkpoint whose card ``"auto"`` reads. Defaults to None.
        allow_missing_keys: skip absent keys. Defaults to False.
    """

    def __init__(self, keys: KeysCollection, postprocessing: str | Mapping[str, Any] = "auto",
                 checkpoint: str | os.PathLike | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.decision = card_postprocessing(postprocessing, checkpoint)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if not self.decision:
            return d
        for key in self.key_iterator(d):
            image = d[key]
            plain = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
            out = torch.stack([apply(channel.long(), self.decision).to(plain.dtype) for channel in plain])
            if isinstance(image, MetaTensor):
                out = MetaTensor(out, meta=image.meta, applied_operations=image.applied_operations)
            d[key] = out
        return d
