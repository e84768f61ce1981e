"""Training precision and layout: which autocast runs where, fp32 outputs for the loss, channels-last on the CPU."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SimpleInferer, SlidingWindowInferer

from pipeline.networks import UNetPlusPlus
from pipeline.training import AutocastInferer, prepare_network, training_autocast


@pytest.mark.parametrize("device, choice, native, expected", [
    ("cpu", "auto", True, torch.bfloat16),
    ("cpu", "auto", False, None),          # emulated bf16 is slower than fp32
    ("cpu", "bf16", False, torch.bfloat16),
    ("cpu", "fp32", True, None),
    ("cuda", "auto", True, None),          # CUDA fp16 is MONAI's amp, with its gradient scaler
    ("cuda", "fp16", True, None),
    ("cuda", "bf16", True, torch.bfloat16),
    ("cuda", "fp32", True, None),
])
def test_training_autocast_rules(monkeypatch, device, choice, native, expected):
    monkeypatch.setattr("pipeline.deploy.device.native_bf16", lambda: native)
    assert training_autocast(device, choice) == expected


@pytest.mark.parametrize("choice, match", [("fp16", "fp16 trains on CUDA only"), ("half", "must be one of")])
def test_bad_precision_is_a_clear_error(choice, match):
    with pytest.raises(ValueError, match=match):
        training_autocast("cpu", choice)
    with pytest.raises(ValueError, match=match):
        AutocastInferer(SimpleInferer(), "cpu", choice)


class _Recorder(torch.nn.Module):
    """Records whether autocast was on and in which dtype its convolution ran."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 3, 3, padding=1)
        self.seen: list[tuple[bool, torch.dtype]] = []

    def forward(self, x):
        out = self.conv(x)
        self.seen.append((torch.is_autocast_enabled("cpu"), out.dtype))
        return [out, out * 2]


def test_autocast_inferer_runs_bf16_and_returns_fp32_for_the_loss():
    net = _Recorder()
    x = torch.randn(2, 1, 8, 8, 8)
    outputs = AutocastInferer(SimpleInferer(), "cpu", "bf16")(x, net)
    assert net.seen == [(True, torch.bfloat16)]
    assert [o.dtype for o in outputs] == [torch.float32, torch.float32] and isinstance(outputs, list)
    plain = AutocastInferer(SimpleInferer(), "cpu", "fp32")(x, net)
    assert net.seen[-1] == (False, torch.float32)
    assert (plain[0] - outputs[0]).abs().max() < 0.05 * plain[0].abs().max(), "bf16 is close to fp32"


def test_autocast_inferer_wraps_the_sliding_window():
    torch.manual_seed(0)
    net = UNetPlusPlus(3, 1, 3, features=(4, 4, 8, 8, 16, 4)).eval()
    window = SlidingWindowInferer(roi_size=[32, 16, 16], overlap=0.5, mode="gaussian")
    x = torch.randn(1, 1, 40, 20, 17)
    with torch.no_grad():
        reference = window(x, net)
        bf16 = AutocastInferer(window, "cpu", "bf16")(x, net)
    assert bf16.dtype == torch.float32 and bf16.shape == reference.shape
    agree = (bf16.argmax(1) == reference.argmax(1)).float().mean()
    assert agree > 0.95


@pytest.mark.parametrize("spatial_dims, layout", [(3, torch.channels_last_3d), (2, torch.channels_last)])
def test_prepare_network_uses_channels_last_on_the_cpu_only_when_asked_or_by_default(spatial_dims, layout):
    net = prepare_network(UNetPlusPlus(spatial_dims, 1, 2, features=(4, 4, 8, 8, 16, 4)), "cpu")
    convs = [p for p in net.parameters() if p.dim() == spatial_dims + 2]
    assert convs and all(p.is_contiguous(memory_format=layout) for p in convs)
    plain = prepare_network(UNetPlusPlus(spatial_dims, 1, 2, features=(4, 4, 8, 8, 16, 4)), "cpu",
                            channels_last=False)
    assert all(p.is_contiguous() for p in plain.parameters())


def test_channels_last_is_not_the_default_on_cuda(monkeypatch):
    moved = []
    net = torch.nn.Conv3d(1, 2, 3)
    monkeypatch.setattr(net, "to", lambda *a, **k: moved.append((a, k)) or net)
    prepare_network(net, torch.device("cuda"))
    assert moved == [((torch.device("cuda"),), {})], "moved to the GPU, layout left to cuDNN"
