"""Training precision and memory layout: bf16 autocast on CPUs that have it, channels-last on the CPU.

MONAI's engines know one reduced precision, CUDA fp16 (``amp=True``: ``torch.autocast("cuda")`` and a gradient
scaler). On a CPU with native bfloat16 (AVX512-BF16 or AMX) bf16 autocast roughly halves a training step, and
bf16 needs no gradient scaler (its exponent range is fp32's); weights, optimiser state and the loss stay fp32.
:class:`AutocastInferer` wraps any MONAI inferer in that autocast and hands fp32 outputs to the loss and the
post-processing. :func:`prepare_network` moves the network to its device and, on the CPU, to channels-last, the
layout in which oneDNN's convolutions run without reordering their inputs. What each gains is measured by
``benchmarks/training_throughput.py`` (docs/performance.md).

Example (bundle config)::

    "precision": "auto",
    "amp": "$@device.type == 'cuda' and @precision in ('auto', 'fp16')",
    "network": "$pipeline.training.prepare_network(@network_def, @device)",
    "train": {"inferer": {"_target_": "pipeline.training.AutocastInferer", "inferer": {"_target_": "SimpleInferer"},
                          "device": "@device", "precision": "@precision"}}
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from monai.inferers import Inferer

from pipeline.deploy.device import PRECISIONS, autocast_dtype, precision_name

__all__ = ["AutocastInferer", "prepare_network", "training_autocast", "training_precision"]

logger = logging.getLogger(__name__)


def training_autocast(device: torch.device | str, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype that :class:`AutocastInferer` applies in training (None: none).

    On CUDA, ``auto`` and ``fp16`` are left to MONAI's ``amp`` (fp16 needs its gradient scaler) and only an explicit
    ``bf16`` is applied here; on the CPU, ``auto`` is bf16 where the CPU has it natively, fp32 elsewhere (emulated
    bf16 is slower than fp32).

    Args:
        device: the training device.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (CUDA only). Defaults to ``"auto"``.

    Raises:
        ValueError: an unknown precision, or fp16 on a CPU.

    Example:
        >>> training_autocast("cpu", "fp32") is None
        True
    """
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    if device.type == "cuda":
        return torch.bfloat16 if precision == "bf16" else None
    if precision == "fp16":
        raise ValueError(f"precision fp16 trains on CUDA only (with MONAI's amp); on {device} use bf16 or fp32")
    return autocast_dtype(precision, device)


def training_precision(device: torch.device | str, precision: str = "auto") -> str:
    """The precision a training runs in, for the model card: ``fp16`` for MONAI's amp on CUDA, else
    :func:`training_autocast`'s (``bf16`` or ``fp32``).

    Args:
        device: the training device.
        precision: the bundle's ``precision``. Defaults to ``"auto"``.

    Example:
        >>> training_precision("cpu", "fp32")
        'fp32'
    """
    device = torch.device(device)
    if device.type == "cuda" and precision in ("auto", "fp16"):
        return "fp16"
    return precision_name(training_autocast(device, precision))


def _to_float(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output.float() if output.is_floating_point() and output.dtype != torch.float32 else output
    if isinstance(output, (list, tuple)):
        return type(output)(_to_float(o) for o in output)
    if isinstance(output, dict):
        return {k: _to_float(v) for k, v in output.items()}
    return output


class AutocastInferer(Inferer):
    """Runs ``inferer`` under ``torch.autocast`` with :func:`training_autocast`'s dtype; outputs come back fp32.

    Args:
        inferer: the MONAI inferer to wrap (``SimpleInferer`` for training, the sliding window for validation).
        device: the device the network runs on.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``. Defaults to ``"auto"``.

    Raises:
        ValueError: see :func:`training_autocast`.

    Example:
        >>> from monai.inferers import SimpleInferer
        >>> inferer = AutocastInferer(SimpleInferer(), "cpu", "bf16")
        >>> inferer(torch.ones(1, 2, 4, 4), torch.nn.Conv2d(2, 3, 1)).dtype
        torch.float32
    """

    def __init__(self, inferer: Inferer, device: torch.device | str, precision: str = "auto") -> None:
        super().__init__()
        self.inferer = inferer
        self.device = torch.device(device)
        self.dtype = training_autocast(self.device, precision)
        logger.info("autocast on %s: %s", self.device, self.dtype or "none (fp32, or MONAI's amp on CUDA)")

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        """Args:
            inputs: the batch.
            network: the model (or callable) the wrapped inferer calls.
            args, kwargs: passed to the wrapped inferer.
        """
        if self.dtype is None:
            return self.inferer(inputs, network, *args, **kwargs)
        with torch.autocast(self.device.type, dtype=self.dtype):
            output = self.inferer(inputs, network, *args, **kwargs)
        return _to_float(output)


def prepare_network(network: torch.nn.Module, device: torch.device | str,
                    channels_last: bool | None = None) -> torch.nn.Module:
    """``network`` on ``device``, in channels-last memory layout where that pays.

    Args:
        network: the model.
        device: where it trains.
        channels_last: use the channels-last layout (``torch.channels_last_3d`` for 3D weights,
            ``torch.channels_last`` for 2D). Defaults to None: on the CPU (faster training steps, measured in
            docs/performance.md), not on CUDA (cuDNN picks its own layouts).

    Example:
        >>> net = prepare_network(torch.nn.Conv3d(1, 2, 3), "cpu")
        >>> net.weight.is_contiguous(memory_format=torch.channels_last_3d)
        True
    """
    device = torch.device(device)
    network = network.to(device)
    if channels_last is None:
        channels_last = device.type == "cpu"
    if channels_last:
        dims = {p.dim() for p in network.parameters()}
        network = network.to(memory_format=torch.channels_last_3d if 5 in dims else torch.channels_last)
    return network
