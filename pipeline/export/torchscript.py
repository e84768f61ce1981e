"""TorchScript export with embedded deployment metadata, verified against the eager model.

The file is ``torch.jit.script`` of the network in eval mode at the chosen level (the level stays a settable
attribute of the scripted module, so a deployment can still switch it), with ``metadata.json`` stored as a
TorchScript extra file. It is written to a temporary file and renamed into place only after the reloaded
file's output matched the eager model's on a test input.

Example:
    >>> result = export_torchscript(net, "model.ts", metadata=meta, level=2)      # doctest: +SKIP
    >>> result.max_abs_diff < 1e-4                                                 # doctest: +SKIP
    True
    >>> module, meta = load_torchscript("model.ts")                                # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.errors import PipelineError
from pipeline.export.model_metadata import parse_model_metadata
from pipeline.io.atomic import atomic_path

__all__ = ["ExportError", "ExportResult", "export_torchscript", "load_torchscript", "resolve_device"]

logger = logging.getLogger(__name__)

METADATA_FILE = "metadata.json"


class ExportError(PipelineError, RuntimeError):
    """Export failed its parity check or could not be written."""


@dataclass
class ExportResult:
    """Args:
        path: the file written.
        max_abs_diff: largest |scripted - eager| on the test input.
        input_shape: shape of the test input.
        metadata: what was embedded.
    """

    path: Path
    max_abs_diff: float
    input_shape: tuple[int, ...]
    metadata: dict


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``, or None/``"auto"`` (CUDA when available).

    Raises:
        PipelineError: CUDA asked for but not available.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise PipelineError(f"device must be auto, cpu or cuda[:N], got '{device}'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PipelineError(f"device '{device}' requested but CUDA is not available on this machine "
                            f"(torch {torch.__version__}, built for CUDA: {torch.version.cuda or 'no'})")
    if dev.type not in ("cpu", "cuda"):
        raise PipelineError(f"device must be cpu or cuda[:N], got '{device}'")
    return dev


def _test_input(network: torch.nn.Module, metadata: dict, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    roi = list(metadata.get("inference", {}).get("roi_size") or [])
    dims = getattr(network, "spatial_dims", len(roi) or 3)
    if len(roi) != dims:
        roi = [32] * dims
    channels = metadata.get("network", {}).get("in_channels") or 1
    generator = torch.Generator().manual_seed(0)
    return torch.randn(1, channels, *roi, generator=generator).to(device=device, dtype=dtype)


def export_torchscript(network: torch.nn.Module, out: str | os.PathLike, metadata: dict, level: int | None = None,
                       device: str | torch.device = "cpu", half: bool = False, tolerance: float | None = None) -> \
        ExportResult:
    """Script ``network`` at ``level``, embed ``metadata``, check parity, write ``out`` atomically.

    Args:
        network: a ``UNetPlusPlus`` (any scriptable module returning one tensor in eval mode).
        out: destination ``.ts`` file.
        metadata: JSON-able dict embedded as ``metadata.json``; ``inference.level`` and ``precision`` are set.
        level: inference level; None keeps the network's. Defaults to None.
        device: where to script and check (the file loads on any device with ``map_location``).
            Defaults to ``"cpu"``.
        half: store fp16 weights (CUDA only). Defaults to False.
        tolerance: largest accepted |scripted - eager|. Defaults to 1e-4 (fp32) or 1e-2 (fp16).

    Raises:
        PipelineError: CUDA or half precision asked for where unavailable.
        ExportError: the reloaded file's output differs from the eager model's beyond ``tolerance``.
    """
    dev = resolve_device(device)
    if half and dev.type != "cuda":
        raise PipelineError("half precision export needs --device cuda (fp16 convolutions are not supported well on "
                            "CPU); export fp32 for CPU deployments")
    dtype = torch.float16 if half else torch.float32
    tol = tolerance if tolerance is not None else (1e-2 if half else 1e-4)
    net = network.eval().to(device=dev, dtype=dtype)
    if level is not None:
        net.level = int(level)
    meta = json.loads(json.dumps(metadata))  # JSON-able, detached from the caller's dict
    meta.setdefault("inference", {})["level"] = int(getattr(net, "level", level or 0) or 0)
    meta["precision"] = "fp16" if half else "fp32"
    meta["exported_device"] = str(dev)
    scripted = torch.jit.script(net)
    dest = Path(out)
    with atomic_path(dest) as tmp:
        torch.jit.save(scripted, str(tmp), _extra_files={METADATA_FILE: json.dumps(meta, indent=1)})
        x = _test_input(net, meta, dev, dtype)
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
    return ExportResult(dest, diff, tuple(x.shape), meta)


def load_torchscript(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.jit.ScriptModule,
                                                                                             dict]:
    """Load an exported model and its embedded metadata.

    Raises:
        PipelineError: the file is missing, not TorchScript, has no embedded metadata, or metadata that breaks a
            rule of :mod:`pipeline.export.model_metadata`.
    """
    src = Path(path)
    if not src.is_file():
        raise PipelineError(f"model file '{src}' does not exist")
    extra = {METADATA_FILE: ""}
    try:
        module = torch.jit.load(str(src), map_location=resolve_device(device), _extra_files=extra)
    except RuntimeError as exc:
        raise PipelineError(f"'{src}' is not a TorchScript file: {str(exc).splitlines()[0]}") from exc
    if not extra[METADATA_FILE]:
        raise PipelineError(f"'{src}' has no embedded {METADATA_FILE}: export it with `python -m pipeline export`")
    return module.eval(), parse_model_metadata(extra[METADATA_FILE], src)
