"""``NormalizeChannelsd``: the dictionary transform that applies :mod:`pipeline.deploy.intensity` schemes.

MONAI normalises all channels of a key the same way (``NormalizeIntensityd``, ``ScaleIntensityRanged``); a
multi-channel input such as CT + MR, or a plan that measured a CT channel's foreground statistics, needs one
scheme per channel. The arithmetic is :func:`pipeline.deploy.intensity.normalize_channels`, which the
deployed batch job runs too, so training and deployment normalise with the same code.

Example (bundle config)::

    {"_target_": "pipeline.transforms.NormalizeChannelsd", "keys": "image", "schemes": "@normalization"}
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from pipeline.deploy.intensity import check_schemes, normalize_channels

__all__ = ["NormalizeChannelsd"]


class NormalizeChannelsd(MapTransform):
    """Normalise each channel of ``keys`` by its scheme (one scheme for all channels, or one per channel).

    Args:
        keys: keys of the channel-first images to normalise.
        schemes: a scheme dict or a list with one per channel; see :mod:`pipeline.deploy.intensity`.
        allow_missing_keys: skip absent keys. Defaults to False.

    Raises:
        ValueError: invalid schemes (at construction), or a per-channel list that does not match an image's
            channel count (when called).
    """

    def __init__(self, keys: KeysCollection, schemes: Mapping | Sequence[Mapping],
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.schemes = check_schemes(schemes)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            out = normalize_channels(image.as_tensor() if isinstance(image, MetaTensor) else image, self.schemes)
            if isinstance(image, MetaTensor):  # keep the affine and the invertible history (Invertd reads it)
                out = MetaTensor(out, meta=image.meta, applied_operations=image.applied_operations)
            d[key] = out
        return d
