"""Variants of a real DICOM series for the tests: a slice removed, copied, moved, truncated, emptied; attributes
dropped; file names shuffled; an enhanced multi-frame copy. Each starts from a copy and edits only headers or
bytes, so the pixels stay those of the source."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pydicom

#: Type 2 patient and study attributes that anonymisers drop
TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "StudyDate",
         "StudyTime", "ReferringPhysicianName")


def by_position(folder: Path) -> list[Path]:
    """The series' files sorted along z (the examples are axial)."""
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    return sorted(files, key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))


def variant(source: Path, dest: Path, edit: Callable[[list[Path]], None] | None = None) -> Path:
    """A copy of ``source`` at ``dest`` with ``edit`` applied to its files (sorted by position)."""
    shutil.copytree(source, dest)
    if edit is not None:
        edit(by_position(dest))
    return dest


def set_header(path: Path, **values) -> None:
    """Change (value) or delete (None) attributes of one file, keeping its pixel data as stored."""
    ds = pydicom.dcmread(path)
    for keyword, value in values.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path)


def drop(*keywords: str) -> Callable[[list[Path]], None]:
    """An edit deleting ``keywords`` from every file."""
    def edit(files: list[Path]) -> None:
        for f in files:
            set_header(f, **dict.fromkeys(keywords))
    return edit


def enhanced_copy(series: Path, dest: Path) -> Path:
    """The series as one Legacy Converted Enhanced CT image (highdicom), in its own folder."""
    import highdicom as hd

    datasets = [pydicom.dcmread(p) for p in by_position(series)]
    image = hd.legacy.LegacyConvertedEnhancedCTImage(datasets, series_instance_uid=hd.UID(), series_number=9,
                                                     sop_instance_uid=hd.UID(), instance_number=1)
    dest.mkdir(parents=True)
    image.save_as(dest / "enhanced.dcm")
    return dest
