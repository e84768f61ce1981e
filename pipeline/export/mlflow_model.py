"""The exported TorchScript model as an MLflow model: a ``pyfunc`` with a signature, an input example and the card.

The MLflow model folder holds ``MLmodel`` (flavour, signature, the model card as metadata), the TorchScript file
(and the export's ``model_card.json``) as artifacts, a tiny input example with its serving request, and this
package's code (``code/pipeline``), so that ``mlflow.pyfunc.load_model(...)`` needs only torch, numpy and mlflow
where it runs; MONAI is not imported. :func:`pyfunc_arguments` defines that folder once: :func:`save_mlflow_model`
writes it to a path and :func:`pipeline.tracking.log_pyfunc_model` logs it as an MLflow logged model.

``predict`` takes one volume in the voxel order of :mod:`pipeline.io`: ``(X, Y, Z)``, or ``(X, Y, Z, C)`` for a
multi-channel model (``(X, Y)`` for a 2D model). Any real dtype (int16 CT, uint8, bool, float64...) is cast to
float32. An extra axis of size 1 is dropped where that is unambiguous: a leading batch axis (``(1, X, Y, Z)``) and,
for a one-channel model, a trailing channel axis (``(X, Y, Z, 1)``); a multi-channel model takes its channels last.
A wrong shape is refused with one line that names the expected and the given shape (MLflow's own input schema
is left open, because its enforcement refuses any dtype but the declared one and prints the whole array).

The grid must be given as params, since a bare array has none: ``affine`` (16 numbers, the row-major 4x4 RAS
voxel-to-world matrix, as ``read_image(...).geometry.affine``; a 2D model takes a 3x3 too) or ``spacing`` (voxel
sizes in mm of a RAS-aligned grid). Without either, ``predict`` refuses with one line naming both: guessing
(RAS at the model's target spacing) silently gave a different label map from ``pipeline segment`` on most files.
``tta`` (default false) turns on mirroring. The model's own preprocessing and its inverse run inside, so the
``uint8`` label map lies on the input's grid; the postprocessing the card records (:mod:`pipeline.deploy.postprocess`)
is applied to it, as ``pipeline segment`` does.

Example:
    >>> save_mlflow_model("models/export/model.ts", "mlflow_model")                  # doctest: +SKIP
    >>> model = mlflow.pyfunc.load_model("models:/unetpp_mri_segmentation@best")      # doctest: +SKIP
    >>> labels = model.predict(volume, params={"affine": affine.ravel().tolist()})    # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import torch
from mlflow.models.signature import ModelSignature
from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

from pipeline.deploy.card import ModelCard
from pipeline.deploy.files import load_torchscript
from pipeline.deploy.postprocess import apply
from pipeline.errors import PipelineError
from pipeline.inference.predictor import Predictor
from pipeline.inference.preprocess import Preprocessor

__all__ = ["SegmentationModel", "input_example", "model_signature", "pyfunc_arguments", "save_mlflow_model"]

logger = logging.getLogger(__name__)

_PACKAGE = Path(__file__).resolve().parents[1]
_EXAMPLE_SIZE = 8  # voxels per axis of the input example: small, so logging and MLflow's check of it stay fast


def _target_spacing(card: ModelCard) -> list[float]:
    """The model's target spacing (what the input example declares as its grid)."""
    target = card.target_spacing or []
    return target[: card.image_dims] if len(target) >= card.image_dims else [1.0] * card.image_dims


def model_signature(card: ModelCard) -> ModelSignature:
    """Signature of a model from its card: uint8 label map ``(X, Y[, Z])`` out, params ``spacing``, ``affine``, ``tta``.

    The input has no schema: MLflow's tensor enforcement accepts only the declared dtype and rank (an int16 CT
    volume or a ``(1, X, Y, Z)`` array would be refused with the whole array in the message), so ``predict``
    checks the input itself; the input example shows its form. ``spacing`` and ``affine`` default to empty lists,
    which MLflow fills in when a request omits them, so that ``predict`` can tell "not given".

    Args:
        card: the exported model's card.

    Returns:
        The signature.

    Example:
        >>> [p.name for p in model_signature(card).params]                   # doctest: +SKIP
        ['spacing', 'affine', 'tta']
    """
    labels = TensorSpec(np.dtype(np.uint8), (-1,) * card.image_dims)
    params = ParamSchema([ParamSpec("spacing", "double", [], (-1,)), ParamSpec("affine", "double", [], (-1,)),
                          ParamSpec("tta", "boolean", False)])
    return ModelSignature(inputs=None, outputs=Schema([labels]), params=params)


def input_example(card: ModelCard) -> tuple[np.ndarray, dict[str, Any]]:
    """A tiny input (8 voxels per axis, channels last) with its grid, saved with the model as MLflow's example.

    Args:
        card: the exported model's card.

    Returns:
        ``(array, params)``: a float32 ramp and ``{"spacing": <the model's target spacing>}``.

    Example:
        >>> array, params = input_example(card)                               # doctest: +SKIP
    """
    channels = card.network.in_channels
    shape = (_EXAMPLE_SIZE,) * card.image_dims + ((channels,) if channels > 1 else ())
    array = (np.arange(int(np.prod(shape))) % 7).reshape(shape).astype(np.float32)
    return array, {"spacing": _target_spacing(card)}


def _unit_axes_dropped(shape: tuple[int, ...], rank: int, trailing: bool) -> set[tuple[int, ...]]:
    """The shapes of rank ``rank`` left after dropping size-1 axes at the start (and at the end if ``trailing``)."""
    extra = len(shape) - rank
    if extra <= 0:
        return {shape} if extra == 0 else set()
    found = set()
    for lead in range(extra + 1):
        trail = extra - lead
        dropped = shape[:lead] + shape[len(shape) - trail:]
        if (trailing or not trail) and all(n == 1 for n in dropped):
            found.add(shape[lead: len(shape) - trail])
    return found


def _volume(model_input: Any, dims: int, channels: int) -> np.ndarray:
    """The input as a float32 ``(X, Y[, Z][, C])`` array; one-line errors that never print the data."""
    if isinstance(model_input, Mapping) and len(model_input) == 1:  # a named tensor, as some clients send it
        model_input = next(iter(model_input.values()))
    try:
        array = np.asarray(model_input)
        if array.dtype == object:  # e.g. a list of arrays
            array = array.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError("the input must be an array of numbers (in a request: nested lists of equal "
                         "lengths)") from None
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
            or array.dtype == bool):
        raise ValueError(f"the input must hold real numbers, got dtype {array.dtype}")
    axes = ("X", "Y", "Z")[:dims] + ((str(channels),) if channels > 1 else ())
    wanted = f"({', '.join(axes)})"
    shapes = {s for s in _unit_axes_dropped(array.shape, len(axes), trailing=channels == 1)
              if channels == 1 or s[-1] == channels}
    if not shapes:
        batch = f"(1, {', '.join(axes)})"
        accepted = f"{wanted}, {batch} or ({', '.join(axes)}, 1)" if channels == 1 else \
            f"{wanted} (channels last) or {batch}"
        plural = "s" if channels > 1 else ""
        raise ValueError(f"this model takes a {dims}D volume with {channels} channel{plural}: shape {accepted}; "
                         f"got shape {array.shape}")
    if len(shapes) > 1:
        raise ValueError(f"input shape {array.shape} is ambiguous for this model's {wanted}: it could be "
                         f"{' or '.join(map(str, sorted(shapes)))}; drop the axes of size 1 that are not spatial")
    shape = shapes.pop()
    if min(shape) < 1:
        raise ValueError(f"the input is empty: shape {array.shape}")
    return np.ascontiguousarray(array.reshape(shape), dtype=np.float32)


def _affine(params: Mapping[str, Any], dims: int, target: list[float]) -> np.ndarray:
    """The 4x4 RAS affine of the input grid (a 2D grid's third axis is a unit axis, as :mod:`pipeline.io` has it)."""
    affine = list(params.get("affine") or [])
    spacing = list(params.get("spacing") or [])
    if not affine and not spacing:
        raise ValueError(f"give the input's grid in params: 'affine' (16 numbers, the row-major 4x4 RAS "
                         f"voxel-to-world matrix) or 'spacing' ({dims} voxel sizes in mm of a RAS-aligned grid; this "
                         f"model resamples to {target})")
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
    spacing = [float(s) for s in spacing]
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
            model_input: ``(X, Y[, Z])`` or, for a multi-channel model, ``(X, Y[, Z], C)`` numbers of any real
                dtype; a leading batch axis of size 1 (and a trailing channel axis of size 1) is dropped.
            params: ``affine`` or ``spacing`` (one is required), ``tta`` (see the module docstring). Defaults to None.

        Returns:
            ``uint8`` label ids on the input's grid.

        Raises:
            ValueError: an input that is not one volume of this model's shape, or a missing or malformed grid.

        Example:
            >>> model.predict(volume, params={"spacing": [1.0, 1.0, 1.0]})   # doctest: +SKIP
        """
        params = dict(params or {})
        array = _volume(model_input, self.dims, self.channels)
        affine = _affine(params, self.dims, _target_spacing(self.card))
        image, state = self.preprocess(array, affine, spatial_dims=self.dims)
        probs = self._predictor(bool(params.get("tta", False)))(image)
        restored = self.preprocess.invert(probs[0], state)
        return apply(torch.argmax(restored, dim=0).to(torch.uint8).numpy(), self.card.postprocessing)


def _requirements() -> list[str]:
    torch_version = torch.__version__.split("+")[0]
    major_minor = ".".join(torch_version.split(".")[:2])
    return [f"torch>={major_minor}", f"numpy>={np.__version__.split('.')[0]}", f"mlflow=={mlflow.__version__}"]


@contextmanager
def pyfunc_arguments(torchscript: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """The arguments of ``mlflow.pyfunc.save_model`` / ``log_model`` for an exported file: the one definition of
    the MLflow model folder (the temporary files they name live until the ``with`` block ends).

    Args:
        torchscript: a file from :func:`pipeline.export.export_torchscript` (card embedded).

    Yields:
        ``python_model``, ``artifacts``, ``code_paths``, ``signature``, ``input_example``, ``pip_requirements``
        and ``metadata`` (``{"model_card": ...}``).

    Raises:
        PipelineError: the file is not an exported model.

    Example:
        >>> with pyfunc_arguments("model.ts") as kwargs:                        # doctest: +SKIP
        ...     mlflow.pyfunc.save_model("mlflow_model", **kwargs)
    """
    _, card = load_torchscript(torchscript)
    with tempfile.TemporaryDirectory() as tmp:
        readable = Path(tmp) / "model_card.json"  # the embedded card, readable next to the model
        readable.write_text(card.to_json())
        code = Path(tmp) / "pipeline"  # the package without caches, so the model loads where it is not installed
        shutil.copytree(_PACKAGE, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        yield {"python_model": SegmentationModel(),
               "artifacts": {"torchscript": str(torchscript), "model_card": str(readable)},
               "code_paths": [str(code)], "signature": model_signature(card), "input_example": input_example(card),
               "pip_requirements": _requirements(), "metadata": {"model_card": card.to_dict()}}


def save_mlflow_model(torchscript: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Write an MLflow pyfunc model folder around an exported TorchScript file.

    Args:
        torchscript: a file from :func:`pipeline.export.export_torchscript` (card embedded).
        path: the new model folder; must not exist or be empty.

    Returns:
        The folder (``MLmodel``, ``artifacts/``, ``code/pipeline``, input example, requirements).

    Raises:
        PipelineError: the file is not an exported model.

    Example:
        >>> save_mlflow_model("models/export/model.ts", "mlflow_model")        # doctest: +SKIP
    """
    with pyfunc_arguments(torchscript) as kwargs:
        mlflow.pyfunc.save_model(path=str(path), **kwargs)
    logger.info("wrote the MLflow model %s", path)
    return Path(path)
