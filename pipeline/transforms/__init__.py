"""Only what MONAI's transforms lack; the transform chains themselves live in the bundle configs.

``ForegroundThreshold`` and :mod:`~pipeline.transforms.intensity` import torch only (the deployed batch job uses
them without MONAI); ``NormalizeChannelsd`` is a MONAI transform and is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from pipeline.transforms.foreground import ForegroundThreshold
from pipeline.transforms.intensity import check_schemes, normalize_channels

__all__ = ["ForegroundThreshold", "NormalizeChannelsd", "check_schemes", "normalize_channels"]


def __getattr__(name: str) -> Any:
    if name == "NormalizeChannelsd":
        return importlib.import_module("pipeline.transforms.normalize").NormalizeChannelsd
    raise AttributeError(f"module 'pipeline.transforms' has no attribute '{name}'")
