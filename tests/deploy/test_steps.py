"""The step registry: one class per deployable transform, read off MONAI objects and applied without MONAI."""

from __future__ import annotations

import pytest
import torch
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    GaussianSmoothd,
    Invertd,
    LoadImaged,
    Orientationd,
    Spacingd,
)

from pipeline.data import write_synthetic_dataset
from pipeline.deploy import card_from_dict
from pipeline.deploy.steps import STEPS, build_steps, describe_transforms
from pipeline.inference import Preprocessor
from pipeline.io import read_case
from pipeline.transforms import ForegroundThreshold, NormalizeChannelsd


def _card(steps):
    """A card that says only how to preprocess."""
    return card_from_dict({"card_version": 3, "labels": {"0": "background", "1": "a"}, "preprocessing": steps}, "t")

def test_every_kind_mirrors_a_training_transform():
    assert set(STEPS) == {"orient", "resample", "crop_foreground", "normalize", "zscore", "window"}
    assert all(cls.mirrors for cls in STEPS.values())


def test_unknown_transform_and_unknown_step_are_named():
    with pytest.raises(ValueError, match="uses GaussianSmoothd: it has no deployment equivalent"):
        describe_transforms([GaussianSmoothd(keys="image", sigma=1.0)])
    with pytest.raises(ValueError, match="the preprocessing step 'denoise' is not one this pipeline knows"):
        build_steps([{"kind": "denoise"}])
    with pytest.raises(ValueError, match="image mode 'nearest'"):
        describe_transforms([Spacingd("image", pixdim=(1, 1, 1), mode="nearest")])


def test_two_channel_case_matches_the_monai_chain_and_its_inverse(tmp_path):
    path = write_synthetic_dataset(tmp_path, "mri", cases=2, seed=3, shape=(30, 34, 26), channels=2,
                                   spacing=(0.9, 0.9, 1.6), layout="nnunet").parent
    files = [str(path / f"imagesTr/mri_001_000{c}.nii.gz") for c in (0, 1)]  # stored LPS
    schemes = [{"scheme": "clip_zscore", "lower": 0.0, "upper": 900.0, "mean": 300.0, "std": 120.0},
               {"scheme": "zscore", "nonzero": True}]
    chain = Compose([LoadImaged("image", reader="ITKReader", image_only=True), EnsureChannelFirstd("image"),
                     Orientationd("image", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
                     Spacingd("image", pixdim=(1.2, 1.2, 1.2)),
                     CropForegroundd("image", source_key="image", select_fn=ForegroundThreshold(40.0), margin=2,
                                     allow_smaller=True),
                     NormalizeChannelsd("image", schemes)])
    expected = chain({"image": files})["image"]
    meta = _card(describe_transforms(chain.transforms))
    assert [s["kind"] for s in meta.preprocessing] == ["orient", "resample", "crop_foreground", "normalize"]
    volume = read_case(files)
    got, state = Preprocessor(meta)(volume.array, volume.geometry.affine)
    assert got.shape == expected.shape and torch.allclose(got, expected.as_tensor(), atol=1e-4)
    probs = torch.softmax(torch.randn(3, *got.shape[1:]) * 3, 0)
    pred = expected.clone()
    pred.set_array(probs)
    back = Invertd("pred", transform=chain, orig_keys="image", nearest_interp=False)(
        {"image": expected, "pred": pred})["pred"]
    ours = Preprocessor(meta).invert(probs, state)
    assert tuple(ours.shape[1:]) == volume.geometry.shape and torch.allclose(ours, back.as_tensor().float(),
                                                                            atol=1e-4)


def test_2d_image_matches_the_monai_chain(tmp_path):
    path = write_synthetic_dataset(tmp_path, "mri", cases=2, seed=1, dims=2, shape=(40, 30)).parent
    source = str(path / "imagesTr/mri2d_001.nii.gz")  # stored with its first two axes flipped (LP)
    chain = Compose([LoadImaged("image", reader="ITKReader", image_only=True), EnsureChannelFirstd("image"),
                     Orientationd("image", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
                     Spacingd("image", pixdim=(1.5, 1.3, 1.0))])
    expected = chain({"image": source})["image"]
    meta = _card(describe_transforms(chain.transforms))
    volume = read_case(source)
    got, state = Preprocessor(meta)(volume.array, volume.geometry.affine)
    assert got.shape == expected.shape and torch.allclose(got, expected.as_tensor(), atol=1e-4)
    assert tuple(Preprocessor(meta).invert(torch.ones(2, *got.shape[1:]), state).shape) == (2, 40, 30)
