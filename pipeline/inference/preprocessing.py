"""Rebuild a bundle's deterministic preprocessing from an exported model's metadata, with MONAI's transforms.

The deployed job runs the same transform classes, with the same parameters, as the bundle did in training and
validation (the metadata was read off those very objects, see :mod:`pipeline.export.metadata`), so its inputs
are prepared exactly as in training, and MONAI's ``Invertd`` puts predictions back on the input's grid.

Example:
    >>> chain = build_preprocessing(meta)                                  # doctest: +SKIP
    >>> data = chain({"image": metatensor})                                # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureTyped,
    NormalizeIntensityd,
    Orientationd,
    ScaleIntensityRanged,
    Spacingd,
)

from pipeline.io.geometry import Geometry
from pipeline.transforms import ForegroundThreshold

__all__ = ["build_preprocessing", "to_metatensor"]

_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def _step(step: Mapping[str, Any], key: str) -> object:
    kind = step["kind"]
    if kind == "orient":
        return Orientationd(keys=key, axcodes=step["axcodes"], labels=_LABELS)
    if kind == "resample":
        return Spacingd(keys=key, pixdim=step["pixdim"], mode=step.get("mode", "bilinear"))
    if kind == "zscore":
        return NormalizeIntensityd(keys=key, nonzero=step["nonzero"], channel_wise=step["channel_wise"])
    if kind == "window":
        return ScaleIntensityRanged(keys=key, a_min=step["a_min"], a_max=step["a_max"], b_min=step["b_min"],
                                    b_max=step["b_max"], clip=step["clip"])
    if kind == "crop_foreground":
        return CropForegroundd(keys=key, source_key=key, select_fn=ForegroundThreshold(step["threshold"]),
                               margin=step["margin"], allow_smaller=True)
    raise ValueError(f"model metadata names an unknown preprocessing step '{kind}' (known: orient, resample, "
                     "zscore, window, crop_foreground); export the model with this version of the pipeline")


def build_preprocessing(metadata: Mapping[str, Any], key: str = "image") -> Compose:
    """The MONAI ``Compose`` that the metadata's ``preprocessing.steps`` describe, applied to ``key``.

    Raises:
        ValueError: an unknown step.
    """
    steps = metadata.get("preprocessing", {}).get("steps", [])
    return Compose([_step(s, key) for s in steps] + [EnsureTyped(keys=key, dtype=torch.float32)])


def to_metatensor(array: np.ndarray, geometry: Geometry, source: str = "") -> MetaTensor:
    """Channel-first MetaTensor of a scalar volume (index order x, y, z) with its RAS affine, as MONAI's
    ``LoadImaged(reader="ITKReader")`` + ``EnsureChannelFirstd`` would give.

    Args:
        array: the voxels, ``geometry.shape`` (a trailing component axis becomes channels).
        geometry: the grid.
        source: file name recorded in the metadata. Defaults to ``""``.
    """
    data = np.asarray(array, dtype=np.float32)
    data = data[None] if data.ndim == geometry.ndim else np.moveaxis(data, -1, 0)
    dims = geometry.ndim
    affine = geometry.affine if dims == 3 else np.delete(np.delete(geometry.affine, 2, 0), 2, 1)
    meta = {"filename_or_obj": source, "spatial_shape": np.asarray(geometry.shape), "space": "RAS",
            "original_affine": torch.as_tensor(affine, dtype=torch.float64)}
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(data)), affine=torch.as_tensor(affine, dtype=torch.float64),
                      meta=meta)
