from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from pipeline.data import load_msd, write_synthetic_dataset
from pipeline.data.synthetic import ORIENTATIONS


def test_msd_layout_and_realistic_headers(ct_dataset):
    meta = json.loads((ct_dataset / "dataset.json").read_text())
    assert meta["numTraining"] == 6 and meta["modality"] == {"0": "CT"}
    assert meta["labels"] == {"0": "background", "1": "liver", "2": "kidney"}
    for index, entry in enumerate(meta["training"]):
        img = nib.load(ct_dataset / entry["image"])
        lab = nib.load(ct_dataset / entry["label"])
        assert img.shape == lab.shape == (40, 40, 12)
        assert np.allclose(img.affine, lab.affine)
        assert img.header["qform_code"] == 1 and img.header["sform_code"] == 1
        assert img.header.get_xyzt_units()[0] == "mm"
        assert np.allclose(img.header.get_zooms(), (0.8, 0.8, 2.5))
        assert "".join(nib.aff2axcodes(img.affine)) == ORIENTATIONS[index % 3]
        assert img.get_data_dtype() == np.int16


def test_orientations_differ_but_anatomy_agrees_in_world_space(tmp_path):
    # the same case written with a different orientation index must show the same anatomy once canonicalised
    write_synthetic_dataset(tmp_path, "ct", cases=3, seed=5, shape=(32, 32, 10))
    canon = [nib.as_closest_canonical(nib.load(tmp_path / f"labelsTr/ct_00{i}.nii.gz")) for i in range(3)]
    assert len({"".join(nib.aff2axcodes(nib.load(tmp_path / f"labelsTr/ct_00{i}.nii.gz").affine))
                for i in range(3)}) == 3
    for img in canon:
        assert "".join(nib.aff2axcodes(img.affine)) == "RAS"
        data = np.asarray(img.dataobj)
        # liver (label 1) lies on the patient's right: larger world x in RAS
        xs = np.argwhere(data == 1)[:, 0]
        assert xs.mean() > data.shape[0] / 2
    assert np.allclose(canon[0].affine, canon[1].affine, atol=1e-4)


def test_deterministic_per_seed_and_independent_of_case_count(tmp_path):
    a = write_synthetic_dataset(tmp_path / "a", "mri", cases=2, seed=7, shape=(24, 24, 24)).parent
    b = write_synthetic_dataset(tmp_path / "b", "mri", cases=3, seed=7, shape=(24, 24, 24)).parent
    c = write_synthetic_dataset(tmp_path / "c", "mri", cases=2, seed=8, shape=(24, 24, 24)).parent
    for name in ("imagesTr/mri_000.nii.gz", "labelsTr/mri_001.nii.gz"):
        assert np.array_equal(nib.load(a / name).get_fdata(), nib.load(b / name).get_fdata())
    assert not np.array_equal(nib.load(a / "imagesTr/mri_000.nii.gz").get_fdata(),
                              nib.load(c / "imagesTr/mri_000.nii.gz").get_fdata())


def test_mri_intensity_scales_and_uint8_cases(tmp_path):
    root = write_synthetic_dataset(tmp_path, "mri", cases=4, seed=0, shape=(24, 28, 24)).parent
    dtypes = [nib.load(root / f"imagesTr/mri_00{i}.nii.gz").get_data_dtype() for i in range(4)]
    assert dtypes[3] == np.uint8 and dtypes[0] == np.float32
    maxima = [float(nib.load(root / f"imagesTr/mri_00{i}.nii.gz").get_fdata().max()) for i in range(3)]
    assert max(maxima) / min(maxima) > 2


def test_2d_option_writes_2d_images_with_labels(tmp_path):
    root = write_synthetic_dataset(tmp_path, "ct", cases=2, seed=0, dims=2, shape=(40, 36)).parent
    dl = load_msd(root)
    img = nib.load(dl.items[0]["image"])
    lab = nib.load(dl.items[0]["label"])
    assert img.shape == lab.shape == (40, 36)
    assert set(np.unique(lab.get_fdata()).astype(int)) == {0, 1, 2}
    assert json.loads((root / "dataset.json").read_text())["tensorImageSize"] == "2D"


@pytest.mark.parametrize("kwargs, match", [
    ({"modality": "pet"}, "modality must be one of ct, mri, got 'pet'"),
    ({"cases": 0}, "cases must be >= 1, got 0"),
    ({"dims": 4}, "dims must be 2 or 3, got 4"),
    ({"shape": (2, 40, 40)}, "each >= 4"),
])
def test_bad_arguments(tmp_path, kwargs, match):
    args = {"modality": "ct", "cases": 1}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        write_synthetic_dataset(tmp_path, **args)


def test_no_partial_files_left(tmp_path):
    write_synthetic_dataset(tmp_path, "ct", cases=2, seed=0, shape=(16, 16, 8))
    leftovers = [p for p in tmp_path.rglob("*") if ".part" in p.name]
    assert leftovers == []
