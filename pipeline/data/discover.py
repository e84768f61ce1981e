"""Find the images to segment under a path: a file, a folder searched recursively, or a CSV list.

A folder yields every NIfTI/NRRD/MetaImage file below it and every sub-folder that holds a DICOM series (files
whose byte 128 starts with ``DICM``, confirmed by GDCM). Results are sorted, so that a job's order (and its
shards) are the same on every machine.

Example:
    >>> find_images("incoming/")                                          # doctest: +SKIP
    ['incoming/ct_001.nii.gz', 'incoming/patient7/series_3', 'incoming/scan.nrrd']
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from pipeline.errors import DatasetError
from pipeline.io.reader import IMAGE_SUFFIXES, image_suffix, is_dicom_series

__all__ = ["find_images", "looks_like_dicom"]


def looks_like_dicom(path: Path) -> bool:
    """True for a file with the DICOM preamble (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _dicom_folders_and_files(root: Path) -> list[str]:
    found: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = Path(folder)
        visible = [f for f in sorted(files) if not f.startswith(".")]
        found += [str(here / f) for f in visible if image_suffix(f) and ".part" not in f]
        others = [here / f for f in visible if not image_suffix(f)]
        if any(looks_like_dicom(p) for p in others[:5]) and is_dicom_series(here):
            found.append(str(here))
    return found


def find_images(path: str | os.PathLike, column: str = "image") -> list[str]:
    """Image files and DICOM series folders under ``path``.

    Args:
        path: an image file, a DICOM series folder, a folder to search recursively, or a ``.csv`` file with an
            ``image`` column (relative paths are relative to the CSV's folder).
        column: CSV column holding the paths. Defaults to ``"image"``.

    Raises:
        DatasetError: the path does not exist, is an unsupported file, or the CSV lacks the column.
    """
    p = Path(path)
    if not p.exists():
        raise DatasetError(p, "the input must be an existing file or folder")
    if p.is_file():
        if p.suffix.lower() == ".csv":
            with p.open(newline="") as handle:
                reader = csv.DictReader(handle)
                if column not in (reader.fieldnames or []):
                    raise DatasetError(p, f"a CSV input needs an '{column}' column", f"columns {reader.fieldnames}")
                return [str((p.parent / row[column].strip()).resolve()) for row in reader
                        if (row.get(column) or "").strip()]
        if not image_suffix(p):
            raise DatasetError(p, f"input files must end in {', '.join(IMAGE_SUFFIXES)} (or be a .csv list)")
        return [str(p)]
    return sorted(_dicom_folders_and_files(p))
