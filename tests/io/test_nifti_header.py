"""NIfTI files read by the format's own rules (nibabel's), where ITK reads them otherwise, and label maps that carry
their input's sform and qform."""

from __future__ import annotations

import dataclasses
import logging

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from pipeline.errors import ImageReadError
from pipeline.io import read_header, read_image, read_notes, write_image

SHAPE = (9, 7, 5)  # odd sizes: a flipped axis cannot map onto itself
AFFINE = np.array([[0.8, 0, 0, 10.0], [0, 0.9, 0, -20.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]])  # RAS


def _data(dtype=np.int16):
    return np.arange(np.prod(SHAPE)).reshape(SHAPE).astype(dtype)


def _save(path, data=None, sform=AFFINE, sform_code=2, qform=AFFINE, qform_code=1, cls=nib.Nifti1Image, **fields):
    """A NIfTI file with the given placements; ``fields`` are set in the header last, as they are (no fixes)."""
    image = cls(_data() if data is None else data, None)
    image.set_sform(sform, sform_code)
    image.set_qform(qform, qform_code)
    nib.save(image, path)
    if fields:  # nibabel fixes what it calls wrong on load and save: patch the header's bytes instead
        size = image.header.sizeof_hdr
        raw = bytearray(path.read_bytes())
        header = type(image.header)(bytes(raw[:size]), check=False)
        for key, value in fields.items():
            if key.startswith("pixdim"):
                header["pixdim"][int(key[6:])] = value
            else:
                header[key] = value
        raw[:size] = header.binaryblock
        path.write_bytes(bytes(raw))
    return path


def _itk_geometry(path):
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection()


@pytest.mark.parametrize("value", [0.0, float("nan"), float("inf")])
def test_a_zero_or_non_finite_voxel_size_is_refused_in_one_line(tmp_path, value):
    path = _save(tmp_path / "flat.nii", pixdim3=value)
    assert _itk_geometry(path)[0][2] == 1.0 or value != 0.0, "ITK reads pixdim 0 as 1 mm"
    for read in (read_header, read_image):
        with pytest.raises(ImageReadError) as info:
            read(path)
        assert str(info.value) == (f"cannot read image '{path}': voxel spacing must be non-zero and finite, "
                                   f"pixdim[1:4] = (0.8, 0.9, {value:g})")


def test_a_2d_file_needs_no_third_voxel_size(tmp_path):
    path = tmp_path / "slice.nii.gz"
    image = nib.Nifti1Image(np.ones((6, 5), np.uint8), np.diag([0.5, 0.7, 1.0, 1.0]))
    image.header["pixdim"][3] = 0.0  # ITK writes 2D files this way
    nib.save(image, path)
    assert read_image(path).geometry.spacing == pytest.approx((0.5, 0.7))


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_a_vox_offset_inside_the_header_is_refused(tmp_path, suffix):
    path = tmp_path / f"early{suffix}"
    _save(tmp_path / "early.nii", vox_offset=100)
    if suffix == ".nii.gz":
        import gzip

        path.write_bytes(gzip.compress((tmp_path / "early.nii").read_bytes()))
    with pytest.raises(ImageReadError, match=r"early\.nii(\.gz)?': vox_offset \(where the voxels start\) must be at "
                                             r"least 352 in a single-file NIfTI-1, got 100$"):
        read_image(path)


def test_voxels_after_an_extension_are_read_from_vox_offset(tmp_path):
    image = nib.Nifti1Image(_data(), AFFINE)
    image.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"x" * 100))
    nib.save(image, tmp_path / "ext.nii")
    assert nib.load(tmp_path / "ext.nii").dataobj.offset > 352
    assert np.array_equal(read_image(tmp_path / "ext.nii").array, _data())


def test_the_sform_places_the_image_when_sform_and_qform_disagree(tmp_path, caplog):
    shifted = AFFINE @ np.array([[-1, 0, 0, SHAPE[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    shifted[:3, 3] += 50.0
    path = _save(tmp_path / "two.nii.gz", sform=shifted, sform_code=2, qform=AFFINE, qform_code=1)
    with caplog.at_level(logging.WARNING, logger="pipeline.io.nifti_header"):
        volume = read_image(path)
    assert np.allclose(volume.geometry.affine, nib.load(path).affine, atol=1e-5)
    assert np.allclose(volume.geometry.affine, shifted, atol=1e-5) and volume.geometry.orientation == "LAS"
    assert np.array_equal(volume.array, _data())
    warning = [r.getMessage() for r in caplog.records if "disagree" in r.getMessage()]
    assert len(warning) == 1 and str(path) in warning[0] and "origin" in warning[0] and "direction" in warning[0]


def test_a_label_map_carries_its_inputs_sform_and_qform(tmp_path):
    shifted = AFFINE.copy()
    shifted[:3, 3] += 50.0
    source = _save(tmp_path / "in.nii.gz", sform=shifted, sform_code=2, qform=AFFINE, qform_code=1)
    volume = read_image(source)
    out = write_image((volume.array % 3).astype(np.uint8), volume.geometry, tmp_path / "in_seg.nii.gz",
                      notes="pipeline segment test")
    written, original = nib.load(out).header, nib.load(source).header
    assert written.get_sform(coded=True)[1] == 2 and written.get_qform(coded=True)[1] == 1
    assert np.allclose(written.get_sform(), original.get_sform()) and np.allclose(written.get_qform(),
                                                                                   original.get_qform())
    assert np.allclose(nib.load(out).affine, nib.load(source).affine)  # nibabel, FSL: where they put the input
    for ours, theirs in zip(_itk_geometry(out), _itk_geometry(source)):  # ITK: where ITK puts the input
        assert np.allclose(ours, theirs)
    assert read_notes(out) == "pipeline segment test"
    back = read_image(out)
    assert back.geometry == volume.geometry and np.array_equal(back.array, volume.array % 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nii.gz", "in_seg.nii.gz"], "no temporary files"


def test_a_grid_changed_after_reading_is_written_from_its_geometry(tmp_path):
    volume = read_image(_save(tmp_path / "in.nii"))
    coarser = dataclasses.replace(volume.geometry, spacing=(1.6, 1.8, 5.0))
    assert coarser.nifti is volume.geometry.nifti, "replace keeps the record: the writer must notice"
    out = write_image(np.zeros(SHAPE, np.uint8), coarser, tmp_path / "out.nii")
    assert read_image(out).geometry.same_grid(coarser)


@pytest.mark.parametrize("fields, field, why", [
    ({"srow_x": [float("nan"), 0, 0, 1]}, "sform", r"it holds non-finite numbers \(nan, 0, 0, 1, "),
    ({"sform_code": 0, "quatern_b": 0.9, "quatern_c": 0.9}, "qform",
     r"its quaternion \(b, c, d\) = \(0\.9, 0\.9, 0\) is no rotation"),
])
def test_a_placement_that_is_no_grid_is_refused_in_one_line(tmp_path, fields, field, why):
    path = _save(tmp_path / "odd.nii", **fields)
    code = 2 if field == "sform" else 1
    with pytest.raises(ImageReadError, match=rf"odd\.nii': the {field} \({field}_code {code}\) must place the image "
                                             rf"on a grid: {why}") as info:
        read_header(path)
    assert "\n" not in str(info.value)


def test_a_negative_voxel_size_counts_by_its_size_as_in_nibabel(tmp_path):
    path = _save(tmp_path / "neg.nii", sform_code=0, qform_code=1, pixdim2=-0.9, pixdim0=-1.0)
    assert _itk_geometry(path)[0][1] < 0, "ITK takes the sign as a flip"
    volume = read_image(path)
    assert np.allclose(volume.geometry.affine, nib.load(path).affine, atol=1e-5)
    assert volume.geometry.spacing == pytest.approx((0.8, 0.9, 2.5))
    assert volume.geometry.orientation == "RAI"  # qfac -1 flips the third axis, the sign of pixdim[2] nothing
    assert np.array_equal(volume.array, _data())


def test_a_file_without_placement_reads_as_before_with_a_warning(tmp_path, caplog):
    path = _save(tmp_path / "bare.nii", sform_code=0, qform_code=0)
    with caplog.at_level(logging.WARNING, logger="pipeline.io.nifti_header"):
        volume = read_image(path)
    spacing, origin, direction = _itk_geometry(path)
    assert volume.geometry.spacing == pytest.approx(spacing) and volume.geometry.origin == pytest.approx(origin)
    assert volume.geometry.direction == pytest.approx(direction)
    assert any("sform_code and qform_code are both 0" in r.getMessage() for r in caplog.records)
    out = write_image(volume.array, volume.geometry, tmp_path / "bare_seg.nii")
    assert nib.load(out).header["sform_code"] == nib.load(out).header["qform_code"] == 0
    assert read_image(out).geometry == volume.geometry


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_nifti2_is_read_with_its_affine(tmp_path, dtype):
    path = _save(tmp_path / "two.nii.gz", data=_data(dtype), cls=nib.Nifti2Image)
    header = read_header(path)
    assert header.reader == "nibabel" and header.geometry.shape == SHAPE
    assert header.pixel_type == sitk.GetPixelIDValueAsString(sitk.GetImageFromArray(_data(dtype)).GetPixelID())
    volume = read_image(path)
    assert volume.array.dtype == dtype and np.array_equal(volume.array, _data(dtype))
    assert np.allclose(volume.geometry.affine, nib.load(path).affine, atol=1e-6)
    out = write_image(volume.array > 10, volume.geometry, tmp_path / "two_seg.nii.gz")
    assert np.allclose(nib.load(out).affine, nib.load(path).affine, atol=1e-5)


def test_nifti2_with_channels_and_its_vox_offset_rule(tmp_path):
    data = np.random.default_rng(0).random((*SHAPE, 2)).astype(np.float32)
    volume = read_image(_save(tmp_path / "four.nii", data=data, cls=nib.Nifti2Image))
    assert volume.channels == 2 and np.array_equal(volume.array, data)
    with pytest.raises(ImageReadError, match=r"must be at least 544 in a single-file NIfTI-2, got 352$"):
        read_image(_save(tmp_path / "low.nii", cls=nib.Nifti2Image, vox_offset=352))


def test_transforms_round_trip_through_a_header():
    from pipeline.io.nifti_header import NiftiTransforms

    header = nib.Nifti1Header()
    header.set_sform(AFFINE, 4)
    header.set_qform(AFFINE @ np.diag([1, -1, 1, 1.0]), 1)
    transforms = NiftiTransforms.from_header(header)
    copy = nib.Nifti1Header()
    transforms.to_header(copy)
    assert NiftiTransforms.from_header(copy) == transforms
    assert np.allclose(transforms.qform, header.get_qform()) and np.allclose(transforms.affine, AFFINE)


def test_files_that_are_not_nifti_are_left_to_the_image_reader(tmp_path):
    from pipeline.io.nifti_header import read_nifti_header

    (tmp_path / "junk.nii.gz").write_bytes(b"\x00garbage")
    assert read_nifti_header(tmp_path / "junk.nii.gz") is None
    with pytest.raises(ImageReadError, match="no image reader recognises its content"):
        read_image(tmp_path / "junk.nii.gz")
