"""UNet++ segmentation pipeline for CT and MRI on MONAI.

Sub-packages: ``data`` (datalists, folds, synthetic phantoms), ``io`` (medical image reading/writing),
``networks`` (UNet++), ``losses``, ``inference``, ``export``, ``tracking``, ``zoo`` (Model Zoo layout).
``cli`` holds the thin command-line front end (``python -m pipeline --help``).

Heavy dependencies (torch, MONAI) are imported by the sub-packages that need them, never here, so that
``python -m pipeline synth`` starts in well under a second.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__version__ = "0.1.0"
__all__ = ["__version__"]

_SUBPACKAGES = ("cli", "data", "errors", "export", "inference", "io", "losses", "networks", "tracking", "training",
                "transforms", "zoo")


def __getattr__(name: str) -> ModuleType:
    """Import sub-packages on first use, so that ``import pipeline`` then ``pipeline.training.x`` works (as bundle
    configs write it) without importing torch and MONAI up front."""
    if name in _SUBPACKAGES:
        return importlib.import_module(f"pipeline.{name}")
    raise AttributeError(f"module 'pipeline' has no attribute '{name}'")
