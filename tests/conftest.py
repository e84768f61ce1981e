"""Shared fixtures: real data under ../shared/data (skipped with a reason where absent) and small synthetic sets."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PIPELINE_SHARED_DATA", REPO.parent / "shared" / "data"))


#: a folder where session fixtures keep what they build for later pytest processes. `make mutants` sets it: mutmut
#: starts one pytest per mutant, and building the exported models and datasets anew took 5 of every 6 seconds of
#: a killed mutant. Unset (the suite), every session builds its own under pytest's tmp folder.
FIXTURE_CACHE_ENV = "PIPELINE_TEST_FIXTURE_CACHE"
T = TypeVar("T")


def built_once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], T]) -> T:
    """``build(folder)``: in a fresh tmp folder, or, where :data:`FIXTURE_CACHE_ENV` is set, once for all processes
    (under a lock; its result, a path or a dict of paths, is kept as JSON beside it)."""
    cache = os.environ.get(FIXTURE_CACHE_ENV)
    if not cache:
        return build(factory.mktemp(name))
    root, done = Path(cache) / name, Path(cache) / f"{name}.json"
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(Path(cache) / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            kept = json.loads(done.read_text())
            return {k: Path(v) for k, v in kept.items()} if isinstance(kept, dict) else Path(kept)
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        result = build(root)
        done.write_text(json.dumps(result, default=str))
        return result


def _shared(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (see ../shared/data/README.md)")
    return path


@pytest.fixture(scope="session")
def ct_mr_examples() -> Path:
    """../shared/data/ct_mr_examples (TotalSegmentator test files)."""
    return _shared("ct_mr_examples")


@pytest.fixture(scope="session")
def hippocampus() -> Path:
    """../shared/data/hippocampus (MSD Task04)."""
    return _shared("hippocampus")


@pytest.fixture(scope="session")
def ct_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six small synthetic CT cases (RAS, LPS, LAS stored) in MSD layout."""
    from pipeline.data import write_synthetic_dataset

    def build(root: Path) -> Path:
        write_synthetic_dataset(root, modality="ct", cases=6, seed=0, shape=(40, 40, 12))
        return root

    return built_once(tmp_path_factory, "synth_ct", build)


@pytest.fixture(scope="session")
def mri_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four small synthetic MRI cases in MSD layout."""
    from pipeline.data import write_synthetic_dataset

    def build(root: Path) -> Path:
        write_synthetic_dataset(root, modality="mri", cases=4, seed=1, shape=(32, 36, 32))
        return root

    return built_once(tmp_path_factory, "synth_mri", build)


class SmallDisk:
    """A folder on a file system that fills up after ``size`` bytes.

    ``kind`` is ``tmpfs`` (a real size-limited tmpfs, mounted where the tests run as root) or ``hook`` (elsewhere:
    ITK's writes are cut short after ``size`` bytes, Python's and nibabel's writes raise ENOSPC, as a full disk
    does, and pydicom's raise an OSError without errno, as pydicom does on a full disk).
    """

    def __init__(self, path: Path, kind: str) -> None:
        self.path, self.kind = path, kind


def _mount_tmpfs(path: Path, size: int) -> bool:
    import subprocess

    if os.geteuid() != 0 or os.environ.get("PIPELINE_TEST_NO_TMPFS"):  # the variable tests the hook's path
        return False
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          check=False, capture_output=True, timeout=600)
    return done.returncode == 0


def _install_write_hook(monkeypatch: pytest.MonkeyPatch, root: Path, size: int) -> None:
    import errno

    import SimpleITK as sitk

    from pipeline.io import atomic

    def used() -> int:
        return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())

    real_write = sitk.WriteImage

    def short_write(image, path, *args, **kwargs):
        real_write(image, path, *args, **kwargs)
        if Path(path).resolve().is_relative_to(root.resolve()):
            left = max(0, size - (used() - Path(path).stat().st_size))
            if Path(path).stat().st_size > left:  # what ITK does on a full disk: keep what fit, say nothing
                with open(path, "r+b") as handle:
                    handle.truncate(left)

    real_text = Path.write_text

    def text(self, data, *args, **kwargs):
        if self.resolve().is_relative_to(root.resolve()) and used() + len(data.encode()) > size:
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_text(self, data, *args, **kwargs)

    import pydicom.dataset

    real_save = pydicom.dataset.Dataset.save_as

    def short_save(self, filename, *args, **kwargs):  # pydicom on a full disk: an OSError without errno
        real_save(self, filename, *args, **kwargs)
        if Path(filename).resolve().is_relative_to(root.resolve()) and used() > size:
            with open(filename, "r+b") as handle:
                handle.truncate(max(0, Path(filename).stat().st_size - (used() - size)))
            raise OSError(f"could not write {filename}")

    import nibabel

    real_nib_save = nibabel.save

    def nib_save(img, filename, *args, **kwargs):  # nibabel writes through Python: ENOSPC, as a full disk raises
        real_nib_save(img, filename, *args, **kwargs)
        if Path(filename).resolve().is_relative_to(root.resolve()) and used() > size:
            with open(filename, "r+b") as handle:
                handle.truncate(max(0, Path(filename).stat().st_size - (used() - size)))
            raise OSError(errno.ENOSPC, "No space left on device", str(filename))

    monkeypatch.setattr(nibabel, "save", nib_save)
    monkeypatch.setattr(pydicom.dataset.Dataset, "save_as", short_save)
    monkeypatch.setattr(sitk, "WriteImage", short_write)
    monkeypatch.setattr(Path, "write_text", text)
    free = lambda folder: max(0, size - used()) if Path(folder).resolve().is_relative_to(root.resolve()) \
        else 1 << 40
    monkeypatch.setattr(atomic, "free_bytes", free)


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> SmallDisk:
    """A 256 KiB file system (size: ``@pytest.mark.parametrize("small_disk", [bytes], indirect=True)``)."""
    import subprocess

    size = int(getattr(request, "param", 256 * 1024))
    path = tmp_path / "small_disk"
    if _mount_tmpfs(path, size):
        yield SmallDisk(path, "tmpfs")
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True, timeout=600)
        return
    path.mkdir(exist_ok=True)
    _install_write_hook(monkeypatch, path, size)
    yield SmallDisk(path, "hook")


def write_dicom_series(folder: Path, volume, spacing=(0.8, 0.8, 2.5), tilt_deg: float = 0.0, shuffle: bool = False,
                       seed: int = 0, gantry_deg: float = 0.0) -> Path:
    """A CT DICOM series (one uncompressed file per slice) of ``volume`` ((X, Y, Z) int16 HU), rotated by
    ``tilt_deg`` about the patient's left-right axis and then about the vertical axis (an oblique series), with
    file names in random order when ``shuffle``; ``gantry_deg`` shifts each slice along its column direction
    as a tilted gantry does (slices no longer stacked along their normal: a sheared grid)."""
    import numpy as np
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
    from pydicom.valuerep import format_number_as_ds

    folder.mkdir(parents=True, exist_ok=True)
    a, b = np.deg2rad(tilt_deg), np.deg2rad(tilt_deg / 2)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    rot = rz @ rx
    row, col, normal = rot[:, 0], rot[:, 1], rot[:, 2]
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    order = np.random.default_rng(seed).permutation(volume.shape[2]) if shuffle else np.arange(volume.shape[2])
    for k in range(volume.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"img_{order[k]:04d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Phantom", "PH001", "19700101", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = \
            "20260101", "120000", "1", "A1", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer = "CT", 3, k + 1, "synthetic"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [format_number_as_ds(float(v)) for v in (*row, *col)]  # DS: 16 characters
        shift = k * spacing[2] * np.tan(np.deg2rad(gantry_deg)) * col
        ds.ImagePositionPatient = [format_number_as_ds(float(v)) for v in k * spacing[2] * normal + shift]
        if gantry_deg:
            ds.GantryDetectorTilt = gantry_deg
        ds.PixelSpacing, ds.SliceThickness = [spacing[1], spacing[0]], spacing[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = np.ascontiguousarray(volume[:, :, k].T.astype(np.int16)).tobytes()
        pydicom.dcmwrite(ds.filename, ds, enforce_file_format=True)
    return folder


#: The smallest network and patch the bundles take: their objects without their cost.
TINY = {"features": [4, 4, 8, 8, 16, 4], "patch_size": [32, 32, 32]}


@pytest.fixture(scope="session")
def tiny_parser():
    """``make(bundle, *configs)``: a bundle's configs (default ``train``) and metadata parsed on the CPU, with
    :data:`TINY` overrides."""
    from monai.bundle import ConfigParser

    def make(bundle: str, *configs: str) -> ConfigParser:
        parser = ConfigParser()
        parser.read_config([str(REPO / "bundles" / bundle / "configs" / f"{c}.json") for c in (configs or ("train",))])
        parser.read_meta(str(REPO / "bundles" / bundle / "configs" / "metadata.json"))
        parser["device"] = "$torch.device('cpu')"
        for key, value in TINY.items():
            parser[key] = value
        return parser

    return make


def check_dciodvfy(path: Path) -> None:
    """Assert that dicom3tools' dciodvfy finds no Error in the DICOM file ``path``; skip the rest of the test,
    saying so, where dciodvfy is not installed (call it last)."""
    import shutil
    import subprocess

    if not shutil.which("dciodvfy"):
        pytest.skip("dciodvfy (Debian: dicom3tools) is not installed; `make install` installs it where apt runs "
                    "as root")
    proc = subprocess.run(["dciodvfy", str(path)], check=False, capture_output=True, text=True, timeout=120)
    lines = (proc.stdout + proc.stderr).splitlines()
    assert lines and not [line for line in lines if line.startswith("Error")], lines
