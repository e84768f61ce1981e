from __future__ import annotations

import pytest
import torch
from monai.data.utils import compute_importance_map
from monai.inferers import SliceInferer, sliding_window_inference

from pipeline.inference import importance_map, sliding_window
from pipeline.networks import UNetPlusPlus


@pytest.mark.parametrize("roi", [(16, 16, 16), (16, 12, 20)])
def test_importance_map_equals_monai(roi):
    for mode in ("gaussian", "constant"):
        assert torch.allclose(importance_map(roi, mode, 0.125), compute_importance_map(roi, mode, 0.125), atol=1e-7)


@pytest.mark.parametrize("shape, roi, overlap, batch", [
    ((1, 1, 40, 37, 35), (32, 32, 32), 0.5, 1),
    ((2, 2, 20, 45, 33), (32, 16, 16), 0.25, 3),
    ((1, 1, 10, 12, 9), (32, 16, 16), 0.5, 1),      # smaller than the window: padded, then cropped back
    ((1, 1, 64, 50), (32, 32), 0.0, 2),
])
def test_equals_monai_sliding_window_inference(shape, roi, overlap, batch):
    torch.manual_seed(0)
    dims = len(shape) - 2
    net = UNetPlusPlus(dims, shape[1], 3, features=(4, 4, 8, 8, 16, 4)).eval()
    x = torch.randn(*shape)
    with torch.inference_mode():
        expected = sliding_window_inference(x, roi, batch, net, overlap=overlap, mode="gaussian")
        got = sliding_window(x, net, roi, overlap, "gaussian", 0.125, batch)
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-5)


def test_slice_predictor_equals_monai_slice_inferer():
    from pipeline.deploy import card_from_dict
    from pipeline.inference import Predictor

    torch.manual_seed(0)
    net2d = UNetPlusPlus(2, 1, 3, features=(4, 4, 8, 8, 16, 4)).eval()
    x = torch.randn(1, 1, 40, 36, 6)
    meta = card_from_dict({"card_version": 3, "labels": {"0": "background", "1": "a", "2": "b"},
                           "inference": {"kind": "slice", "roi_size": [32, 32], "overlap": 0.25, "mode": "gaussian",
                                         "sigma_scale": 0.125, "spatial_dim": 2, "sw_batch_size": 2},
                           "network": {"depth": 4, "spatial_dims": 2, "out_channels": 3}}, "test card")
    with torch.inference_mode():
        expected = torch.softmax(SliceInferer(roi_size=[32, 32], sw_batch_size=2, overlap=0.25, mode="gaussian",
                                              spatial_dim=2)(x, net2d), 1)
    got = Predictor(net2d, meta, device="cpu", precision="fp32")(x)  # the card's sw_batch_size
    assert torch.allclose(got, expected, atol=1e-5)


def test_bad_roi_and_mode():
    with pytest.raises(ValueError, match="roi must have 3 values for a 3D image"):
        sliding_window(torch.zeros(1, 1, 8, 8, 8), lambda t: t, [8, 8])
    with pytest.raises(ValueError, match="blending mode must be gaussian or constant"):
        importance_map([8, 8], "cosine")
