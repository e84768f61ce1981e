"""3D convolutions whose bf16 training keeps the right weight gradients (oneDNN's are wrong at depth < kernel)."""

from __future__ import annotations

import pytest
import torch

from pipeline.networks import UNetPlusPlus
from pipeline.networks.conv import GuardedConv3d, guard_bf16_convs, needs_fp32


def _relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value.double() - reference.double()).abs().max() / reference.double().abs().max())


@pytest.mark.parametrize("shape", [(2, 6, 6), (2, 3, 2), (1, 5, 4), (3, 4, 3)])
def test_weight_gradient_in_bf16_autocast_matches_fp64(shape):
    torch.manual_seed(0)
    conv = guard_bf16_convs(torch.nn.Sequential(torch.nn.Conv3d(32, 32, 3, padding=1)))[0]
    for _ in range(6):
        x, grad = torch.randn(2, 32, *shape), torch.randn(2, 32, *shape)
        torch.full((1000, 1000), 1e30)  # freed memory full of large values, as oneDNN's wrong kernel reads them
        conv.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv(x)
        out.backward(grad.to(out.dtype))
        reference = torch.ops.aten.convolution_backward(
            grad.double(), x.double(), conv.weight.detach().double(), None, [1] * 3, [1] * 3, [1] * 3, False,
            [0] * 3, 1, [False, True, False])[1]
        assert _relative_error(conv.weight.grad, reference) < 0.03, shape


def test_the_guard_keeps_parameters_keys_and_scripting():
    plain = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.Conv3d(4, 4, 1))
    weights = [p for p in plain.parameters()]
    keys = list(plain.state_dict())
    guarded = guard_bf16_convs(plain)
    assert all(type(m) is GuardedConv3d for m in guarded)
    assert [p for p in guarded.parameters()] == weights and list(guarded.state_dict()) == keys
    x = torch.randn(1, 2, 2, 5, 5)
    scripted = torch.jit.script(guarded.eval())
    assert torch.allclose(scripted(x), guarded(x))
    assert needs_fp32(x, 3) and not needs_fp32(torch.zeros(1, 2, 3, 5, 5), 3)
    assert all(type(m) is not torch.nn.Conv3d for m in UNetPlusPlus(3, 1, 2, features=(4, 4, 8, 8, 16, 4)).modules())


def test_unetplusplus_trains_the_shallow_levels_in_fp32_and_the_rest_in_bf16():
    """16x48x32 input: levels 3 and 4 are 2 and 1 voxels deep; their convolutions (the encoder's and the decoder
    node X(3, 1)'s) run in fp32 while training, every other one in bf16; in eval mode all run in bf16."""
    from unittest import mock

    from pipeline.networks import UpCatNode

    net = UNetPlusPlus(3, 1, 3, features=(8, 8, 16, 16, 32, 8), deep_supervision=True)
    seen = {}
    for name, module in net.named_modules():
        if isinstance(module, GuardedConv3d):
            module.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, (i[0].shape[2], o.dtype)))
    x = torch.randn(1, 1, 16, 48, 32)
    fp32_nodes = mock.patch.object(UpCatNode, "_fp32_first_conv", autospec=True,
                                   side_effect=UpCatNode._fp32_first_conv)
    with fp32_nodes as node_calls, torch.autocast("cpu", dtype=torch.bfloat16):
        net.train()(x)
        assert node_calls.call_count == 1 and node_calls.call_args.args[0] is net.decoder[3][0]
        shallow = {name for name, (depth, _) in seen.items() if depth < 3}
        assert shallow == {f"downs.{i}.convs.conv_{j}.conv" for i in (2, 3) for j in (0, 1)} | {
            "decoder.3.0.convs.conv_1.conv"}  # X(3, 1)'s first convolution is the functional one counted above
        assert all((dtype == torch.float32) == (name in shallow) for name, (_, dtype) in seen.items()), seen
        seen.clear()
        net.eval()(x)
        assert node_calls.call_count == 1 and all(dtype == torch.bfloat16 for _, dtype in seen.values())
