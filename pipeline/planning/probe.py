"""What a planned network costs: exact operation and activation counts, and the real step time on a device.

:func:`network_cost` runs the UNet++ once on PyTorch's ``meta`` device (no memory, no arithmetic) and counts the
multiply-accumulates of every convolution and the elements of every layer output, for one patch. :func:`probe_step`
times real training steps (deep-supervised DiceCE, AdamW) of a network on random data, after a warm-up step, and
returns the median. It trains as the bundles do (:mod:`pipeline.training.precision`): fp16 AMP on CUDA, bf16
autocast on CPUs with native bf16, channels-last on the CPU.

Example:
    >>> macs, elements = network_cost(3, 1, 3, [16, 32, 64, 128, 16], [[2, 2, 2]] * 3, [40, 56, 40])
    >>> round(macs / 1e9, 1)
    13.7
    >>> probe_step(3, 1, 3, [16, 32, 64, 128, 16], [[2, 2, 2]] * 3, [40, 56, 40], batch=2).seconds  # doctest: +SKIP
    0.71
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["ProbeResult", "network_cost", "probe_step"]

logger = logging.getLogger(__name__)


def _network(spatial_dims: int, in_channels: int, out_channels: int, features: Sequence[int],
             strides: Sequence[Sequence[int]]) -> torch.nn.Module:
    from pipeline.networks import UNetPlusPlus

    return UNetPlusPlus(spatial_dims, in_channels, out_channels, features=list(features), depth=len(strides),
                        strides=[list(s) for s in strides], deep_supervision=True)


def network_cost(spatial_dims: int, in_channels: int, out_channels: int, features: Sequence[int],
                 strides: Sequence[Sequence[int]], patch: Sequence[int]) -> tuple[float, float]:
    """``(forward MACs, activation elements)`` of one training patch (batch 1), counted on the meta device.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: classes (background included).
        features: UNet++ features (``depth + 2``).
        strides: per-level strides (``depth`` entries).
        patch: patch size.
    """
    from pipeline.networks import UpCatNode

    net = _network(spatial_dims, in_channels, out_channels, features, strides).to("meta").train()
    convs = (torch.nn.Conv2d, torch.nn.Conv3d)
    transposed = (torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)
    totals = [0.0, 0.0]

    def hook(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, UpCatNode):  # its first convolution runs on weight slices, not through the module
            totals[0] += float(module.convs.conv_0.conv.weight.numel()) * output[0, 0].numel()
            totals[1] += float(output.numel())
            return
        totals[1] += float(output.numel())
        if isinstance(module, convs):
            totals[0] += float(module.weight.numel()) * output[0, 0].numel()
        elif isinstance(module, transposed):
            totals[0] += float(module.weight.numel()) * inputs[0][0, 0].numel()

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if not list(m.children()) or isinstance(m, UpCatNode)]
    try:
        net(torch.empty(1, in_channels, *patch, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return totals[0], totals[1]


@dataclass
class ProbeResult:
    """Args:
        seconds: median seconds per training step.
        steps: steps timed.
        peak_bytes: peak device memory (CUDA), or 0 where unknown.
        device: where it ran.
    """

    seconds: float
    steps: int
    peak_bytes: int
    device: str


def probe_step(spatial_dims: int, in_channels: int, out_channels: int, features: Sequence[int],
               strides: Sequence[Sequence[int]], patch: Sequence[int], batch: int, device: str = "cpu",
               steps: int = 3) -> ProbeResult:
    """Median wall time of ``steps`` real training steps (after one warm-up step) on random data.

    Args:
        spatial_dims, in_channels, out_channels, features, strides: the network.
        patch: patch size.
        batch: patches per step.
        device: ``cpu`` or ``cuda[:N]``. Defaults to ``"cpu"``.
        steps: timed steps. Defaults to 3.
    """
    from pipeline.losses import DeepSupervisedDiceCELoss
    from pipeline.training.precision import prepare_network, training_autocast

    dev = torch.device(device)
    net = prepare_network(_network(spatial_dims, in_channels, out_channels, features, strides), dev).train()
    loss_fn = DeepSupervisedDiceCELoss(weights=[0.5 ** i for i in range(len(strides))], to_onehot_y=True,
                                       softmax=True, batch=True)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, in_channels, *patch, generator=generator).to(dev)
    y = torch.randint(0, out_channels, (batch, 1, *patch), generator=generator).to(dev)
    amp = dev.type == "cuda"
    dtype = torch.float16 if amp else training_autocast(dev)
    if amp:
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for index in range(steps + 1):
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            heads = net(x)
        loss = loss_fn([h.float() for h in heads], y)
        loss.backward()
        optimizer.step()
        if amp:
            torch.cuda.synchronize(dev)
        if index:
            times.append(time.perf_counter() - started)
    peak = int(torch.cuda.max_memory_allocated(dev)) if amp else 0
    result = ProbeResult(statistics.median(times), steps, peak, str(dev))
    logger.info("probe: %d x %s patches, features %s: %.3f s per step on %s", batch, list(patch), list(features),
                result.seconds, dev)
    return result
