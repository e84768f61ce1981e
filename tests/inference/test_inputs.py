"""What the job knows of an input before and just after reading it: its fingerprint, whether it is one of the job's
own outputs, whether it fits in memory, and what the model cannot or should not segment."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from pydicom.dataset import Dataset

from pipeline.data.discover import InputCase
from pipeline.deploy import card_from_dict
from pipeline.errors import ImageReadError
from pipeline.inference import inputs
from pipeline.inference.inputs import check_image, check_input_memory, input_fingerprint, is_own_output
from pipeline.io import Geometry, read_image, write_image
from pipeline.io.dicom_series import find_series

from ..conftest import write_dicom_series

GEOM = Geometry((6, 5, 4), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))


def _case(*paths, series=""):
    return InputCase("c", tuple(str(p) for p in paths), series=series)


def _fingerprint(path):
    return input_fingerprint(_case(path))


def test_a_fingerprint_is_12_hex_digits_that_follow_the_content_and_the_name(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"\1" * 3000)
    first = _fingerprint(tmp_path / "a.bin")
    assert len(first) == 12 and int(first, 16) >= 0 and _fingerprint(tmp_path / "a.bin") == first
    (tmp_path / "a.bin").write_bytes(b"\1" * 1500 + b"\2" + b"\1" * 1499)
    assert _fingerprint(tmp_path / "a.bin") != first
    (tmp_path / "b.bin").write_bytes((tmp_path / "a.bin").read_bytes())
    assert _fingerprint(tmp_path / "b.bin") != _fingerprint(tmp_path / "a.bin"), "the name counts"


def test_a_large_file_is_fingerprinted_by_its_size_and_both_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(inputs, "WHOLE_FILE_LIMIT", 4096)
    monkeypatch.setattr(inputs, "_EDGE", 1024)
    path = tmp_path / "big.bin"

    def with_byte(at, size=5000):
        data = bytearray(size)
        if at is not None:
            data[at] = 7
        path.write_bytes(bytes(data))
        return _fingerprint(path)

    base = with_byte(None)
    assert with_byte(2500) == base, "documented: a change in the middle of a large file goes unseen"
    assert with_byte(10) != base and with_byte(4990) != base and with_byte(None, 5001) != base
    assert with_byte(1030) == base and with_byte(3970) == base, "only the first and last 1024 bytes are read"
    at_limit = with_byte(None, 4096)
    assert with_byte(2000, 4096) != at_limit, "a file of exactly the limit is hashed whole"


def test_a_detached_header_is_fingerprinted_with_its_data_file(tmp_path):
    path = write_image(np.arange(120, dtype=np.int16).reshape(GEOM.shape), GEOM, tmp_path / "x.mha")
    image = read_image(path)
    import SimpleITK as sitk

    sitk.WriteImage(sitk.ReadImage(str(path)), str(tmp_path / "x.mhd"))
    first = _fingerprint(tmp_path / "x.mhd")
    raw = tmp_path / "x.raw"
    data = bytearray(raw.read_bytes())
    data[7] ^= 1
    raw.write_bytes(bytes(data))
    assert image.array.shape == GEOM.shape and _fingerprint(tmp_path / "x.mhd") != first


def test_a_dicom_series_is_fingerprinted_by_uids_and_sizes_without_reading_it_twice(tmp_path, monkeypatch):
    folder = write_dicom_series(tmp_path / "series", np.zeros((8, 8, 3), np.int16))
    series = find_series(folder)
    first = input_fingerprint(_case(folder))
    monkeypatch.setattr(inputs, "find_series", lambda *a, **k: pytest.fail("the series given is read again"))
    assert input_fingerprint(_case(folder), series) == first
    monkeypatch.undo()
    victim = sorted(folder.iterdir())[1]
    victim.write_bytes(victim.read_bytes() + b"\0\0")
    assert input_fingerprint(_case(folder)) != first


def test_own_outputs_are_told_by_the_provenance_line(tmp_path):
    arr = np.zeros(GEOM.shape, np.uint8)
    ours = write_image(arr, GEOM, tmp_path / "ours.nrrd", notes="pipeline segment model abc level 2")
    other = write_image(arr, GEOM, tmp_path / "other.nrrd", notes="made by hand")
    bare = write_image(arr, GEOM, tmp_path / "bare.nrrd")
    assert is_own_output(ours) and not is_own_output(other) and not is_own_output(bare)


def test_memory_is_checked_for_the_stored_voxels_and_their_float32_copy_per_case_in_flight(tmp_path, monkeypatch):
    path = write_image(np.zeros(GEOM.shape, np.int16), GEOM, tmp_path / "x.nrrd")
    asked = []
    monkeypatch.setattr(inputs, "check_fits", lambda need, where, what: asked.append((need, where, what)))
    for at_once in (0, 1, 3):
        check_input_memory(_case(tmp_path, path), at_once)  # a DICOM folder is measured when read, not here
    voxels = 6 * 5 * 4
    assert [a[0] for a in asked] == [voxels * 6] * 2 + [voxels * 6 * 3], "int16 + float32 bytes per voxel"
    assert asked[-1][1] == str(path)
    assert asked[-1][2] == "reading 6x5x4 voxels (16-bit signed integer) and their float32 copy, 3 case(s) at once,"


def test_every_channel_of_a_vector_image_is_counted(tmp_path, monkeypatch):
    path = write_image(np.zeros((*GEOM.shape, 2), np.float32), GEOM, tmp_path / "two.nrrd")
    asked = []
    monkeypatch.setattr(inputs, "check_fits", lambda need, where, what: asked.append(need))
    check_input_memory(_case(path), 1)
    assert asked == [6 * 5 * 4 * 2 * (4 + 4)], "float32 stored and its float32 copy, for 2 channels"


CARD = card_from_dict({"card_version": 3, "labels": {"0": "bg", "1": "a"}, "modality": "MRI",
                       "network": {"spatial_dims": 3, "in_channels": 1, "out_channels": 2}}, "m.ts")


def _volume(array, geometry=GEOM, modality=None):
    dicom = None if modality is None else SimpleNamespace(datasets=[Dataset()])
    if modality:
        dicom.datasets[0].Modality = modality
    return SimpleNamespace(array=array, geometry=geometry, channels=1 if array.ndim == geometry.ndim
                           else array.shape[-1], dicom=dicom)


@pytest.mark.parametrize("array, geometry, rule", [
    (np.zeros((0, 5, 4)), Geometry((0, 5, 4), (1, 1, 1), (0, 0, 0)), "x.nii.gz': the image is empty (no voxels)"),
    (np.zeros((1, 1, 0)), Geometry((1, 1, 0), (1, 1, 1), (0, 0, 0)), "the image is empty (no voxels)"),
    (np.zeros((6, 5)), Geometry((6, 5), (1, 1), (0, 0)),
     "wrong dimensionality: the model segments 3D images, got a 2D image of size (6, 5)"),
    (np.zeros((*GEOM.shape, 2)), GEOM, "the model needs 1 channel(s), the image has 2"),
    (np.where(np.arange(120).reshape(GEOM.shape) % 50 == 0, np.inf, 1.0), GEOM,
     "the image holds 3 NaN or infinite voxel(s)"),
])
def test_what_the_model_cannot_segment_is_refused_in_one_line(array, geometry, rule):
    with pytest.raises(ImageReadError) as info:
        check_image(_volume(array, geometry), "x.nii.gz", CARD)
    assert rule in str(info.value) and "x.nii.gz" in str(info.value)


def test_what_it_should_not_segment_gets_a_warning():
    ramp = np.arange(120, dtype=np.float32).reshape(GEOM.shape)
    assert check_image(_volume(ramp), "x", CARD) == []
    assert check_image(_volume(np.full(GEOM.shape, 2.5)), "x", CARD) == [
        "the image is constant (every voxel 2.5): its label map says nothing about anatomy"]
    thin = Geometry((6, 3, 4), (1, 1, 1), (0, 0, 0))
    assert check_image(_volume(np.arange(72).reshape(6, 3, 4), thin), "x", CARD) == [
        ("the image is only 3 voxel(s) along axis 1 (shape (6, 3, 4)): too little for a 3D model to see anatomy; "
        "its labels are guesses")]
    four = Geometry((6, 4, 4), (1, 1, 1), (0, 0, 0))
    assert check_image(_volume(np.arange(96).reshape(6, 4, 4), four), "x", CARD) == [], "4 voxels are enough"


@pytest.mark.parametrize("series, card_modality, warned", [
    ("MR", "MRI", False), ("CT", "MRI", True), ("pt", "PET", False), ("CT", "", False), ("", "MRI", False),
    ("OT", "ot", False), (None, "CT", False),
])
def test_a_series_of_another_modality_gets_a_warning(series, card_modality, warned):
    ramp = np.arange(120, dtype=np.float32).reshape(GEOM.shape)
    warnings = check_image(_volume(ramp, modality=series), "x", CARD.replace(modality=card_modality))
    assert warnings == ([(f"the model was trained on {card_modality} images, this series is {series}: its labels "
                         "may mean nothing")] if warned else [])


def test_a_single_voxel_is_not_empty_but_warned_about():
    one = Geometry((1, 1, 1), (1, 1, 1), (0, 0, 0))
    warnings = check_image(_volume(np.ones((1, 1, 1)), one), "x", CARD)
    assert [w.split(":")[0] for w in warnings] == ["the image is constant (every voxel 1)",
                                                   "the image is only 1 voxel(s) along axis 0 (shape (1, 1, 1))"]


def test_each_series_of_a_folder_that_holds_two_is_fingerprinted_on_its_own(tmp_path):
    from pipeline.data.discover import discover

    folder = tmp_path / "mixed"
    for seed, shape in ((0, (8, 8, 3)), (1, (8, 8, 4))):
        one = write_dicom_series(tmp_path / f"s{seed}", np.full(shape, seed, np.int16), seed=seed)
        for path in one.iterdir():
            folder.mkdir(exist_ok=True)
            path.rename(folder / f"{seed}_{path.name}")
    cases = discover(folder).cases
    assert len(cases) == 2 and all(c.series for c in cases)
    prints = [input_fingerprint(c) for c in cases]
    assert prints[0] != prints[1]
    assert prints == [input_fingerprint(c, find_series(folder, c.series)) for c in cases]
