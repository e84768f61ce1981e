"""Only the dictionary transforms MONAI lacks; the transform chains themselves live in the bundle configs.

``ForegroundThreshold`` and the intensity schemes are defined in :mod:`pipeline.deploy` (plain torch, so that a
deployed model runs them without MONAI) and listed here too, because bundle configs name them as transforms
(``pipeline.transforms.ForegroundThreshold``).
"""

from __future__ import annotations

from pipeline.deploy.foreground import ForegroundThreshold
from pipeline.deploy.intensity import check_schemes, normalize_channels
from pipeline.transforms.normalize import NormalizeChannelsd
from pipeline.transforms.original import LoadOriginald
from pipeline.transforms.postprocess import KeepLargestComponentd, card_postprocessing

__all__ = ["ForegroundThreshold", "KeepLargestComponentd", "LoadOriginald", "NormalizeChannelsd", "card_postprocessing",
           "check_schemes", "normalize_channels"]
