"""The MONAI-free deployment preprocessing against the bundles' own MONAI chains."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose, Invertd

from pipeline.deploy import card_from_dict, load_torchscript
from pipeline.inference import Preprocessor
from pipeline.io import read_image

from .conftest import REPO


def _bundle_chain(bundle):
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "train.json"))
    return Compose(parser.get_parsed_content("preprocessing"))


@pytest.mark.parametrize("bundle, modality", [("unetpp_ct_segmentation", "ct"), ("unetpp_mri_segmentation", "mri")])
def test_equals_the_bundle_chain_and_its_inverse(bundle, modality, exported, ct_dataset, mri_dataset):
    data = {"ct": ct_dataset, "mri": mri_dataset}[modality]
    chain = _bundle_chain(bundle)
    _, meta = load_torchscript(exported[bundle])
    ours = Preprocessor(meta)
    for index in (0, 1, 2):  # stored RAS, LPS, LAS
        path = str(data / "imagesTr" / f"{modality}_{index:03d}.nii.gz")
        expected = chain({"image": path})
        volume = read_image(path)
        got, state = ours(volume.array, volume.geometry.affine)
        assert tuple(got.shape) == tuple(expected["image"].shape)
        assert torch.allclose(got, expected["image"].as_tensor(), atol=1e-4)
        # invert a made-up 3-class probability map both ways: MONAI's Invertd and ours
        torch.manual_seed(index)
        probs = torch.softmax(torch.randn(3, *got.shape[1:]) * 3, 0)
        pred = expected["image"].clone()
        pred.set_array(probs)
        monai_back = Invertd(keys="pred", transform=chain, orig_keys="image", nearest_interp=False)(
            {"image": expected["image"], "pred": pred})["pred"]
        ours_back = ours.invert(probs, state)
        assert tuple(ours_back.shape[1:]) == volume.geometry.shape
        assert torch.allclose(ours_back, monai_back.as_tensor().float(), atol=1e-4)


@pytest.mark.realdata
def test_real_ct_and_dicom_match_the_ct_bundle_chain(ct_mr_examples, exported):
    chain = _bundle_chain("unetpp_ct_segmentation")
    _, meta = load_torchscript(exported["unetpp_ct_segmentation"])
    ours = Preprocessor(meta)
    for source in ("example_ct.nii.gz", "example_ct_dicom"):
        path = str(ct_mr_examples / source)
        expected = chain({"image": path})["image"]
        volume = read_image(path)
        got, _ = ours(volume.array, volume.geometry.affine)
        assert tuple(got.shape) == tuple(expected.shape), source
        assert torch.allclose(got, expected.as_tensor(), atol=1e-4), source


def test_zscore_window_and_crop_rules():
    meta = card_from_dict({"card_version": 3, "labels": {"0": "background", "1": "a"}, "preprocessing": [
        {"kind": "crop_foreground", "threshold": 0.5, "margin": 1},
        {"kind": "zscore", "nonzero": True, "channel_wise": True},
        {"kind": "window", "a_min": -1.0, "a_max": 1.0, "b_min": 0.0, "b_max": 1.0, "clip": True}]}, "test card")
    array = np.zeros((10, 9, 8), np.float32)
    array[3:6, 2:4, 4:7] = np.arange(18).reshape(3, 2, 3) + 1
    image, state = Preprocessor(meta)(array, np.eye(4))
    assert tuple(image.shape) == (1, 5, 4, 5)  # box 3..5 x 2..3 x 4..6 plus a margin of 1, clipped to the image
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    back = Preprocessor(meta).invert(torch.ones(2, *image.shape[1:]), state)
    assert tuple(back.shape) == (2, 10, 9, 8) and float(back[:, 0, 0, 0].sum()) == 0.0
    empty, state = Preprocessor(meta)(np.zeros((6, 6, 6), np.float32), np.eye(4))
    assert tuple(empty.shape) == (1, 6, 6, 6), "no foreground: the whole image is kept"


def test_unknown_step_is_named():
    with pytest.raises(ValueError, match="the preprocessing step 'denoise' is not one this pipeline knows"):
        Preprocessor(card_from_dict({"card_version": 3, "labels": {"0": "background"},
                                     "preprocessing": [{"kind": "denoise"}]}, "test card"))
