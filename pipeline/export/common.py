"""What the TorchScript and the ONNX export share: the format rule, the destination check, the network and card as
exported (level, ``export`` section), the test input and the parity check.

Each writer (:mod:`pipeline.export.torchscript`, :mod:`pipeline.export.onnx`) prepares the network and its card with
:func:`prepare`, writes its file to a temporary name, reloads it the way deployment loads it and compares it with the
eager network on :func:`parity_input` (:func:`check_parity`) before the rename; a failed check leaves nothing behind.

Example:
    >>> export_format("hippo.onnx"), export_format("hippo.ts", "torchscript")
    ('onnx', 'torchscript')
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.deploy.card import ExportRecord, ModelCard
from pipeline.errors import PipelineError

__all__ = ["FORMATS", "RUNTIMES", "ExportError", "ExportResult", "check_destination", "check_parity", "export_format",
           "parity_input", "prepare"]

logger = logging.getLogger(__name__)

#: File ending -> export format (the ``--out`` suffix chooses it).
FORMATS = {".ts": "torchscript", ".onnx": "onnx"}
#: How the parity line names each format's runtime.
RUNTIMES = {"torchscript": "TorchScript", "onnx": "ONNX Runtime"}


class ExportError(PipelineError, RuntimeError):
    """Export failed its parity check or could not be written."""


@dataclass
class ExportResult:
    """Args:
        path: the file written.
        max_abs_diff: largest |exported - eager| on the test input.
        input_shape: shape of the test input.
        card: the card embedded (with its ``export`` section and the level exported).
    """

    path: Path
    max_abs_diff: float
    input_shape: tuple[int, ...]
    card: ModelCard


def export_format(out: str | os.PathLike, fmt: str | None = None) -> str:
    """The format of the export to ``out``: its suffix's (``.ts`` TorchScript, ``.onnx`` ONNX), which ``fmt``, when
    given, must agree with.

    Args:
        out: the file to write.
        fmt: ``torchscript``, ``onnx`` or None (the suffix decides). Defaults to None.

    Raises:
        PipelineError: an unknown suffix or format, or a format that disagrees with the suffix (one line naming the
            file, the rule and the value).

    Example:
        >>> export_format("m.pt")                                                     # doctest: +SKIP
        PipelineError: export destination 'm.pt': its suffix chooses the format and must be .ts (TorchScript) or
        .onnx (ONNX), got '.pt'
    """
    suffix = Path(out).suffix.lower()
    if fmt is not None and fmt not in FORMATS.values():
        raise PipelineError(f"--format must be one of {', '.join(FORMATS.values())}, got '{fmt}'")
    if suffix not in FORMATS:
        raise PipelineError(f"export destination '{out}': its suffix chooses the format and must be .ts (TorchScript) "
                            f"or .onnx (ONNX), got '{suffix or '(none)'}'")
    if fmt is not None and FORMATS[suffix] != fmt:
        wanted = next(s for s, f in FORMATS.items() if f == fmt)
        raise PipelineError(f"export destination '{out}': --format {fmt} needs a {wanted} file, got '{suffix}' (the "
                            f"suffix and --format must agree)")
    return FORMATS[suffix]


def check_destination(out: str | os.PathLike) -> Path:
    """Refuse, before any work, a destination the export could not be renamed into: an existing folder or other
    non-file, or a folder (the nearest one that exists, where folders are still to be made) that cannot be written.

    Args:
        out: the file to write.

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


def prepare(network: torch.nn.Module, card: ModelCard, level: int | None, device: torch.device, dtype: torch.dtype,
            record: ExportRecord) -> tuple[torch.nn.Module, ModelCard]:
    """The network as exported (eval mode, on ``device`` in ``dtype``, at ``level``) and the card to embed: the
    card's :meth:`~pipeline.deploy.card.ModelCard.shareable` form with the level exported and ``record``.

    Args:
        network: the network with its weights loaded.
        card: the training's card.
        level: inference level; None keeps the network's.
        device: where to export and check.
        dtype: float32, or float16 (a TorchScript export for CUDA).
        record: the ``export`` section.
    """
    net = network.eval().to(device=device, dtype=dtype)
    if level is not None:
        net.level = int(level)
    exported_level = int(getattr(net, "level", level or 0) or 0) or None
    return net, card.shareable().replace(inference={"level": exported_level}, export=record)


def parity_input(network: torch.nn.Module, card: ModelCard, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The input parity is checked on: one window of the card's size (32 per axis where the card's window does not
    fit the network's dimensions), standard normal values from seed 0.

    Args:
        network: the network (its ``spatial_dims`` where it has them).
        card: the card (window size and input channels).
        device: where to put it.
        dtype: its dtype.
    """
    roi = list(card.inference.roi_size)
    dims = getattr(network, "spatial_dims", len(roi) or 3)
    if len(roi) != dims:
        roi = [32] * dims
    generator = torch.Generator().manual_seed(0)
    return torch.randn(1, card.network.in_channels, *roi, generator=generator).to(device=device, dtype=dtype)


def check_parity(network: torch.nn.Module, exported: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                 tolerance: float, fmt: str) -> float:
    """Largest |exported - eager| on ``x``, logged; above ``tolerance`` the export is refused.

    Args:
        network: the eager network.
        exported: the written file, loaded back as deployment loads it.
        x: the test input.
        tolerance: largest accepted difference.
        fmt: ``torchscript`` or ``onnx`` (named in the log line).

    Raises:
        ExportError: the difference exceeds ``tolerance`` (or is NaN).
    """
    with torch.inference_mode():
        expected = network(x)
        got = exported(x)
    diff = float((expected.float() - got.float().to(expected.device)).abs().max())
    logger.info("export parity: max |%s - eager| = %.3g on input %s (tolerance %.1g)", RUNTIMES[fmt], diff,
                tuple(x.shape), tolerance)
    if not diff <= tolerance:
        raise ExportError(f"exported model differs from the eager model by {diff:.3g} (> tolerance {tolerance:.1g}) "
                          f"on a {tuple(x.shape)} input; the file was not written")
    return diff
