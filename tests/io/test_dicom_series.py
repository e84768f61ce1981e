"""Reading DICOM series: sorted and checked on real files and on variants derived from them; refused in one line or
read on the grid the positions prove, never on an invented one."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from pipeline.errors import ImageReadError
from pipeline.io import read_image
from pipeline.io.dicom_scan import scan_dicom_folder
from pipeline.io.dicom_series import find_series

from ..conftest import write_dicom_series
from .dicom_variants import by_position, enhanced_copy, set_header, variant

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def ct(ct_mr_examples):
    """The real CT series (20 JPEG 2000 slices, 2 mm apart) and its volume as read."""
    series = ct_mr_examples / "example_ct_dicom"
    return series, read_image(series)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_the_intact_series_reads_as_itk_reads_it_whatever_the_file_names(ct, tmp_path):
    series, volume = ct
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series)))
    itk = reader.Execute()
    assert volume.geometry.shape == itk.GetSize() and np.allclose(volume.geometry.spacing, itk.GetSpacing())
    assert np.allclose(volume.geometry.origin, itk.GetOrigin()) and volume.dicom.warnings == []
    assert np.array_equal(volume.array, sitk.GetArrayFromImage(itk).transpose(2, 1, 0))

    def shuffle(files):
        for k, f in enumerate(files):
            f.rename(f.parent / f"IM{(k * 7) % len(files):04d}")
    shuffled = read_image(variant(series, tmp_path / "shuffled", shuffle))
    assert shuffled.geometry == volume.geometry and np.array_equal(shuffled.array, volume.array)


def test_a_missing_slice_keeps_the_true_spacing_and_is_filled_with_a_warning(ct, tmp_path, capfd):
    series, volume = ct
    gap = variant(series, tmp_path / "gap", lambda files: files[9].unlink())
    capfd.readouterr()
    read = read_image(gap)
    assert "WARNING" not in capfd.readouterr().err, "the gap is the case's warning, not ITK's text on stderr"
    assert read.geometry == volume.geometry, "ITK's reader says 2.105 mm here"
    (warning,) = read.dicom.warnings
    assert "1 slice(s) missing between" in warning and "step 2.000 mm" in warning
    kept = [k for k in range(20) if k != 9]
    assert np.array_equal(read.array[..., kept], volume.array[..., kept])
    assert np.allclose(read.array[..., 9], (volume.array[..., 8] + volume.array[..., 10].astype(float)) / 2)
    assert [s.index for s in read.dicom.slices] == kept, "no image is claimed for the filled slice"


@pytest.mark.parametrize(("how", "reason"), [("empty", "an empty file (0 bytes)"),
                                             ("truncated", "damaged (truncated?)"),
                                             ("no_bits", "damaged: an image header without BitsAllocated")])
def test_a_damaged_slice_is_named_once_and_read_as_a_gap(ct, tmp_path, how, reason):
    series, volume = ct

    def damage(files):
        if how == "no_bits":
            set_header(files[5], BitsAllocated=None)
            return
        data = files[5].read_bytes()
        files[5].write_bytes(b"" if how == "empty" else data[: len(data) // 2])
    folder = variant(series, tmp_path / how, damage)
    (ignored,) = scan_dicom_folder(folder).ignored
    assert ignored.damaged and ignored.reason.startswith(reason)
    read = read_image(folder)
    assert read.geometry == volume.geometry and "missing between" in read.dicom.warnings[0]


def test_a_wide_gap_and_positions_off_the_grid_are_refused(ct, tmp_path):
    series, _ = ct

    def remove_three(files):
        for f in files[8:11]:
            f.unlink()
    with pytest.raises(ImageReadError) as exc:
        read_image(variant(series, tmp_path / "wide", remove_three))
    assert "3 slices are missing between" in _one_line(exc) and "at most 2 are filled" in str(exc.value)

    def nudge(files):
        position = [float(v) for v in pydicom.dcmread(files[6], stop_before_pixels=True).ImagePositionPatient]
        set_header(files[6], ImagePositionPatient=[*position[:2], position[2] + 0.9])
    with pytest.raises(ImageReadError) as exc:
        read_image(variant(series, tmp_path / "nudged", nudge))
    assert "slice positions must lie on a regular grid" in _one_line(exc) and "median step is 2.000 mm" in str(exc.value)

    def drift(files):  # steps of 2.1 mm after slice 10: each step alone is within 5 % of the others
        for k, f in enumerate(files[10:], start=1):
            position = [float(v) for v in pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient]
            set_header(f, ImagePositionPatient=[*position[:2], f"{position[2] + 0.1 * k:.4f}"])
    with pytest.raises(ImageReadError) as exc:
        read_image(variant(series, tmp_path / "drift", drift))
    assert "slice positions must lie on a regular grid" in _one_line(exc) and "mm off it" in str(exc.value)

    def sideways(files):
        position = [float(v) for v in pydicom.dcmread(files[7], stop_before_pixels=True).ImagePositionPatient]
        set_header(files[7], ImagePositionPatient=[position[0] + 20, *position[1:]])
    with pytest.raises(ImageReadError) as exc:
        read_image(variant(series, tmp_path / "sideways", sideways))
    assert "the slices must form one stack" in _one_line(exc) and "20.00 mm sideways" in str(exc.value)


def test_a_copied_file_is_read_once_and_a_second_image_at_one_position_is_refused(ct, tmp_path):
    series, volume = ct
    copied = variant(series, tmp_path / "copied", lambda files: shutil.copy(files[4], files[4].parent / "copy.dcm"))
    read = read_image(copied)
    assert read.geometry == volume.geometry and np.array_equal(read.array, volume.array)
    assert "1 file(s) repeat an image of the series and were read once: copy.dcm" in read.dicom.warnings[0]

    def second_image(files):
        shutil.copy(files[4], files[4].parent / "other.dcm")
        set_header(files[4].parent / "other.dcm", SOPInstanceUID=pydicom.uid.generate_uid())
    with pytest.raises(ImageReadError) as exc:
        read_image(variant(series, tmp_path / "two", second_image))
    assert "every position of a series must hold one image; 1 position(s) hold more" in _one_line(exc)

    def one_uid(files):  # an export that gave two slices one instance UID
        set_header(files[6], SOPInstanceUID=pydicom.dcmread(files[5], stop_before_pixels=True).file_meta
                   .MediaStorageSOPInstanceUID)
        set_header(files[5], SOPInstanceUID=pydicom.dcmread(files[5], stop_before_pixels=True).file_meta
                   .MediaStorageSOPInstanceUID)
    with pytest.raises(ImageReadError) as exc:
        read_image(variant(series, tmp_path / "one_uid", one_uid))
    assert "every image needs its own SOP Instance UID" in _one_line(exc)

    def scout(files):  # a localizer filed under the series' UID
        shutil.copy(files[0], files[0].parent / "scout.dcm")
        set_header(files[0].parent / "scout.dcm", SOPInstanceUID=pydicom.uid.generate_uid(),
                   ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"], ImageOrientationPatient=[0, 1, 0, 0, 0, -1])
    read = read_image(variant(series, tmp_path / "scout", scout))
    assert np.array_equal(read.array, volume.array) and "1 localizer image(s)" in read.dicom.warnings[0]


def test_missing_or_inconsistent_geometry_is_refused_never_invented(ct, tmp_path):
    series, _ = ct
    cases = {
        "no_spacing": (lambda files: [set_header(f, PixelSpacing=None) for f in files],
                       "needs a valid Pixel Spacing"),
        "one_spacing": (lambda files: set_header(files[3], PixelSpacing=[0.5, 0.5]),
                        "must share one Pixel Spacing"),
        "tilted_one": (lambda files: set_header(files[3], ImageOrientationPatient=[1, 0, 0, 0, 0.8, 0.6]),
                       "must share one Image Orientation (Patient)"),
        "no_position": (lambda files: set_header(files[3], ImagePositionPatient=None),
                        "needs a valid Image Position (Patient)"),
    }
    for name, (edit, rule) in cases.items():
        with pytest.raises(ImageReadError) as exc:
            read_image(variant(series, tmp_path / name, edit))
        assert rule in _one_line(exc), name


def test_one_slice_of_another_size_is_named(tmp_path):
    rng = np.random.default_rng(0)
    series = write_dicom_series(tmp_path / "series", rng.integers(0, 99, (24, 20, 6)).astype(np.int16))
    small = write_dicom_series(tmp_path / "small", rng.integers(0, 99, (12, 10, 6)).astype(np.int16))
    odd = by_position(series)[2]
    shutil.copy(by_position(small)[2], odd)
    set_header(odd, SeriesInstanceUID=pydicom.dcmread(by_position(series)[0]).SeriesInstanceUID)
    with pytest.raises(ImageReadError) as exc:
        read_image(series)
    assert f"all images of a series must have one size; {odd.name} is 10x12" in _one_line(exc)


def test_a_tilted_gantry_is_read_along_the_normal_with_a_warning(tmp_path):
    volume = np.random.default_rng(1).integers(-100, 200, (20, 18, 7)).astype(np.int16)
    read = read_image(write_dicom_series(tmp_path / "tilted", volume, gantry_deg=15, shuffle=True, seed=4))
    assert read.dicom.shear_deg == pytest.approx(15, abs=0.01) and "gantry tilt" in read.dicom.warnings[0]
    assert read.geometry.spacing[2] == pytest.approx(2.5) and np.array_equal(read.array, volume)


def test_an_enhanced_multiframe_image_reads_as_the_volume_it_holds(ct, tmp_path):
    _, volume = ct
    # the real series, decoded, as classic files (highdicom converts uncompressed sources) and as one file
    plain = tmp_path / "plain"
    write_dicom_series(plain, volume.array.astype(np.int16), spacing=volume.geometry.spacing, shuffle=True)
    enhanced = read_image(enhanced_copy(plain, tmp_path / "enhanced"))
    classic = read_image(plain)
    assert enhanced.dicom.enhanced and enhanced.geometry == classic.geometry
    assert np.array_equal(enhanced.array, classic.array) and np.array_equal(enhanced.array, volume.array)


def test_objects_beside_a_series_are_named_and_several_series_are_several_groups(ct, tmp_path):
    series, _ = ct
    folder = variant(series, tmp_path / "study")
    examples = pydicom.data.get_testdata_file("test-SR.dcm")
    shutil.copy(examples, folder / "report.dcm")
    shutil.copy(pydicom.data.get_testdata_file("liver_1frame.dcm"), folder / "other_seg.dcm")
    shutil.copy(pydicom.data.get_testdata_file("MR_small.dcm"), folder / "mr.dcm")
    scan = scan_dicom_folder(folder)
    reasons = {i.path.rsplit("/", 1)[1]: i.reason for i in scan.ignored}
    assert reasons == {"report.dcm": "Comprehensive SR Storage: not an image to segment",
                       "other_seg.dcm": "Segmentation Storage: not an image to segment"}
    assert sorted(len(g.datasets) for g in scan.groups) == [1, 20]
    with pytest.raises(ImageReadError, match="must hold one series, found 2"):
        read_image(folder)
    ct_key = next(g.key for g in scan.groups if len(g.datasets) == 20)
    assert find_series(folder, ct_key).geometry.shape == (512, 512, 20)


def test_series_without_uids_stay_apart_and_raw_data_sets_are_found(ct, tmp_path):
    from pipeline.data import find_cases

    series, volume = ct
    folder = variant(series, tmp_path / "two")  # the real series has a blank Series Instance UID
    for k, f in enumerate(by_position(series)):
        ds = pydicom.dcmread(f)
        ds.SeriesNumber, ds.SOPInstanceUID = 99, pydicom.uid.generate_uid()
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], float(ds.ImagePositionPatient[2]) + 100]
        ds.save_as(folder / f"later_{k:02d}")
    assert sorted(len(g.datasets) for g in scan_dicom_folder(folder).groups) == [20, 20]
    raw = tmp_path / "raw"  # data sets without preamble, file meta or ending, as some exports write them
    plain = write_dicom_series(tmp_path / "plain", volume.array[:64, :64, :6].astype(np.int16))
    raw.mkdir()
    for k, f in enumerate(by_position(plain)):
        ds = pydicom.dcmread(f)
        pydicom.dcmwrite(raw / f"IM{k}", ds, enforce_file_format=False, write_like_original=True)
        (raw / f"IM{k}").write_bytes((raw / f"IM{k}").read_bytes()[132:] if (raw / f"IM{k}").read_bytes()[128:132]
                                     == b"DICM" else (raw / f"IM{k}").read_bytes())
    assert [c.paths for c in find_cases(tmp_path / "raw")] == [(str(raw),)]
    assert np.array_equal(read_image(raw).array, read_image(plain).array)


def test_a_slice_with_its_own_rescale_keeps_its_values(tmp_path):
    volume = np.random.default_rng(5).integers(-100, 200, (16, 12, 5)).astype(np.int16)
    series = write_dicom_series(tmp_path / "pet", volume)
    set_header(by_position(series)[2], RescaleSlope=0.5)
    read = read_image(series)
    assert np.allclose(read.array[..., 2], volume[..., 2] * 0.5) and np.array_equal(read.array[..., 3], volume[..., 3])
