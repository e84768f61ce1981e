"""ChannelsLastInstanceNorm: instance norm's arithmetic in both memory layouts; the swap keeps parameters."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.networks.norm import ChannelsLastInstanceNorm, replace_instance_norms

LAYOUTS = {4: torch.channels_last, 5: torch.channels_last_3d}


@pytest.mark.parametrize("shape", [(3, 5, 7, 6, 9), (2, 4, 11, 13), (1, 3, 5, 4, 3)])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_equals_instance_norm_forward_and_backward(shape, affine, channels_last):
    torch.manual_seed(0)
    x = torch.randn(*shape) * 3 + 1
    norm = ChannelsLastInstanceNorm(shape[1], affine=affine)
    if affine:
        with torch.no_grad():
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-1, 1)
    weight = norm.weight.detach().clone().requires_grad_(True) if affine else None
    bias = norm.bias.detach().clone().requires_grad_(True) if affine else None
    ref_in = x.clone().requires_grad_(True)
    expected = F.instance_norm(ref_in, weight=weight, bias=bias, eps=norm.eps)
    ours_in = (x.contiguous(memory_format=LAYOUTS[len(shape)]) if channels_last else x.clone()).requires_grad_(True)
    out = norm(ours_in)
    assert out.is_contiguous(memory_format=LAYOUTS[len(shape)]) == channels_last or shape[0] == 1
    assert torch.allclose(out, expected, atol=1e-5)
    grad = torch.randn(*shape)
    expected.backward(grad)
    out.backward(grad)
    assert torch.allclose(ours_in.grad, ref_in.grad, atol=1e-4)
    if affine:
        assert torch.allclose(norm.weight.grad, weight.grad, atol=1e-4)
        assert torch.allclose(norm.bias.grad, bias.grad, atol=1e-4)


def test_replace_keeps_parameters_and_leaves_running_statistics_alone():
    torch.manual_seed(0)
    tracked = torch.nn.InstanceNorm3d(4, track_running_stats=True)
    model = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.InstanceNorm3d(4, affine=True),
                                torch.nn.Sequential(torch.nn.InstanceNorm2d(4)), tracked)
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    replace_instance_norms(model.eval())
    assert isinstance(model[1], ChannelsLastInstanceNorm) and isinstance(model[2][0], ChannelsLastInstanceNorm)
    assert model[3] is tracked, "a norm with running statistics is not an instance norm of one sample"
    assert not model[1].training
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_scripts_and_runs_both_layouts():
    norm = torch.jit.script(ChannelsLastInstanceNorm(3))
    x = torch.randn(2, 3, 4, 5, 6)
    cl = x.contiguous(memory_format=torch.channels_last_3d)
    assert torch.allclose(norm(x), norm(cl), atol=1e-5)
