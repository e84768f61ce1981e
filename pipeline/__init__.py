"""UNet++ segmentation pipeline for CT and MRI on MONAI.

Sub-packages: ``data`` (datalists, folds, synthetic phantoms), ``io`` (medical image reading/writing),
``networks`` (UNet++), ``losses``, ``inference``, ``export``, ``tracking``. ``cli`` holds the thin
command-line front end (``python -m pipeline --help``).

Heavy dependencies (torch, MONAI) are imported by the sub-packages that need them, never here, so that
``python -m pipeline synth`` starts in well under a second.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
