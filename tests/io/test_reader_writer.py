from __future__ import annotations

from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from pipeline.errors import ImageReadError, ImageWriteError
from pipeline.io import Geometry, label_suffix_for, read_case, read_header, read_image, write_image
from pipeline.io.writer import read_notes

GEOM = Geometry((9, 7, 5), (0.8, 0.8, 2.5), (12.0, -3.0, 40.0), (1, 0, 0, 0, -1, 0, 0, 0, 1))  # LAS


def _array(shape=GEOM.shape, dtype=np.int16):
    return np.arange(np.prod(shape), dtype=dtype).reshape(shape)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_round_trip_keeps_voxels_in_index_order_and_geometry(tmp_path, suffix):
    path = write_image(_array(), GEOM, tmp_path / f"img{suffix}")
    vol = read_image(path)
    assert vol.array.shape == (9, 7, 5)
    itk_image = sitk.ReadImage(str(path))
    assert itk_image.GetPixel((1, 2, 3)) == vol.array[1, 2, 3] == _array()[1, 2, 3], "index order must be x, y, z"
    assert np.array_equal(vol.array, _array())
    assert vol.geometry.same_grid(GEOM) and vol.geometry.orientation == "LAS"
    assert read_header(path).geometry.same_grid(GEOM)
    assert [p.name for p in tmp_path.iterdir()] == [f"img{suffix}"], "no temporary files may remain"


def test_mhd_header_plus_raw(tmp_path):
    img = sitk.GetImageFromArray(_array().transpose(2, 1, 0).copy())
    GEOM.apply_to(img)
    sitk.WriteImage(img, str(tmp_path / "x.mhd"))
    vol = read_image(tmp_path / "x.mhd")
    assert np.array_equal(vol.array, _array()) and vol.geometry.same_grid(GEOM)
    assert label_suffix_for(tmp_path / "x.mhd") == ".mha"


def test_nifti_affine_agrees_with_nibabel(tmp_path):
    path = write_image(_array(), GEOM, tmp_path / "x.nii.gz")
    assert np.allclose(nib.load(path).affine, GEOM.affine, atol=1e-5)


def test_2d_round_trip(tmp_path):
    g = Geometry((6, 5), (0.5, 0.7), (1.0, 2.0))
    path = write_image(_array((6, 5), np.uint8), g, tmp_path / "s.nii.gz")
    vol = read_image(path)
    assert vol.array.shape == (6, 5) and vol.geometry.same_grid(g)


def test_read_errors_name_the_file_and_reason(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "missing.nii.gz")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ImageReadError, match="unsupported file ending; supported are .nii.gz"):
        read_image(tmp_path / "notes.txt")
    (tmp_path / "bad.nii.gz").write_bytes(b"\x00garbage")
    with pytest.raises(ImageReadError, match=r"cannot read image '.*bad.nii.gz'"):
        read_image(tmp_path / "bad.nii.gz")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ImageReadError, match="holds no DICOM series"):
        read_image(tmp_path / "empty_dir")


@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_4d_file_reads_as_channels_last_on_its_3d_grid(tmp_path, dtype):
    data = (np.random.default_rng(0).random((5, 6, 4, 3)) * 100).astype(dtype)
    nib.save(nib.Nifti1Image(data, GEOM.affine), tmp_path / "four.nii.gz")
    vol = read_image(tmp_path / "four.nii.gz")
    assert vol.array.shape == (5, 6, 4, 3) and vol.channels == 3 and np.array_equal(vol.array, data)
    header = read_header(tmp_path / "four.nii.gz")
    assert header.components == 3 and header.geometry.shape == (5, 6, 4)
    assert np.allclose(vol.geometry.affine, GEOM.affine, atol=1e-5) and vol.geometry.orientation == "LAS"


def test_5d_image_is_rejected_with_its_dimensions(tmp_path):
    img = sitk.Image([3, 3, 3, 2, 2], sitk.sitkFloat32)
    sitk.WriteImage(img, str(tmp_path / "five.nrrd"))
    with pytest.raises(ImageReadError, match="got 5 dimensions"):
        read_image(tmp_path / "five.nrrd")
    with pytest.raises(ImageReadError, match="got 5 dimensions"):
        read_header(tmp_path / "five.nrrd")


def test_read_case_stacks_channel_files_on_one_grid(tmp_path):
    a, b = _array(dtype=np.float32), _array(dtype=np.float32) * 2
    write_image(a, GEOM, tmp_path / "c_0000.nii.gz")
    write_image(b, GEOM, tmp_path / "c_0001.nii.gz")
    vol = read_case([tmp_path / "c_0000.nii.gz", tmp_path / "c_0001.nii.gz"])
    assert vol.array.shape == (*GEOM.shape, 2) and np.array_equal(vol.array[..., 1], b)
    assert vol.geometry.same_grid(GEOM) and read_case(tmp_path / "c_0000.nii.gz").channels == 1
    other = Geometry(GEOM.shape, (0.8, 0.8, 3.0), GEOM.origin, GEOM.direction)
    write_image(b, other, tmp_path / "d_0001.nii.gz")
    with pytest.raises(ImageReadError, match=r"d_0001.nii.gz': all channels of a case must share one grid; "
                                             r"channel 1 differs from c_0000.nii.gz: spacing \(0.8, 0.8, 2.5\) vs "
                                             r"\(0.8, 0.8, 3\)"):
        read_case([tmp_path / "c_0000.nii.gz", tmp_path / "d_0001.nii.gz"])


def test_write_errors(tmp_path):
    with pytest.raises(ImageWriteError, match="output ending must be one of"):
        write_image(_array(), GEOM, tmp_path / "x.png")
    with pytest.raises(ImageWriteError, match=r"array shape \(9, 7, 4\) must equal the grid shape \(9, 7, 5\)"):
        write_image(_array((9, 7, 4)), GEOM, tmp_path / "x.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        partial = args[1]
        with open(partial, "wb") as handle:
            handle.write(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", boom)
    with pytest.raises(ImageWriteError, match="disk full"):
        write_image(_array(), GEOM, tmp_path / "x.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_bool_labels_are_written_as_uint8(tmp_path):
    path = write_image(_array() % 2 == 0, GEOM, tmp_path / "m.nii.gz")
    assert read_image(path).array.dtype == np.uint8


def test_agrees_with_monai_itkreader(tmp_path):
    from monai.transforms import LoadImage

    for code_dir in [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, -1, 0, 0, 0, 1), (1, 0, 0, 0, -1, 0, 0, 0, 1)]:
        g = Geometry(GEOM.shape, GEOM.spacing, GEOM.origin, code_dir)
        path = write_image(_array(), g, tmp_path / "m.nii.gz")
        for reader in ("ITKReader", "NibabelReader"):
            img = LoadImage(reader=reader, image_only=True)(str(path))
            assert np.allclose(img.affine.numpy(), g.affine, atol=1e-4), reader
            assert np.array_equal(img.numpy(), _array()), reader


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_float_voxels_with_nan_are_written_and_verified(tmp_path, suffix):
    """The read-back check counts NaN as equal to NaN (a probability map may hold some), and only there."""
    arr = np.linspace(0, 1, int(np.prod(GEOM.shape)), dtype=np.float32).reshape(GEOM.shape)
    arr[1, 2, 3] = np.nan
    path = write_image(arr, GEOM, tmp_path / f"p{suffix}")
    back = read_image(path).array
    assert np.isnan(back[1, 2, 3]) and np.isnan(back).sum() == 1
    assert np.array_equal(back, arr, equal_nan=True)


def test_channels_are_written_as_vectors_on_the_grid(tmp_path):
    arr = np.random.default_rng(0).random((*GEOM.shape, 2)).astype(np.float32)
    path = write_image(arr, GEOM, tmp_path / "two.nrrd")
    image = sitk.ReadImage(str(path))
    assert image.GetNumberOfComponentsPerPixel() == 2 and image.GetSize() == GEOM.shape
    assert np.array_equal(read_image(path).array, arr)


def test_channels_of_a_2d_image_are_written_as_vectors_too(tmp_path):
    """A 2D grid with channels is a 3D array, which SimpleITK would take as a 3D scalar image unless told."""
    flat = Geometry((9, 7), (0.8, 0.8), (12.0, -3.0))
    arr = np.random.default_rng(1).random((9, 7, 3)).astype(np.float32)
    image = sitk.ReadImage(str(write_image(arr, flat, tmp_path / "rgb.nrrd")))
    assert (image.GetDimension(), image.GetNumberOfComponentsPerPixel(), image.GetSize()) == (2, 3, (9, 7))


def test_compression_follows_the_flag_where_the_format_has_one(tmp_path):
    arr = np.zeros(GEOM.shape, np.uint8)
    packed = write_image(arr, GEOM, tmp_path / "packed.nrrd")
    raw = write_image(arr, GEOM, tmp_path / "raw.nrrd", compress=False)
    assert packed.stat().st_size < raw.stat().st_size and raw.stat().st_size >= arr.size


def test_a_voxel_type_the_format_has_no_code_for_is_one_error_naming_the_file(tmp_path):
    source = read_image(write_image(np.zeros(GEOM.shape, np.uint8), GEOM, tmp_path / "source.nii.gz"))
    with pytest.raises(ImageWriteError, match=r"half\.nii\.gz.*NIfTI cannot store these voxels"):
        write_image(np.zeros(GEOM.shape, np.float16), source.geometry, tmp_path / "half.nii.gz")  # nibabel's path
    with pytest.raises(ImageWriteError, match=r"half\.nrrd.*\.nrrd cannot store float16 voxels"):
        write_image(np.zeros(GEOM.shape, np.float16), GEOM, tmp_path / "half.nrrd")  # ITK's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.nii.gz"]


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_a_file_that_reads_back_different_is_refused_and_removed(tmp_path, monkeypatch, suffix):
    """What the read-back check is for: a write that did not keep the voxels (here a reader that flips one)."""
    real_nib, real_itk = nib.load, sitk.ReadImage

    def nib_load(path, *args, **kwargs):
        image = real_nib(path, *args, **kwargs)
        data = np.asarray(image.dataobj).copy()
        data.flat[0] += 1
        return nib.Nifti1Image(data, image.affine, image.header)

    def itk_read(path, *args, **kwargs):
        image = real_itk(path, *args, **kwargs)
        image[0, 0, 0] = image[0, 0, 0] + 1
        return image

    monkeypatch.setattr(nib, "load", nib_load)
    monkeypatch.setattr(sitk, "ReadImage", itk_read)
    with pytest.raises(ImageWriteError, match=r"out\..*incomplete or damaged: its voxels or placement read back"):
        write_image(np.zeros(GEOM.shape, np.uint8), GEOM, tmp_path / f"out{suffix}")
    assert list(tmp_path.iterdir()) == [], "nothing under the final name, no temporary left"


def test_detached_header_formats_get_their_single_file_variant():
    assert (label_suffix_for("a.nhdr"), label_suffix_for("a.mhd"), label_suffix_for("a.nrrd")) == \
        (".nrrd", ".mha", ".nrrd")


def test_messages_name_the_file_and_the_endings_it_could_have(tmp_path):
    with pytest.raises(ImageWriteError) as info:
        write_image(_array(), GEOM, tmp_path / "x.png")
    assert str(info.value).startswith(f"cannot write image '{tmp_path / 'x.png'}': output ending must be one of")
    assert "(readable endings: .nii.gz, .nii, " in str(info.value)
    with pytest.raises(ImageWriteError, match=r"^cannot write image '" + str(tmp_path / "y.nii.gz") + "': array shape"):
        write_image(_array((9, 7, 4)), GEOM, tmp_path / "y.nii.gz")


def test_a_dtype_given_is_the_dtype_written(tmp_path):
    arr = _array(dtype=np.float64) / 3
    path = write_image(arr, GEOM, tmp_path / "u.nrrd", dtype=np.uint8)
    back = read_image(path).array
    assert back.dtype == np.uint8 and np.array_equal(back, arr.astype(np.uint8))


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
def test_notes_are_cut_to_what_nifti_holds_and_absent_notes_read_as_none(tmp_path, suffix):
    """NIfTI's descrip holds 79 characters and its terminator; ITK refused a longer line outright."""
    notes = "pipeline segment " + "x" * 61 + "yz"
    assert read_notes(write_image(_array(), GEOM, tmp_path / f"n{suffix}", notes=notes)) == notes[:79]
    assert read_notes(write_image(_array(), GEOM, tmp_path / f"e{suffix}", notes="é" * 50)) == "é" * 39
    assert read_notes(write_image(_array(), GEOM, tmp_path / f"none{suffix}")) in (None, "")


def test_a_nifti_sourced_grid_written_as_nrrd_is_a_nrrd(tmp_path):
    source = read_image(write_image(_array(), GEOM, tmp_path / "source.nii.gz"))
    path = write_image(_array(), source.geometry, tmp_path / "out.nrrd")
    assert path.read_bytes()[:4] == b"NRRD" and np.array_equal(read_image(path).array, _array())


def test_a_read_back_failure_is_its_last_line_or_its_type_naming_the_file(tmp_path, monkeypatch):
    from pipeline.io import writer

    def fails(message):
        def check(path):
            raise ValueError(message)
        return check

    monkeypatch.setattr(writer, "check_complete", fails("ITK said:\n  while reading\n  the header is short"))
    with pytest.raises(ImageWriteError) as info:
        write_image(_array(), GEOM, tmp_path / "a.mha")
    assert str(info.value) == f"cannot write image '{tmp_path / 'a.mha'}': the file written is incomplete or damaged: the header is short"
    monkeypatch.setattr(writer, "check_complete", fails("  "))
    with pytest.raises(ImageWriteError, match=r"a\.mha': the file written is incomplete or damaged: ValueError$"):
        write_image(_array(), GEOM, tmp_path / "a.mha")
    assert list(tmp_path.iterdir()) == []


def test_an_itk_write_error_is_its_last_line_naming_the_file(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("Exception thrown in SimpleITK ImageFileWriter_Execute:\nITK ERROR: cannot write there")

    monkeypatch.setattr(sitk, "WriteImage", refuse)
    with pytest.raises(ImageWriteError) as info:
        write_image(_array(), GEOM, tmp_path / "b.mha")
    assert str(info.value) == f"cannot write image '{tmp_path / 'b.mha'}': ITK ERROR: cannot write there"


class _Moved:
    """The NIfTI placement read back, moved by ``delta`` on an off-diagonal entry of the affine."""

    delta = 0.0

    @classmethod
    def from_header(cls, header):
        from pipeline.io.nifti_header import NiftiTransforms

        placed = NiftiTransforms.from_header(header)
        affine = placed.affine.copy()
        affine[0, 1] += cls.delta
        return SimpleNamespace(affine=affine)


@pytest.mark.parametrize("delta, kept", [(5e-5, True), (1e-3, False)])
def test_nifti_placement_read_back_is_checked_to_1e_4(tmp_path, monkeypatch, delta, kept):
    from pipeline.io import writer

    source = read_image(write_image(_array(), GEOM, tmp_path / "source.nii.gz"))
    monkeypatch.setattr(_Moved, "delta", delta)
    monkeypatch.setattr(writer, "NiftiTransforms", _Moved)
    if kept:
        assert write_image(_array(), source.geometry, tmp_path / "out.nii.gz").exists()
    else:
        with pytest.raises(ImageWriteError, match=r"out\.nii\.gz': the file written is incomplete or damaged: its "
                                                  "voxels or placement read back different"):
            write_image(_array(), source.geometry, tmp_path / "out.nii.gz")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["source.nii.gz"]


def test_nifti_voxels_read_back_different_are_refused_on_the_nibabel_path(tmp_path, monkeypatch):
    source = read_image(write_image(_array(), GEOM, tmp_path / "source.nii.gz"))
    real = nib.load

    def flipped(path, *args, **kwargs):
        image = real(path, *args, **kwargs)
        data = np.asarray(image.dataobj).copy()
        data.flat[3] += 1
        return nib.Nifti1Image(data, image.affine, image.header)

    monkeypatch.setattr(nib, "load", flipped)
    with pytest.raises(ImageWriteError, match=r"out\.nii\.gz': the file written is incomplete"):
        write_image(_array(), source.geometry, tmp_path / "out.nii.gz")


def test_nan_reads_back_as_nan_on_the_nibabel_path(tmp_path):
    source = read_image(write_image(_array(), GEOM, tmp_path / "source.nii.gz"))
    arr = _array(dtype=np.float32)
    arr[0, 0, 0] = np.nan
    back = nib.load(str(write_image(arr, source.geometry, tmp_path / "p.nii.gz"))).get_fdata()
    assert np.isnan(back[0, 0, 0]) and np.array_equal(back, arr, equal_nan=True)
