"""Reload keys from the files they came from, as stored: the grid that ``Invertd`` returns predictions to.

Evaluation on each case's original grid (as MONAI's Model Zoo and nnU-Net score) inverts the prediction with
``Invertd``; the label must then be the file's own voxels, not the resampled label inverted back, which
nearest-neighbour resampling would have changed wherever the target spacing is coarser than the file's.

Example (``evaluate.json``, after ``Invertd`` of ``pred``)::

    {"_target_": "pipeline.transforms.LoadOriginald", "keys": "label", "reader": "@preprocessing#0#reader"}
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImage, MapTransform

__all__ = ["LoadOriginald"]


class LoadOriginald(MapTransform):
    """Replace each key by the image its ``meta["filename_or_obj"]`` names, loaded channel first and otherwise
    untouched (no reorientation, resampling or crop).

    Args:
        keys: keys of loaded images (MetaTensors) or of file paths.
        reader: the reader the preprocessing loaded them with, so that the array layout matches. Defaults to
            ``"ITKReader"``.
        allow_missing_keys: skip absent keys. Defaults to False.

    Raises:
        ValueError: an item names no source file.
    """

    def __init__(self, keys: KeysCollection, reader: str = "ITKReader", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadImage(reader=reader, image_only=True, ensure_channel_first=True)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            source = value.meta.get("filename_or_obj") if isinstance(value, MetaTensor) else value
            if not isinstance(source, str) or not source:
                raise ValueError(f"'{key}': the original file must be known (meta 'filename_or_obj') to evaluate "
                                 f"on its grid, got {source!r}")
            d[key] = self.loader(source)
        return d
