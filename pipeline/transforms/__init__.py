"""Only what MONAI's transforms lack; the transform chains themselves live in the bundle configs."""

from __future__ import annotations

from pipeline.transforms.foreground import ForegroundThreshold

__all__ = ["ForegroundThreshold"]
