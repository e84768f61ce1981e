"""Device and precision choice, one definition for training, export and deployment.

``auto`` precision runs fp16 autocast on CUDA and bf16 autocast on CPUs with bfloat16 arithmetic in hardware
(AVX512-BF16 or AMX-BF16); other CPUs run fp32, where emulated bf16 is slower than fp32 (measurements in
docs/performance.md).

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> autocast_dtype("fp32", torch.device("cpu")) is None
    True
"""

from __future__ import annotations

import torch

from pipeline.errors import PipelineError

__all__ = ["PRECISIONS", "autocast_dtype", "native_bf16", "precision_name", "resolve_device"]

#: The precisions a user may ask for.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``, or None/``"auto"`` (CUDA when available).

    Args:
        device: the device asked for.

    Raises:
        PipelineError: an unknown device, or CUDA asked for but not available.
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
    if dev.type == "cpu" and dev.index not in (None, 0):  # torch takes cpu:1 and runs on the one CPU device
        raise PipelineError(f"device must be cpu (one CPU device, all its cores) or cuda[:N], got '{device}'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise PipelineError(f"device '{device}' does not exist: this machine has {torch.cuda.device_count()} CUDA "
                            "device(s), cuda:0 to cuda:" f"{torch.cuda.device_count() - 1}")
    return dev


def native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU has bfloat16 arithmetic in hardware (AVX512-BF16 or AMX-BF16 flags).

    Args:
        cpuinfo: the file listing the CPU flags. Defaults to ``/proc/cpuinfo``.
    """
    try:
        with open(cpuinfo) as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(precision: str, device: torch.device, half_model: bool = False) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: run in the model's own dtype).

    Args:
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        device: where the model runs.
        half_model: the model's weights are fp16 already (an fp16 export). Defaults to False.

    Raises:
        ValueError: an unknown precision, or fp16 asked for on the CPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    if half_model or precision == "fp32":
        return None
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError("precision fp16 needs a CUDA device; on the CPU use bf16 or fp32")
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if native_bf16() else None


def precision_name(dtype: torch.dtype | None) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for an autocast dtype (None: fp32).

    Args:
        dtype: an autocast dtype, or None.
    """
    return {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
