from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from pipeline.data import Datalist, DatasetValidationError, load_msd, validate_datalist
from pipeline.errors import DatasetError


@pytest.fixture()
def broken(tmp_path, ct_dataset):
    """A copy of the synthetic set, returned with its datalist for the test to break."""
    root = tmp_path / "ds"
    shutil.copytree(ct_dataset, root)
    return root


def _problems(root):
    with pytest.raises(DatasetValidationError) as info:
        validate_datalist(load_msd(root), progress=False)
    return info.value.problems


def test_clean_dataset_passes_and_counts_labels(ct_dataset):
    reports = validate_datalist(load_msd(ct_dataset), progress=False)
    assert len(reports) == 6
    assert all(set(r.label_counts) == {0, 1, 2} for r in reports)
    assert sum(reports[0].label_counts.values()) == 40 * 40 * 12


def test_empty_dataset(tmp_path):
    with pytest.raises(DatasetError, match="at least one case, got 0 cases"):
        validate_datalist(Datalist([], source=str(tmp_path)))


def test_missing_label(broken):
    (broken / "labelsTr/ct_002.nii.gz").unlink()
    (problem,) = _problems(broken)
    assert problem.where.endswith("labelsTr/ct_002.nii.gz") and "missing label" in str(problem)


def test_unreadable_image(broken):
    (broken / "imagesTr/ct_001.nii.gz").write_bytes(b"this is not a nifti file")
    (problem,) = _problems(broken)
    assert problem.where.endswith("imagesTr/ct_001.nii.gz") and "images must be readable" in str(problem)


def test_shape_mismatch(broken):
    lab = nib.load(broken / "labelsTr/ct_003.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(lab.dataobj)[:, :, :10], lab.affine), broken / "labelsTr/ct_003.nii.gz")
    (problem,) = _problems(broken)
    assert "shape must equal the image's (40, 40, 12), got (40, 40, 10)" in str(problem)


def test_affine_mismatch(broken):
    lab = nib.load(broken / "labelsTr/ct_004.nii.gz")
    affine = lab.affine.copy()
    affine[0, 3] += 5.0  # shifted 5 mm
    nib.save(nib.Nifti1Image(np.asarray(lab.dataobj), affine), broken / "labelsTr/ct_004.nii.gz")
    (problem,) = _problems(broken)
    assert "must lie on the image's grid" in str(problem) and "origin" in str(problem)
    assert problem.where.endswith("ct_004.nii.gz")


def test_label_values_outside_declared(broken):
    lab = nib.load(broken / "labelsTr/ct_005.nii.gz")
    data = np.asarray(lab.dataobj).copy()
    data[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(data, lab.affine), broken / "labelsTr/ct_005.nii.gz")
    (problem,) = _problems(broken)
    assert "among the declared labels [0, 1, 2], got [7]" in str(problem)


def test_fractional_label_values(broken):
    lab = nib.load(broken / "labelsTr/ct_000.nii.gz")
    data = np.asarray(lab.dataobj).astype(np.float32)
    data[1, 1, 1] = 0.5
    nib.save(nib.Nifti1Image(data, lab.affine), broken / "labelsTr/ct_000.nii.gz")
    (problem,) = _problems(broken)
    assert "whole numbers, got [0.5]" in str(problem)


def test_all_problems_reported_together(broken):
    (broken / "labelsTr/ct_002.nii.gz").unlink()
    (broken / "imagesTr/ct_001.nii.gz").write_bytes(b"junk")
    problems = _problems(broken)
    assert len(problems) == 2
    with pytest.raises(DatasetValidationError, match=r"dataset has 2 problem\(s\)"):
        validate_datalist(load_msd(broken), progress=False)


def test_channel_counts_must_agree_and_match_the_network(tmp_path):
    from pipeline.data import DatasetValidationError, load_datalist, validate_datalist, write_synthetic_dataset

    root = write_synthetic_dataset(tmp_path / "d", "mri", cases=3, seed=0, shape=(16, 18, 14), channels=2).parent
    validate_datalist(load_datalist(root), progress=False, channels=2)  # 4D files count their fourth axis
    with pytest.raises(DatasetValidationError, match=r"mri_000: every case must have the 1 channel\(s\) the "
                                                     r"network takes \(in_channels\), got 2"):
        validate_datalist(load_datalist(root), progress=False, channels=1)
    one = write_synthetic_dataset(tmp_path / "one", "mri", cases=1, seed=0, shape=(16, 18, 14))
    meta = json.loads((root / "dataset.json").read_text())
    meta["training"].append({"image": str(one.parent / "imagesTr/mri_000.nii.gz"),
                             "label": str(one.parent / "labelsTr/mri_000.nii.gz")})
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetValidationError, match=r"all cases must have the same number of channels \(2, as "
                                                     r"most cases have\), got 1"):
        validate_datalist(load_datalist(root), progress=False)


def test_channel_files_on_different_grids_are_named(tmp_path):
    from pipeline.data import DatasetValidationError, load_datalist, validate_datalist, write_synthetic_dataset
    from pipeline.io import Geometry, read_image, write_image

    root = write_synthetic_dataset(tmp_path, "mri", cases=2, seed=0, shape=(16, 18, 14), channels=2,
                                   layout="nnunet").parent
    moved = read_image(root / "imagesTr/mri_001_0001.nii.gz")
    g = moved.geometry
    write_image(moved.array, Geometry(g.shape, g.spacing, tuple(o + 5 for o in g.origin), g.direction),
                root / "imagesTr/mri_001_0001.nii.gz")
    with pytest.raises(DatasetValidationError, match=r"mri_001_0001.nii.gz: all channels of a case must share one "
                                                     r"grid, got origin"):
        validate_datalist(load_datalist(root), progress=False)


def test_duplicate_cases_and_images_are_problems(broken):
    meta = json.loads((broken / "dataset.json").read_text())
    meta["training"].append(dict(meta["training"][0]))
    (broken / "dataset.json").write_text(json.dumps(meta))
    problems = [str(p) for p in _problems(broken)]
    assert any("every case must appear once in the datalist, got 'ct_000' 2 times" in p for p in problems)
    assert any("every image must appear once" in p and "ct_000.nii.gz' 2 times" in p for p in problems)


@pytest.mark.parametrize("training, rule", [
    ("imagesTr/ct_000.nii.gz", "'training' must be a list of entries, got str"),
    ([7], "every 'training' entry must be an object with an 'image' (or an image path), got entry 0: 7"),
    ([{"image": 3, "label": "x.nii.gz"}], ("'image' of every 'training' entry must be a path or a list of paths, "
                                          "got entry 0: 3")),
])
def test_malformed_listing_is_one_error(broken, training, rule):
    meta = json.loads((broken / "dataset.json").read_text())
    meta["training"] = training
    (broken / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError) as info:
        load_msd(broken)
    assert str(info.value).endswith(rule) and str(info.value).count("\n") == 0


def test_a_truncated_label_is_a_problem(broken):
    raw = (broken / "labelsTr/ct_002.nii.gz").read_bytes()
    (broken / "labelsTr/ct_002.nii.gz").write_bytes(raw[: len(raw) // 2])
    (problem,) = _problems(broken)
    assert problem.where.endswith("labelsTr/ct_002.nii.gz") and "truncated" in str(problem)
