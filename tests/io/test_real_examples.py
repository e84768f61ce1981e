"""IO on real scans from ../shared/data/ct_mr_examples (TotalSegmentator test files); skipped where absent."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from nibabel.orientations import apply_orientation, io_orientation, ornt_transform

from pipeline.io import Geometry, is_dicom_series, label_suffix_for, read_header, read_image, write_image

pytestmark = pytest.mark.realdata


def _to_ras(array, geometry):
    transform = ornt_transform(io_orientation(geometry.affine), np.array([[0, 1], [1, 1], [2, 1]]))
    return apply_orientation(array, transform)


def test_jpeg2000_dicom_series_has_the_geometry_of_its_nifti_label(ct_mr_examples):
    series = ct_mr_examples / "example_ct_dicom"
    assert is_dicom_series(series)
    ct = read_image(series)
    seg = read_image(ct_mr_examples / "example_seg_dicom.nii.gz")
    assert ct.array.shape == (512, 512, 20)
    assert np.allclose(ct.geometry.spacing, (0.9765625, 0.9765625, 2.0))
    assert ct.geometry.orientation == "LPS" and seg.geometry.orientation == "LAS"
    assert ct.geometry.as_orientation("RAS").same_grid(seg.geometry.as_orientation("RAS"))
    # the pixels decode to Hounsfield units (rescale applied): air near -1000, labelled organs soft tissue
    ct_ras, seg_ras = _to_ras(ct.array, ct.geometry), _to_ras(seg.array, seg.geometry)
    assert ct.array.min() <= -1000 and np.percentile(ct.array, 5) < -900
    organ_hu = ct_ras[seg_ras > 0]
    assert organ_hu.size > 1000 and -200 < np.median(organ_hu) < 300
    # stored the other way round, the label would land largely outside the body
    flipped = ct_ras[:, ::-1, :][seg_ras > 0]
    assert np.mean(organ_hu < -500) < 0.05 and np.mean(flipped < -500) > 0.2


def test_monai_itkreader_reads_the_series_on_the_same_grid(ct_mr_examples):
    from monai.transforms import LoadImage

    img = LoadImage(reader="ITKReader", image_only=True)(str(ct_mr_examples / "example_ct_dicom"))
    ours = read_header(ct_mr_examples / "example_ct_dicom").geometry
    assert tuple(img.shape) == ours.shape
    assert np.allclose(img.affine.numpy(), ours.affine, atol=1e-3)


def test_lps_mr_label_round_trips_without_a_flip(ct_mr_examples, tmp_path):
    image = read_image(ct_mr_examples / "example_mr_sm.nii.gz")
    label = read_image(ct_mr_examples / "example_seg_mr.nii.gz")
    assert image.geometry.orientation == "LPS"
    assert label.geometry.same_grid(image.geometry)
    out = write_image(label.array.astype(np.uint8), image.geometry, tmp_path / ("seg" + label_suffix_for(image.path)))
    original = nib.load(ct_mr_examples / "example_seg_mr.nii.gz")
    written = nib.load(out)
    assert "".join(nib.aff2axcodes(written.affine)) == "LPS"
    assert np.allclose(written.affine, original.affine, atol=1e-4)
    assert np.array_equal(np.asarray(written.dataobj), np.asarray(original.dataobj).astype(np.uint8))


def test_label_for_dicom_input_is_nifti_on_the_series_grid(ct_mr_examples, tmp_path):
    series = ct_mr_examples / "example_ct_dicom"
    ct = read_image(series)
    suffix = label_suffix_for(series)
    assert suffix == ".nii.gz"
    labels = (ct.array > 100).astype(np.uint8)
    out = write_image(labels, ct.geometry, tmp_path / f"example_ct_dicom{suffix}")
    back = read_image(out)
    assert back.geometry.same_grid(ct.geometry) and np.array_equal(back.array, labels)


def test_ct_nifti_reads_hounsfield_units(ct_mr_examples):
    ct = read_image(ct_mr_examples / "example_ct.nii.gz")
    assert ct.array.shape == (122, 101, 112) and ct.array.dtype == np.int32
    assert ct.geometry.orientation == "RAS" and np.allclose(ct.geometry.spacing, 3.0)
    assert ct.array.min() >= -2048 and ct.array.max() > 500


def test_nifti_grids_stay_itks_where_sform_and_qform_agree(ct_mr_examples, hippocampus, tmp_path):
    """The NIfTI rule (nibabel's) and ITK part only on odd headers: on these real files the grid is ITK's, exactly."""
    files = sorted(ct_mr_examples.glob("*.nii.gz")) + sorted((hippocampus / "imagesTr").glob("*.nii.gz"))[:3] \
        + sorted((hippocampus / "labelsTr").glob("*.nii.gz"))[:2]
    assert len(files) >= 8
    for path in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        ours = read_header(path).geometry
        assert ours.same_grid(Geometry.from_sitk(reader), spacing_tol=1e-6, position_tol=1e-5, direction_tol=1e-6), \
            path.name
        assert np.allclose(ours.affine, nib.load(path).affine, atol=1e-5), path.name
    mr = read_image(ct_mr_examples / "example_mr_sm.nii.gz")  # stored LPS
    out = write_image((mr.array > mr.array.mean()).astype(np.uint8), mr.geometry, tmp_path / "mr_seg.nii.gz")
    written, source = nib.load(out).header, nib.load(ct_mr_examples / "example_mr_sm.nii.gz").header
    assert (written["sform_code"], written["qform_code"]) == (source["sform_code"], source["qform_code"])
    assert np.allclose(written.get_best_affine(), source.get_best_affine(), atol=1e-5)
