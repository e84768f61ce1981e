"""TorchScript export with the model card embedded, verified against the eager model.

The file is ``torch.jit.script`` of the network in eval mode at the chosen level (the level stays a settable
attribute of the scripted module, so a deployment can still switch it), with the model card stored as the
TorchScript extra file ``model_card.json`` (:mod:`pipeline.deploy.files` reads it back). It is written to a temporary
file and renamed into place only after the reloaded file's output matched the eager model's on a test input. The same
network, card and settings give the same bytes.

Example:
    >>> result = export_torchscript(net, "model.ts", card, level=2)                # doctest: +SKIP
    >>> result.max_abs_diff < 1e-4                                                 # doctest: +SKIP
    True
    >>> module, card = load_torchscript("model.ts")                                # doctest: +SKIP
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import torch

from pipeline.deploy.card import ExportRecord, ModelCard
from pipeline.deploy.device import resolve_device
from pipeline.deploy.files import EMBEDDED_CARD
from pipeline.errors import PipelineError
from pipeline.export.common import ExportResult, check_destination, check_parity, parity_input, prepare
from pipeline.io.atomic import atomic_path

__all__ = ["export_torchscript"]

logger = logging.getLogger(__name__)


def export_torchscript(network: torch.nn.Module, out: str | os.PathLike, card: ModelCard, level: int | None = None,
                       device: str | torch.device = "cpu", half: bool = False, tolerance: float | None = None) -> \
        ExportResult:
    """Script ``network`` at ``level``, embed ``card``, check parity, write ``out`` atomically.

    Args:
        network: a ``UNetPlusPlus`` (any scriptable module returning one tensor in eval mode).
        out: destination ``.ts`` file.
        card: the model card; the embedded copy is its :meth:`~pipeline.deploy.card.ModelCard.shareable` form (no case
            ids) with the level exported and an ``export`` section.
        level: inference level; None keeps the network's. Defaults to None.
        device: where to script and check (the file loads on any device with ``map_location``).
            Defaults to ``"cpu"``.
        half: store fp16 weights (CUDA only). Defaults to False.
        tolerance: largest accepted |scripted - eager|. Defaults to 1e-4 (fp32) or 1e-2 (fp16).

    Raises:
        PipelineError: a destination that cannot be written (:func:`~pipeline.export.common.check_destination`), or
            CUDA or half precision asked for where unavailable.
        ExportError: the reloaded file's output differs from the eager model's beyond ``tolerance``.
    """
    check_destination(out)
    dev = resolve_device(device)
    if half and dev.type != "cuda":
        raise PipelineError("half precision export needs --device cuda (fp16 convolutions are not supported well on "
                            "CPU); export fp32 for CPU deployments")
    dtype = torch.float16 if half else torch.float32
    tol = tolerance if tolerance is not None else (1e-2 if half else 1e-4)
    record = ExportRecord(precision="fp16" if half else "fp32", device=str(dev), format="torchscript")
    net, embedded = prepare(network, card, level, dev, dtype, record)
    scripted = torch.jit.script(net)
    dest = Path(out)
    buffer = io.BytesIO()  # saved to a buffer: a file's archive would be named after its temporary name
    torch.jit.save(scripted, buffer, _extra_files={EMBEDDED_CARD: embedded.to_json()})
    with atomic_path(dest) as tmp:
        tmp.write_bytes(buffer.getvalue())
        x = parity_input(net, embedded, dev, dtype)
        reloaded = torch.jit.load(str(tmp), map_location=dev).eval()
        diff = check_parity(net, reloaded, x, tol, "torchscript")
    return ExportResult(dest, diff, tuple(x.shape), embedded)
