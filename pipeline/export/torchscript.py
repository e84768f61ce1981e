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
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.deploy.card import ExportRecord, ModelCard
from pipeline.deploy.device import resolve_device
from pipeline.deploy.files import EMBEDDED_CARD
from pipeline.errors import PipelineError
from pipeline.io.atomic import atomic_path

__all__ = ["ExportError", "ExportResult", "check_destination", "export_torchscript"]

logger = logging.getLogger(__name__)


class ExportError(PipelineError, RuntimeError):
    """Export failed its parity check or could not be written."""


@dataclass
class ExportResult:
    """Args:
        path: the file written.
        max_abs_diff: largest |scripted - eager| on the test input.
        input_shape: shape of the test input.
        card: the card embedded (with its ``export`` section and the level exported).
    """

    path: Path
    max_abs_diff: float
    input_shape: tuple[int, ...]
    card: ModelCard


def check_destination(out: str | os.PathLike) -> Path:
    """Refuse, before any work, a destination the export could not be renamed into: an existing folder or other
    non-file, or a folder (the nearest one that exists, where folders are still to be made) that cannot be written.

    Args:
        out: the ``.ts`` file to write.

    Raises:
        PipelineError: one line naming the destination, the rule and what was found.

    Example:
        >>> check_destination("runs/ct")                                    # doctest: +SKIP
        PipelineError: the export destination must be a file, not a folder, got the folder 'runs/ct' (e.g. ...)
    """
    dest = Path(out)
    if dest.is_dir():
        raise PipelineError(f"the export destination must be a file, not a folder, got the folder '{dest}' (e.g. "
                            f"'{dest / 'model.ts'}')")
    if dest.exists() and not dest.is_file():
        raise PipelineError(f"the export destination must be a regular file (the export replaces it), got '{dest}' "
                            "(a device, socket or pipe)")
    folder = dest.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise PipelineError(f"the export destination must lie in a folder, got '{dest}', where '{folder}' is a file")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".probe", dir=folder)
    except OSError as exc:
        raise PipelineError(f"the export destination's folder must be writable, got '{folder}' "
                            f"({exc.strerror or exc}) for '{dest}'") from None
    os.close(fd)
    os.unlink(probe)
    return dest


def _test_input(network: torch.nn.Module, card: ModelCard, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    roi = list(card.inference.roi_size)
    dims = getattr(network, "spatial_dims", len(roi) or 3)
    if len(roi) != dims:
        roi = [32] * dims
    generator = torch.Generator().manual_seed(0)
    return torch.randn(1, card.network.in_channels, *roi, generator=generator).to(device=device, dtype=dtype)


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
        PipelineError: a destination that cannot be written (:func:`check_destination`), or CUDA or half precision
            asked for where unavailable.
        ExportError: the reloaded file's output differs from the eager model's beyond ``tolerance``.
    """
    check_destination(out)
    dev = resolve_device(device)
    if half and dev.type != "cuda":
        raise PipelineError("half precision export needs --device cuda (fp16 convolutions are not supported well on "
                            "CPU); export fp32 for CPU deployments")
    dtype = torch.float16 if half else torch.float32
    tol = tolerance if tolerance is not None else (1e-2 if half else 1e-4)
    net = network.eval().to(device=dev, dtype=dtype)
    if level is not None:
        net.level = int(level)
    embedded = card.shareable().replace(inference={"level": int(getattr(net, "level", level or 0) or 0) or None},
                                        export=ExportRecord(precision="fp16" if half else "fp32", device=str(dev)))
    scripted = torch.jit.script(net)
    dest = Path(out)
    buffer = io.BytesIO()  # saved to a buffer: a file's archive would be named after its temporary name
    torch.jit.save(scripted, buffer, _extra_files={EMBEDDED_CARD: embedded.to_json()})
    with atomic_path(dest) as tmp:
        tmp.write_bytes(buffer.getvalue())
        x = _test_input(net, embedded, dev, dtype)
        reloaded = torch.jit.load(str(tmp), map_location=dev).eval()
        with torch.inference_mode():
            expected = net(x)
            got = reloaded(x)
        diff = float((expected.float() - got.float()).abs().max())
        logger.info("export parity: max |scripted - eager| = %.3g on input %s (tolerance %.1g)", diff, tuple(x.shape),
                    tol)
        if not diff <= tol:
            raise ExportError(f"exported model differs from the eager model by {diff:.3g} (> tolerance {tol:.1g}) "
                              f"on a {tuple(x.shape)} input; the file was not written")
    return ExportResult(dest, diff, tuple(x.shape), embedded)
