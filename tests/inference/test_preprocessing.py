from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose

from pipeline.export import load_torchscript
from pipeline.inference import build_preprocessing, to_metatensor
from pipeline.io import read_image

from .conftest import REPO


@pytest.mark.parametrize("bundle, modality", [("unetpp_ct_segmentation", "ct"), ("unetpp_mri_segmentation", "mri")])
def test_deployed_preprocessing_equals_the_bundle_chain(bundle, modality, exported, ct_dataset, mri_dataset):
    data = {"ct": ct_dataset, "mri": mri_dataset}[modality]
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "train.json"))
    bundle_chain = Compose(parser.get_parsed_content("preprocessing"))
    _, meta = load_torchscript(exported[bundle])
    ours = build_preprocessing(meta)
    for index in (0, 1, 2):  # RAS, LPS, LAS stored
        path = str(data / "imagesTr" / f"{modality}_{index:03d}.nii.gz")
        expected = bundle_chain({"image": path})["image"]
        volume = read_image(path)
        got = ours({"image": to_metatensor(volume.array, volume.geometry, path)})["image"]
        assert got.shape == expected.shape
        assert torch.allclose(got.affine.float(), expected.affine.float(), atol=1e-4)
        assert torch.allclose(got.as_tensor(), expected.as_tensor(), atol=1e-4)


def test_unknown_step_is_named():
    with pytest.raises(ValueError, match="unknown preprocessing step 'denoise'"):
        build_preprocessing({"preprocessing": {"steps": [{"kind": "denoise"}]}})


def test_to_metatensor_matches_monai_loader(ct_dataset):
    from monai.transforms import LoadImage

    path = str(ct_dataset / "imagesTr/ct_001.nii.gz")  # LPS
    volume = read_image(path)
    mt = to_metatensor(volume.array, volume.geometry, path)
    ref = LoadImage(reader="ITKReader", image_only=True, ensure_channel_first=True)(path)
    assert mt.shape == ref.shape and np.allclose(mt.affine, ref.affine, atol=1e-5)
    assert torch.equal(mt.as_tensor(), ref.as_tensor().float())
