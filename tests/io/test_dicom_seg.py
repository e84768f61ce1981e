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

from ..conftest import write_dicom_series

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
