"""ONNX export with the model card embedded, verified against the eager model through ONNX Runtime.

The file is the network in eval mode at one level (the card's, or ``level``: an ONNX graph holds one level), fp32,
exported by torch's exporter (``torch.onnx.export(..., dynamo=True)``, which needs ``onnxscript``) with a dynamic
batch axis and dynamic spatial axes. A UNet++'s spatial axes are declared as multiples of the smallest size its
level takes (e.g. ``16*n0`` at level 4), the sizes on which the traced graph equals the network; the sliding window
only ever feeds it windows of the card's ``roi_size``, which must be such multiples. The model card (the same JSON a
``.ts`` file embeds, with ``export.format`` ``onnx``) is stored in the model's ``metadata_props`` under
``model_card.json``. The file is written to a temporary name, checked with ``onnx.checker``, loaded back the way
``segment`` loads it (:func:`pipeline.deploy.runtime.load_onnx`, ONNX Runtime on the CPU) and compared with the
eager network on the test input; only then is it renamed into place.

The exporter runs on the CPU whatever ``device`` is asked (the graph does not depend on it). fp16 (``half``) is a
TorchScript export for CUDA; for TensorRT on CUDA see MONAI's ``trt_export`` (docs/deploy.md).

Example:
    >>> result = export_onnx(net, "model.onnx", card, level=2)                      # doctest: +SKIP
    >>> result.max_abs_diff < 1e-4                                                  # doctest: +SKIP
    True
    >>> module, card = load_onnx("model.onnx")                                      # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any

import torch

from pipeline.deploy.card import ExportRecord, ModelCard
from pipeline.deploy.files import EMBEDDED_CARD
from pipeline.deploy.runtime import load_onnx
from pipeline.errors import PipelineError
from pipeline.export.common import ExportError, ExportResult, check_destination, check_parity, parity_input, prepare
from pipeline.io.atomic import atomic_path

__all__ = ["ONNX_EXPORT_INSTALL", "OPSET", "export_onnx"]

logger = logging.getLogger(__name__)

#: The ONNX operator set written (ONNX Runtime 1.17 and later run it).
OPSET = 20
#: What to install for the export (named in the error where it is missing).
ONNX_EXPORT_INSTALL = "pip install onnx onnxscript onnxruntime (or the project's extra: pip install " \
                      "'unetpp-pipeline[onnx]')"


def _steps(network: torch.nn.Module, x: torch.Tensor) -> list[int]:
    """The size each spatial axis must be a multiple of: the smallest input of the network's level (1 for a network
    that does not say)."""
    sizes = getattr(network, "min_input_size", None)
    if sizes is None:
        return [1] * (x.ndim - 2)
    steps = [int(s) for s in sizes(int(getattr(network, "level", 0) or 0) or None)]
    roi = list(x.shape[2:])
    if any(r % s for r, s in zip(roi, steps)):
        raise PipelineError(f"ONNX export needs a window size (the model card's roi_size) that is a multiple of "
                            f"{steps} per axis (the smallest input of the level exported; the network pads other "
                            f"sizes, which one ONNX graph cannot do for every size), got {roi}: export TorchScript "
                            "(.ts) instead")
    return steps


def _dynamic(x: torch.Tensor, steps: list[int]) -> tuple[torch.Tensor, tuple[dict[int, Any]]]:
    """An example input for the exporter (batch 2, and at least two steps per axis, so that no axis is traced as a
    constant 1) and its dynamic shapes: the batch, and each spatial axis as a multiple of its step."""
    from torch.export import Dim

    shapes: dict[int, Any] = {0: Dim("batch", min=1)}
    for axis, step in enumerate(steps):
        shapes[axis + 2] = step * Dim(f"n{axis}", min=1) if step > 1 else Dim(f"size{axis}", min=1)
    repeats = [2, 1] + [1 if size // step >= 2 else 2 for size, step in zip(x.shape[2:], steps)]
    return x.repeat(*repeats), (shapes,)


def _check_packages() -> None:
    """Refuse, before any work, an export whose packages are missing: onnx (the checker), onnxscript (torch's
    exporter imports it, and fails deep inside without it) and onnxruntime (the parity check)."""
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            importlib.import_module(name)
        except ImportError:
            raise PipelineError(f"ONNX export needs onnx, onnxscript and onnxruntime ({name} is missing): "
                                f"{ONNX_EXPORT_INSTALL}") from None


def _export_proto(net: torch.nn.Module, x: torch.Tensor, steps: list[int], card_json: str) -> Any:
    """The ONNX ModelProto of ``net`` with dynamic axes and the card in its ``metadata_props``."""
    example, shapes = _dynamic(x, steps)
    try:
        program = torch.onnx.export(net, (example,), dynamo=True, input_names=["image"], output_names=["logits"],
                                    dynamic_shapes=shapes, opset_version=OPSET, external_data=False, verbose=False)
    except Exception as exc:  # whatever the tracer or a converter raised: the network cannot be written as ONNX
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"the network cannot be exported to ONNX: {reason[:300]}: export TorchScript (.ts) "
                          "instead") from exc
    proto = program.model_proto
    for index in reversed(range(len(proto.metadata_props))):
        if proto.metadata_props[index].key == EMBEDDED_CARD:
            del proto.metadata_props[index]
    entry = proto.metadata_props.add()
    entry.key, entry.value = EMBEDDED_CARD, card_json
    return proto


def _write_checked(proto: Any, tmp: Path) -> None:
    """Save ``proto`` to ``tmp`` and run ``onnx.checker`` on the file (full check: types and shapes too)."""
    import onnx

    onnx.save_model(proto, str(tmp))
    try:
        onnx.checker.check_model(str(tmp), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the exported ONNX model does not pass onnx.checker: {str(exc).splitlines()[0]}; the "
                          "file was not written") from exc


def export_onnx(network: torch.nn.Module, out: str | os.PathLike, card: ModelCard, level: int | None = None,
                device: str | torch.device = "cpu", half: bool = False, tolerance: float | None = None) -> ExportResult:
    """Export ``network`` at ``level`` to ONNX, embed ``card``, check parity through ONNX Runtime, write ``out``
    atomically.

    Args:
        network: a ``UNetPlusPlus`` (any module returning one tensor in eval mode that torch's exporter takes).
        out: destination ``.onnx`` file.
        card: the model card; the embedded copy is its :meth:`~pipeline.deploy.card.ModelCard.shareable` form with
            the level exported and an ``export`` section (``format`` ``onnx``, ``precision`` ``fp32``).
        level: inference level; None keeps the network's. Defaults to None.
        device: ignored but for a log line: the export traces and checks on the CPU. Defaults to ``"cpu"``.
        half: refused (fp16 is a TorchScript export for CUDA). Defaults to False.
        tolerance: largest accepted |ONNX Runtime - eager|. Defaults to 1e-4.

    Raises:
        PipelineError: a destination that cannot be written, the export's packages missing (one line naming what to
            install), ``half``, or a window size the graph cannot take; all before the export runs.
        ExportError: the exporter refused the network, the file failed ``onnx.checker``, or its output differs from
            the eager model's beyond ``tolerance``.

    Example:
        >>> export_onnx(UNetPlusPlus(3, 1, 3), "m.onnx", card, level=2).card.export.format      # doctest: +SKIP
        'onnx'
    """
    check_destination(out)
    _check_packages()
    if half:
        raise PipelineError("an ONNX export is fp32 (--half makes an fp16 TorchScript export for CUDA): drop --half, "
                            "or export to a .ts file")
    if str(device) != "cpu":
        logger.info("ONNX export traces and checks on the CPU (asked for '%s'); the file runs on any device", device)
    cpu = torch.device("cpu")
    net, embedded = prepare(network, card, level, cpu, torch.float32, ExportRecord("fp32", "cpu", "onnx"))
    x = parity_input(net, embedded, cpu, torch.float32)
    proto = _export_proto(net, x, _steps(net, x), embedded.to_json())
    dest = Path(out)
    with atomic_path(dest, suffix=dest.suffix) as tmp:
        _write_checked(proto, tmp)
        module, _ = load_onnx(tmp)
        diff = check_parity(net, module, x, 1e-4 if tolerance is None else tolerance, "onnx")
    return ExportResult(dest, diff, tuple(x.shape), embedded)
