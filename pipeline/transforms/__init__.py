"""Only what MONAI's transforms lack; the transform chains themselves live in the bundle configs.

``ForegroundThreshold`` and :mod:`~pipeline.transforms.intensity` import torch only (the deployed batch job uses
them without MONAI); ``NormalizeChannelsd`` and ``LoadOriginald`` are MONAI transforms and are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from pipeline.transforms.foreground import ForegroundThreshold
from pipeline.transforms.intensity import check_schemes, normalize_channels

__all__ = ["ForegroundThreshold", "LoadOriginald", "NormalizeChannelsd", "check_schemes", "normalize_channels"]
_LAZY = {"NormalizeChannelsd": "pipeline.transforms.normalize", "LoadOriginald": "pipeline.transforms.original"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pipeline.transforms' has no attribute '{name}'")
