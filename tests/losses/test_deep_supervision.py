from __future__ import annotations

import pytest
import torch
from monai.losses import DiceCELoss

from pipeline.losses import DeepSupervisedDiceCELoss
from pipeline.networks import UNetPlusPlus

KW = {"to_onehot_y": True, "softmax": True}


def _target(shape=(2, 1, 16, 16, 16)):
    torch.manual_seed(0)
    return torch.randint(0, 3, shape)


def test_single_head_equals_dicece():
    pred, target = torch.randn(2, 3, 16, 16, 16), _target()
    expected = DiceCELoss(**KW)(pred, target)
    assert torch.allclose(DeepSupervisedDiceCELoss(**KW)(pred, target), expected)
    assert torch.allclose(DeepSupervisedDiceCELoss(weights=(1.0,), **KW)([pred], target), expected)


def test_weights_apply_in_list_order_final_head_first():
    target = _target()
    heads = [torch.randn(2, 3, 16, 16, 16) for _ in range(4)]
    single = [DiceCELoss(**KW)(h, target) for h in heads]
    weights = (1.0, 0.5, 0.25, 0.125)
    loss = DeepSupervisedDiceCELoss(weights=weights, **KW)(heads, target)
    assert torch.allclose(loss, sum(w * s for w, s in zip(weights, single)))
    # the first list entry (UNet++'s final head in training) carries the largest weight
    bumped = [heads[0] * 0 + 5 * torch.nn.functional.one_hot(target[:, 0], 3).permute(0, 4, 1, 2, 3)] + heads[1:]
    assert DeepSupervisedDiceCELoss(weights=weights, **KW)(bumped, target) < loss


def test_unetplusplus_heads_arrive_deepest_first():
    """The loss's first weight lands on the head that inference uses (the full level)."""
    torch.manual_seed(0)
    net = UNetPlusPlus(3, 1, 3, features=(4, 4, 8, 8, 16, 4), deep_supervision=True)
    x, target = torch.randn(1, 1, 32, 32, 16), _target((1, 1, 32, 32, 16))
    heads = net.train()(x)
    with torch.no_grad():
        final = net.eval()(x)
    assert torch.allclose(heads[0], final, atol=1e-5)
    loss = DeepSupervisedDiceCELoss(weights=(1.0, 0.0, 0.0, 0.0), **KW)(heads, target)
    assert torch.allclose(loss, DiceCELoss(**KW)(final, target), atol=1e-5)


def test_normalised_weights_sum_to_one():
    loss = DeepSupervisedDiceCELoss(weights=(1.0, 0.5, 0.25, 0.25), normalize_weights=True, **KW)
    assert abs(sum(loss.head_weights) - 1.0) < 1e-9 and loss.head_weights[0] == 0.5


@pytest.mark.parametrize("weights, match", [
    ((0.5, 1.0), "final \\(deepest\\) head comes first and must weigh the most"),
    ((), "one non-negative number per head"),
    ((1.0, -0.1), "one non-negative number per head"),
])
def test_bad_weights(weights, match):
    with pytest.raises(ValueError, match=match):
        DeepSupervisedDiceCELoss(weights=weights)


def test_head_count_must_match_weights():
    with pytest.raises(ValueError, match="got 3 heads but 4 weights"):
        DeepSupervisedDiceCELoss(**KW)([torch.randn(1, 3, 8, 8, 8)] * 3, _target((1, 1, 8, 8, 8)))
