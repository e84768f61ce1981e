"""LoadOriginald: the label file as stored, on the grid Invertd returns predictions to."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, EnsureChannelFirstd, Invertd, LoadImaged, Orientationd, Spacingd

from pipeline.transforms import LoadOriginald


def test_original_label_matches_the_inverted_prediction_grid(tmp_path):
    rng = np.random.default_rng(0)
    label = (rng.random((20, 18, 9)) > 0.7).astype(np.uint8)
    affine = np.diag([-0.8, 0.8, 3.0, 1.0])  # LAS, anisotropic: nearest resampling to 1.5 mm loses voxels
    nib.save(nib.Nifti1Image(label, affine), tmp_path / "label.nii.gz")
    nib.save(nib.Nifti1Image(label.astype(np.float32), affine), tmp_path / "image.nii.gz")
    ras = (("L", "R"), ("P", "A"), ("I", "S"))
    pre = Compose([LoadImaged(["image", "label"], reader="ITKReader", image_only=True),
                   EnsureChannelFirstd(["image", "label"]), Orientationd(["image", "label"], axcodes="RAS", labels=ras),
                   Spacingd(["image", "label"], pixdim=[1.5, 1.5, 1.5], mode=["bilinear", "nearest"])])
    item = pre({"image": str(tmp_path / "image.nii.gz"), "label": str(tmp_path / "label.nii.gz")})
    item["pred"] = item["label"].clone()
    item = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True)(item)
    item = LoadOriginald("label")(item)
    original = item["label"]
    assert tuple(original.shape) == (1, 20, 18, 9) == tuple(item["pred"].shape)
    assert torch.equal(original[0].to(torch.uint8), torch.from_numpy(LoadImaged("l", reader="ITKReader",
                       image_only=True)({"l": str(tmp_path / "label.nii.gz")})["l"].numpy().astype(np.uint8)))
    assert not torch.equal(item["pred"].round(), original), "the inverted resampled label is not the original"


def test_an_item_without_a_source_file_is_one_clear_error():
    with pytest.raises(ValueError, match="'label': the original file must be known"):
        LoadOriginald("label")({"label": torch.zeros(1, 2, 2, 2)})
