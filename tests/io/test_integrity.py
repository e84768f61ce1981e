"""Truncated files, huge headers and full disks: found before a voxel is trusted or a file is named."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from pipeline.errors import DiskFullError, ImageReadError, PipelineError
from pipeline.io import Geometry, read_image, read_notes, write_image
from pipeline.io.integrity import check_complete, check_fits, format_bytes

GEOM = Geometry((40, 40, 30), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))


def _nifti(path, shape=(40, 40, 30), dtype=np.int16):
    data = (np.arange(np.prod(shape)) % 251).reshape(shape).astype(dtype)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return data


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_intact_files_pass_and_read(tmp_path, suffix):
    data = _nifti(tmp_path / f"a{suffix}")
    check_complete(tmp_path / f"a{suffix}")
    assert np.array_equal(read_image(tmp_path / f"a{suffix}").array, data)


def test_truncated_uncompressed_nifti_is_an_error_not_zeros(tmp_path):
    _nifti(tmp_path / "a.nii")
    raw = (tmp_path / "a.nii").read_bytes()
    (tmp_path / "a.nii").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageReadError, match=r"a\.nii': the file is truncated: the header declares 96352 bytes"):
        read_image(tmp_path / "a.nii")


def test_truncated_gzip_nifti_is_an_error_not_zeros(tmp_path):
    _nifti(tmp_path / "a.nii.gz")
    raw = (tmp_path / "a.nii.gz").read_bytes()
    (tmp_path / "a.nii.gz").write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(ImageReadError, match="truncated or damaged: its compressed data ends early"):
        read_image(tmp_path / "a.nii.gz")


def test_complete_gzip_stream_of_short_data_is_an_error(tmp_path):
    _nifti(tmp_path / "a.nii")
    raw = (tmp_path / "a.nii").read_bytes()
    (tmp_path / "b.nii.gz").write_bytes(gzip.compress(raw[:-1000]))  # a valid stream, 1000 bytes short
    with pytest.raises(ImageReadError, match="holds 95352 after decompression"):
        read_image(tmp_path / "b.nii.gz")


def test_a_huge_header_is_refused_before_any_allocation(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape((4000, 4000, 4000))
    header.set_data_dtype(np.int16)
    header["vox_offset"] = 352  # the voxels follow the header, as the format requires of a .nii
    with open(tmp_path / "huge.nii", "wb") as handle:
        handle.write(header.binaryblock + b"\0" * 4)
    with pytest.raises(ImageReadError, match=r"reading the image \(4000x4000x4000, 16-bit signed integer\) needs "
                                             r"119\.2 GiB of memory"):
        read_image(tmp_path / "huge.nii")


def test_check_fits_names_the_size():
    check_fits(100, None, "x", available=1000)
    with pytest.raises(PipelineError, match=r"^resampling needs 1\.0 KiB of memory, more than 50% of the 1000 B"):
        check_fits(1024, None, "resampling", available=1000)
    assert format_bytes(3 * 2**30) == "3.0 GiB"


def test_labels_carry_notes_and_read_back(tmp_path):
    labels = np.random.default_rng(0).integers(0, 3, GEOM.shape).astype(np.uint8)
    write_image(labels, GEOM, tmp_path / "a_seg.nii.gz", notes="pipeline segment 0123456789abcdef")
    assert read_notes(tmp_path / "a_seg.nii.gz") == "pipeline segment 0123456789abcdef"
    assert read_notes(tmp_path / "missing.nii.gz") is None


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_a_full_disk_leaves_no_file_and_says_so(small_disk, suffix):
    noise = np.random.default_rng(1).integers(0, 255, (96, 96, 96)).astype(np.uint8)  # 884 KiB, incompressible
    geometry = Geometry(noise.shape, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    with pytest.raises(DiskFullError, match=r"a_seg\S*': no space left on the device"):
        write_image(noise, geometry, small_disk.path / f"a_seg{suffix}")
    assert list(small_disk.path.iterdir()) == [], f"nothing may remain ({small_disk.kind})"
    small = np.zeros((8, 8, 8), np.uint8)
    write_image(small, Geometry(small.shape, (1.0,) * 3, (0.0,) * 3, GEOM.direction), small_disk.path / "b.nii.gz")
    assert np.array_equal(read_image(small_disk.path / "b.nii.gz").array, small), "a file that fits is written"


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_a_full_disk_stops_a_label_map_that_carries_its_inputs_nifti_fields(small_disk, tmp_path, suffix):
    noise = np.random.default_rng(2).integers(0, 255, (96, 96, 96)).astype(np.uint8)
    nib.save(nib.Nifti1Image(np.zeros(noise.shape, np.uint8), np.diag([0.9, 0.9, 2.0, 1.0])), tmp_path / "in.nii.gz")
    geometry = read_image(tmp_path / "in.nii.gz").geometry
    assert geometry.nifti is not None, "written by nibabel with the input's sform and qform"
    with pytest.raises(DiskFullError, match=r"a_seg\S*': no space left on the device"):
        write_image(noise, geometry, small_disk.path / f"a_seg{suffix}")
    assert list(small_disk.path.iterdir()) == [], f"nothing may remain ({small_disk.kind})"
