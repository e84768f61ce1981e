"""Operation counts on the meta device, and the real step-time probe."""

from __future__ import annotations

import pytest
import torch

from pipeline.networks import UNetPlusPlus
from pipeline.planning import network_cost, probe_step


def _real_count(net, x, monkeypatch):
    """MACs of every convolution a real forward computes, counted at torch.nn.functional (the network's decoder
    nodes call it directly on weight slices)."""
    macs = [0]
    conv, transposed = torch.nn.functional.conv3d, torch.nn.functional.conv_transpose3d

    def counted_conv(inp, weight, *args, **kwargs):
        out = conv(inp, weight, *args, **kwargs)
        macs[0] += weight.numel() * out[0, 0].numel()
        return out

    def counted_transposed(inp, weight, *args, **kwargs):
        macs[0] += weight.numel() * inp[0, 0].numel()
        return transposed(inp, weight, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "conv3d", counted_conv)
    monkeypatch.setattr(torch.nn.functional, "conv_transpose3d", counted_transposed)
    with torch.no_grad():
        net.train()(x)
    return macs[0]


def test_meta_count_equals_a_real_forward_and_scales_with_voxels(monkeypatch):
    features, strides = [4, 8, 16, 4], [[2, 2, 1], [2, 2, 2]]
    macs, elements = network_cost(3, 2, 3, features, strides, [32, 24, 8])
    net = UNetPlusPlus(3, 2, 3, features=features, depth=2, strides=strides, deep_supervision=True)
    assert macs == _real_count(net, torch.zeros(1, 2, 32, 24, 8), monkeypatch) and elements > 0
    double, _ = network_cost(3, 2, 3, features, strides, [64, 24, 8])
    assert double == pytest.approx(2 * macs, rel=0.01)


def test_probe_times_real_steps():
    result = probe_step(3, 1, 2, [4, 8, 4], [[2, 2, 2]], [16, 16, 16], batch=2, steps=2)
    assert result.seconds > 0 and result.steps == 2 and result.device == "cpu" and result.peak_bytes == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: the probe's AMP and memory peak")
def test_probe_on_cuda_reports_peak_memory():
    result = probe_step(3, 1, 2, [8, 16, 8], [[2, 2, 2]], [32, 32, 32], batch=2, device="cuda", steps=2)
    assert result.peak_bytes > 0 and result.device.startswith("cuda")
