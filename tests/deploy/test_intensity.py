"""Normalisation schemes: MONAI's definitions where MONAI has them, per channel, checked input."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import NormalizeIntensity, ScaleIntensityRange

from pipeline.transforms import NormalizeChannelsd, check_schemes, normalize_channels


def _image():
    torch.manual_seed(0)
    x = torch.randn(2, 9, 8, 7) * 50 + 100
    x[:, :2] = 0  # a zero border, as around an MRI head
    return x


@pytest.mark.parametrize("nonzero", [True, False])
def test_zscore_equals_monai_normalize_intensity(nonzero):
    x = _image()
    ours = normalize_channels(x, {"scheme": "zscore", "nonzero": nonzero})
    monai = NormalizeIntensity(nonzero=nonzero, channel_wise=True)(x)
    assert torch.allclose(ours, torch.as_tensor(monai), atol=1e-5)


def test_window_equals_monai_scale_intensity_range():
    x = _image()
    scheme = {"scheme": "window", "a_min": -175, "a_max": 250, "b_min": 0.0, "b_max": 1.0, "clip": True}
    expected = ScaleIntensityRange(-175, 250, 0.0, 1.0, clip=True)(x)
    assert torch.allclose(normalize_channels(x, scheme), torch.as_tensor(expected), atol=1e-6)


def test_clip_zscore_and_one_scheme_per_channel():
    x = _image()
    ct = {"scheme": "clip_zscore", "lower": 50.0, "upper": 150.0, "mean": 100.0, "std": 25.0}
    out = normalize_channels(x, [ct, {"scheme": "zscore", "nonzero": True}])
    assert torch.allclose(out[0], (x[0].clamp(50, 150) - 100) / 25)
    assert float(out[0].min()) == -2.0 and float(out[0].max()) == 2.0
    mask = x[1] != 0
    assert abs(float(out[1][mask].mean())) < 1e-5 and torch.equal(out[1][~mask], x[1][~mask])


def test_dictionary_transform_keeps_meta_data():
    x = MetaTensor(_image(), affine=torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0])))
    out = NormalizeChannelsd("image", {"scheme": "zscore", "nonzero": True})({"image": x})["image"]
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, x.affine)


@pytest.mark.parametrize("schemes, channels, message", [
    ({"scheme": "robust"}, None, "must be one of zscore, clip_zscore, window, none, got 'robust'"),
    ({"scheme": "clip_zscore", "lower": 0, "upper": 1, "mean": 0}, None, "needs std"),
    ({"scheme": "clip_zscore", "lower": 1, "upper": 0, "mean": 0, "std": 1}, None, "lower < upper"),
    ([{"scheme": "none"}] * 3, 2, "one scheme for all channels or one per channel \\(2\\), got 3"),
    ([], None, "non-empty list"),
])
def test_bad_schemes_are_named(schemes, channels, message):
    with pytest.raises(ValueError, match=message):
        check_schemes(schemes, channels)
