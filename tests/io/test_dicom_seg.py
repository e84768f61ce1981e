"""DICOM SEG encoding (highdicom): references, segments, geometry per frame, read-back voxel for voxel."""

from __future__ import annotations

import shutil
import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest

from pipeline.io import read_image
from pipeline.io.dicom_seg import SegAlgorithm, read_dicom_seg, read_seg_notes, segment_codes, write_dicom_seg

from ..conftest import check_dciodvfy, write_dicom_series
from .dicom_variants import TYPE2, drop, enhanced_copy, variant

ALGORITHM = SegAlgorithm("UNet++ CT segmentation", "0.2.0", "ab" * 32)
NAMES = {1: "liver", 2: "left kidney", 3: "lesion"}


def _labels(shape):
    labels = np.zeros(shape, np.uint8)
    x, y, z = shape
    labels[x // 4: x // 2, y // 5: y // 2, 1: z // 2] = 1
    labels[x // 2: 3 * x // 4, y // 2: 4 * y // 5, z // 3: z - 1] = 2  # label 3 is absent: described, no frames
    return labels


@pytest.fixture(scope="module")
def oblique(tmp_path_factory):
    volume = np.random.default_rng(0).integers(-100, 200, (24, 20, 9)).astype(np.int16)
    return write_dicom_series(tmp_path_factory.mktemp("oblique") / "series", volume, tilt_deg=20, shuffle=True)


def _check_seg(path, series_dir, labels):
    sources = {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(f, stop_before_pixels=True)
                                                  for f in sorted(series_dir.iterdir()))}
    seg = hd.seg.segread(str(path))
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    first = next(iter(sources.values()))
    assert seg.StudyInstanceUID == first.StudyInstanceUID and seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert seg.PatientID == first.PatientID and seg.SeriesInstanceUID != first.SeriesInstanceUID
    assert int(seg.SeriesNumber) == int(first.SeriesNumber) + 1000
    (ref_series,) = seg.ReferencedSeriesSequence
    assert ref_series.SeriesInstanceUID == first.SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in ref_series.ReferencedInstanceSequence} == set(sources)
    described = [(s.SegmentNumber, s.SegmentLabel) for s in seg.SegmentSequence]
    assert described == [(1, "liver"), (2, "left kidney"), (3, "lesion")]
    liver = seg.SegmentSequence[0]
    assert liver.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
    assert liver.SegmentAlgorithmType == "AUTOMATIC" and "RecommendedDisplayCIELabValue" in liver
    algorithm = liver.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == ALGORITHM.name and algorithm.AlgorithmVersion == "0.2.0"
    assert ALGORITHM.model_sha256 in algorithm.AlgorithmParameters
    # no empty frames; every frame lies where its source image lies (oblique and unsorted series included)
    per_frame = seg.PerFrameFunctionalGroupsSequence
    assert len(per_frame) == int(seg.NumberOfFrames) == sum(
        int((labels[..., k] == s).any()) for k in range(labels.shape[2]) for s in (1, 2))
    for item in per_frame:
        source = sources[item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        position = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        assert np.allclose(position, [float(v) for v in source.ImagePositionPatient], atol=1e-4)
    assert np.array_equal(read_dicom_seg(path, series_dir), labels)
    check_dciodvfy(path)


def test_oblique_unsorted_series_round_trip(oblique, tmp_path):
    image = read_image(oblique)
    labels = _labels(image.array.shape)
    out = write_dicom_seg(labels, oblique, tmp_path / "seg.dcm", NAMES, ALGORITHM, notes="pipeline segment 0123")
    assert read_seg_notes(out) == "pipeline segment 0123" and not list(tmp_path.glob(".*part*"))
    _check_seg(out, oblique, labels)


@pytest.mark.skipif(not shutil.which("dciodvfy"), reason="dciodvfy (Debian: dicom3tools) is not installed; "
                    "`make install` installs it where apt runs as root")
def test_dciodvfy_finds_no_errors(oblique, tmp_path):
    labels = _labels(read_image(oblique).array.shape)
    out = write_dicom_seg(labels, oblique, tmp_path / "seg.dcm", NAMES, ALGORITHM, notes="pipeline segment 0123")
    proc = subprocess.run(["dciodvfy", str(out)], check=False, capture_output=True, text=True, timeout=120)
    lines = (proc.stdout + proc.stderr).splitlines()
    assert "Segmentation" in lines[0] and not [line for line in lines if line.startswith("Error")], lines


def test_gantry_tilted_series_keeps_each_slice_position(tmp_path):
    """A tilted gantry shears the grid, which a volume's affine cannot hold; the SEG's frames still carry
    their own source image's position, and the labels still read back on the series' frames."""
    volume = np.random.default_rng(1).integers(-100, 200, (20, 18, 7)).astype(np.int16)
    series = write_dicom_series(tmp_path / "tilted", volume, gantry_deg=15, shuffle=True, seed=4)
    labels = _labels(read_image(series).array.shape)
    out = write_dicom_seg(labels, series, tmp_path / "seg.dcm", NAMES, ALGORITHM)
    _check_seg(out, series, labels)


def test_real_series(ct_mr_examples, tmp_path):
    series = ct_mr_examples / "example_ct_dicom"
    labels = _labels(read_image(series).array.shape)
    out = write_dicom_seg(labels, series, tmp_path / "seg.dcm", NAMES, ALGORITHM)
    seg = hd.seg.segread(str(out))
    instances = {pydicom.dcmread(f, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID
                 for f in series.iterdir()}  # this anonymised series keeps its instance UIDs in the file meta only
    referenced = {i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == instances and seg.NumberOfFrames > 0
    assert np.array_equal(read_dicom_seg(out, series), labels)
    check_dciodvfy(out)


def test_bad_label_maps_write_nothing(oblique, tmp_path):
    shape = read_image(oblique).array.shape
    with pytest.raises(Exception, match="the label map must have the series' shape"):
        write_dicom_seg(np.zeros((3, 3, 3), np.uint8), oblique, tmp_path / "a.dcm", NAMES, ALGORITHM)
    with pytest.raises(Exception, match="label ids must be 1..N with a name each"):
        write_dicom_seg(np.full(shape, 5, np.uint8), oblique, tmp_path / "a.dcm", NAMES, ALGORITHM)
    assert not list(tmp_path.iterdir())


def test_codes():
    assert [c.value for c in segment_codes("Hippocampus")] == ["91723000", "5366008"]
    assert segment_codes("right kidney")[1].value == "64033007"
    assert [c.value for c in segment_codes("anterior")] == ["85756007", "85756007"]


def test_a_label_map_with_nothing_found(oblique, tmp_path):
    """No label anywhere: the segments are described and, since a SEG needs at least one frame, highdicom keeps
    the (empty) frames instead of omitting all of them."""
    labels = np.zeros(read_image(oblique).array.shape, np.uint8)
    out = write_dicom_seg(labels, oblique, tmp_path / "seg.dcm", NAMES, ALGORITHM)
    seg = hd.seg.segread(str(out))
    assert len(seg.SegmentSequence) == 3 and int(seg.NumberOfFrames) >= 1
    assert not read_dicom_seg(out, oblique).any()


def test_an_anonymised_series_without_type2_attributes_gets_them_empty(ct_mr_examples, tmp_path):
    """Anonymisers drop Type 2 attributes; the SEG writes them empty (highdicom would copy them), refers to every
    source image, and passes dciodvfy."""
    series = variant(ct_mr_examples / "example_ct_dicom", tmp_path / "anon", drop(*TYPE2))
    volume = read_image(series)
    labels = _labels(volume.array.shape)
    out = write_dicom_seg(labels, volume.dicom, tmp_path / "seg.dcm", NAMES, ALGORITHM)
    seg = pydicom.dcmread(out)
    assert all(keyword in seg and not seg[keyword].value for keyword in TYPE2)
    assert len(seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence) == 20
    assert np.array_equal(read_dicom_seg(out, series), labels)
    check_dciodvfy(out)


def test_a_seg_of_a_series_with_a_gap_and_of_an_enhanced_image(ct_mr_examples, tmp_path):
    """Frames only where an image exists (the filled slice has none); an enhanced image's frames are referenced
    by frame number, and the SEG reads back on the volume's grid."""
    gap = read_image(variant(ct_mr_examples / "example_ct_dicom", tmp_path / "gap", lambda f: f[9].unlink()))
    labels = np.ones(gap.array.shape, np.uint8)
    out = write_dicom_seg(labels, gap.dicom, tmp_path / "gap_seg.dcm", NAMES, ALGORITHM)
    expected = labels.copy()
    expected[..., 9] = 0
    assert int(pydicom.dcmread(out).NumberOfFrames) == 19 and np.array_equal(read_dicom_seg(out, gap.dicom), expected)
    volume = np.random.default_rng(2).integers(-100, 200, (24, 20, 9)).astype(np.int16)
    plain = write_dicom_series(tmp_path / "plain", volume, tilt_deg=20, shuffle=True)
    enhanced = read_image(enhanced_copy(plain, tmp_path / "enhanced"))
    labels = _labels(enhanced.array.shape)
    out = write_dicom_seg(labels, enhanced.dicom, tmp_path / "enhanced_seg.dcm", NAMES, ALGORITHM)
    assert np.array_equal(read_dicom_seg(out, enhanced.dicom), labels)
    check_dciodvfy(out)


def test_a_seg_that_does_not_read_back_is_never_renamed(oblique, tmp_path, monkeypatch):
    import pydicom.dataset

    from pipeline.errors import ImageWriteError

    real = pydicom.dataset.Dataset.save_as

    def short(self, filename, *args, **kwargs):  # what a write cut off by the disk leaves, with no error
        real(self, filename, *args, **kwargs)
        with open(filename, "r+b") as handle:
            handle.truncate(2000)
    monkeypatch.setattr(pydicom.dataset.Dataset, "save_as", short)
    with pytest.raises(ImageWriteError, match="seg.dcm.*the DICOM SEG does not read back"):
        write_dicom_seg(_labels(read_image(oblique).array.shape), oblique, tmp_path / "seg.dcm", NAMES, ALGORITHM)
    assert not list(tmp_path.iterdir())


def test_a_full_disk_is_recognised_however_the_writer_raises_it(oblique, tmp_path, monkeypatch):
    """pydicom re-raises the write error as an OSError without errno: the free space tells."""
    import pydicom.dataset

    from pipeline.errors import DiskFullError
    from pipeline.io import atomic

    def full(self, filename, *args, **kwargs):
        open(filename, "wb").close()
        raise OSError("could not write the data set")
    monkeypatch.setattr(pydicom.dataset.Dataset, "save_as", full)
    labels = _labels(read_image(oblique).array.shape)
    monkeypatch.setattr(atomic, "free_bytes", lambda folder: 100)
    with pytest.raises(DiskFullError, match="seg.dcm': no space left on the device"):
        write_dicom_seg(labels, oblique, tmp_path / "seg.dcm", NAMES, ALGORITHM)
    monkeypatch.setattr(atomic, "free_bytes", lambda folder: 1 << 40)
    with pytest.raises(OSError, match="could not write the data set") as exc:
        write_dicom_seg(labels, oblique, tmp_path / "seg.dcm", NAMES, ALGORITHM)
    assert not isinstance(exc.value, DiskFullError) and not list(tmp_path.iterdir())
