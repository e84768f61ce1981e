"""UNet++ segmentation pipeline for CT and MRI on MONAI.

Sub-packages, each imported where it is used (``import pipeline.training``): ``deploy`` (the model card and the
MONAI-free deployment core), ``data`` (datalists, folds, synthetic phantoms), ``io`` (medical image reading and
writing), ``networks`` (UNet++), ``losses``, ``transforms``, ``training``, ``inference``, ``export``, ``tracking``,
``planning``, ``zoo`` (Model Zoo layout). ``cli`` holds the thin command-line front end (``python -m pipeline
--help``). Which may import which is written in ``pyproject.toml`` (``[tool.importlinter]``) and checked by ``make
lint``.

Nothing heavy is imported here, so that ``python -m pipeline synth`` starts in well under a second.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
