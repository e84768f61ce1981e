"""The exported TorchScript model as an MLflow model: a ``pyfunc`` with an input/output signature.

The MLflow model folder holds ``MLmodel`` (flavour, signature, the model card), the TorchScript file (and the
export's ``model_card.json`` when it lies beside it) as artifacts, and this package's code
(``code/pipeline``), so that ``mlflow.pyfunc.load_model(...)`` needs only torch, numpy and mlflow where it runs;
MONAI is not imported.

``predict`` takes one volume in the voxel order of :mod:`pipeline.io` (``(X, Y, Z)``, or ``(X, Y, Z, C)`` for a
multi-channel model, float32) and returns its ``uint8`` label map on the same grid: the model's own
preprocessing (reorientation, resampling, normalisation) and its inverse run inside. The grid is given as
params: ``affine`` (16 numbers, row-major 4x4, RAS; a 2D model takes a 3x3 too) or ``spacing`` (a RAS-aligned grid
with that voxel size);
neither means the array is already on the model's target spacing.

Example:
    >>> save_mlflow_model("models/export/model.ts", "mlflow_model")                  # doctest: +SKIP
    >>> model = mlflow.pyfunc.load_model("models:/unetpp_mri_segmentation@best")      # doctest: +SKIP
    >>> labels = model.predict(volume.astype("float32"), params={"spacing": [1.0, 1.0, 1.0]})  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import torch
from mlflow.models.signature import ModelSignature
from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

from pipeline.deploy.card import ModelCard
from pipeline.deploy.files import load_torchscript
from pipeline.errors import PipelineError
from pipeline.inference.predictor import Predictor
from pipeline.inference.preprocess import Preprocessor

__all__ = ["SegmentationModel", "model_signature", "save_mlflow_model"]

logger = logging.getLogger(__name__)

_PACKAGE = Path(__file__).resolve().parents[1]


def _target_spacing(card: ModelCard) -> list[float]:
    """The model's target spacing: the default grid of an input given without ``affine`` or ``spacing``."""
    target = card.target_spacing or []
    return target[: card.image_dims] if len(target) >= card.image_dims else [1.0] * card.image_dims


def model_signature(card: ModelCard) -> ModelSignature:
    """Input/output signature of a model from its card.

    Args:
        card: the exported model's card.

    Returns:
        float32 ``(X, Y[, Z][, C])`` in, uint8 label map ``(X, Y[, Z])`` out; params ``spacing``, ``affine``, ``tta``.
    """
    dims, channels = card.image_dims, card.network.in_channels
    spatial = (-1,) * dims
    # unnamed tensors: predict() then receives the array itself, not a {"name": array} dict
    image = TensorSpec(np.dtype(np.float32), spatial + ((channels,) if channels > 1 else ()))
    labels = TensorSpec(np.dtype(np.uint8), spatial)
    spacing = _target_spacing(card)
    params = ParamSchema([ParamSpec("spacing", "double", spacing, (-1,)), ParamSpec("affine", "double", [], (-1,)),
                          ParamSpec("tta", "boolean", False)])
    return ModelSignature(inputs=Schema([image]), outputs=Schema([labels]), params=params)


def _affine(params: Mapping[str, Any], dims: int, default_spacing: list[float]) -> np.ndarray:
    """The 4x4 RAS affine of the input grid (a 2D grid's third axis is a unit axis, as :mod:`pipeline.io` has it)."""
    affine = list(params.get("affine") or [])
    if affine:
        sizes = {16, (dims + 1) ** 2}
        if len(affine) not in sizes:
            raise ValueError(f"param 'affine' must hold {' or '.join(map(str, sorted(sizes)))} numbers (a row-major "
                             f"square matrix), got {len(affine)}")
        matrix = np.asarray(affine, dtype=float).reshape(int(len(affine) ** 0.5), -1)
        if len(matrix) == 4:
            return matrix
        full = np.eye(4)  # a 2D grid's 3x3 affine: rows and columns of the in-plane axes and the translation
        full[np.ix_([0, 1, 3], [0, 1, 3])] = matrix
        return full
    spacing = [float(s) for s in (params.get("spacing") or default_spacing)]
    if len(spacing) != dims or min(spacing) <= 0:
        raise ValueError(f"param 'spacing' must be {dims} positive voxel sizes in mm, got {spacing}")
    return np.diag([*spacing, *[1.0] * (3 - dims), 1.0])


class SegmentationModel(mlflow.pyfunc.PythonModel):
    """MLflow ``pyfunc`` over an exported TorchScript model (artifact ``torchscript``); see the module docstring.

    Example:
        >>> mlflow.pyfunc.save_model("m", python_model=SegmentationModel(),
        ...                          artifacts={"torchscript": "model.ts"})            # doctest: +SKIP
    """

    def load_context(self, context: Any) -> None:
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        source = context.artifacts["torchscript"]
        self.module, self.card = load_torchscript(source, self.device)
        if self.card.export is not None and self.card.export.precision == "fp16" and self.device == "cpu":
            raise PipelineError(f"'{source}': this model was exported in fp16 for CUDA and this machine has no CUDA "
                                "device: serve an fp32 export here")
        self.preprocess = Preprocessor(self.card)
        self.predictors: dict[bool, Predictor] = {}  # built on first use: each one optimises (freezes) the module
        self.dims, self.channels = self.card.image_dims, self.card.network.in_channels

    def _predictor(self, tta: bool) -> Predictor:
        if tta not in self.predictors:
            self.predictors[tta] = Predictor(self.module, self.card, device=self.device, tta=tta)
        return self.predictors[tta]

    def predict(self, context: Any, model_input, params: dict[str, Any] | None = None) -> np.ndarray:
        """Label map of one volume (``model_input`` has no type hint: MLflow would read one as an input schema).

        Args:
            context: MLflow's model context (unused after loading).
            model_input: ``(X, Y[, Z])`` or, for a multi-channel model, ``(X, Y[, Z], C)`` intensities.
            params: ``spacing``, ``affine``, ``tta`` (see the module docstring). Defaults to None.

        Returns:
            ``uint8`` label ids on the input's grid.

        Raises:
            ValueError: an input of the wrong rank or channel count, or a malformed grid.
        """
        params = dict(params or {})
        if isinstance(model_input, Mapping) and len(model_input) == 1:  # a named tensor, as some clients send it
            model_input = next(iter(model_input.values()))
        array = np.asarray(model_input, dtype=np.float32)
        expected = self.dims + (1 if self.channels > 1 else 0)
        if array.ndim != expected or (self.channels > 1 and array.shape[-1] != self.channels):
            raise ValueError(f"this model takes a {self.dims}D volume with {self.channels} channel(s) "
                             f"(array of {expected} axes, channels last), got shape {array.shape}")
        image, state = self.preprocess(array, _affine(params, self.dims, _target_spacing(self.card)),
                                       spatial_dims=self.dims)
        probs = self._predictor(bool(params.get("tta", False)))(image)
        restored = self.preprocess.invert(probs[0], state)
        return torch.argmax(restored, dim=0).to(torch.uint8).numpy()


def _requirements() -> list[str]:
    import mlflow

    torch_version = torch.__version__.split("+")[0]
    major_minor = ".".join(torch_version.split(".")[:2])
    return [f"torch>={major_minor}", f"numpy>={np.__version__.split('.')[0]}", f"mlflow=={mlflow.__version__}"]


def save_mlflow_model(torchscript: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Write an MLflow pyfunc model folder around an exported TorchScript file.

    Args:
        torchscript: a file from :func:`pipeline.export.export_torchscript` (card embedded).
        path: the new model folder; must not exist or be empty.

    Returns:
        The folder (``MLmodel``, ``artifacts/``, ``code/pipeline``, requirements).

    Raises:
        PipelineError: the file is not an exported model.
    """
    _, card = load_torchscript(torchscript)
    with tempfile.TemporaryDirectory() as tmp:
        readable = Path(tmp) / "model_card.json"  # the embedded card, readable next to the model
        readable.write_text(card.to_json())
        artifacts = {"torchscript": str(torchscript), "model_card": str(readable)}
        code = Path(tmp) / "pipeline"  # the package without caches, so the model loads where it is not installed
        shutil.copytree(_PACKAGE, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        mlflow.pyfunc.save_model(
            path=str(path), python_model=SegmentationModel(), artifacts=artifacts,
            code_paths=[str(code)], signature=model_signature(card), pip_requirements=_requirements(),
            metadata={"model_card": card.to_dict()})
    logger.info("wrote the MLflow model %s", path)
    return Path(path)
