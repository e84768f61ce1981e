"""Find the images to segment under a path: a file, a folder searched recursively, or a CSV list.

A folder yields every NIfTI/NRRD/MetaImage file below it and every DICOM image series of every sub-folder that
holds DICOM (files with the ``DICM`` preamble or a DICOM ending, read by :func:`pipeline.io.dicom_scan.scan_dicom_folder`):
a folder with one series is one case named after the folder; a folder with several gives one case per series
(``<folder>_<modality><series number>``). The DICOM files that are not images to segment (SEG, SR, RT objects,
presentation states, damaged files) come back in :attr:`Discovery.ignored`, one line each, so that a job can
name them once; this project's own SEG outputs are never inputs. Results are sorted, so that a job's order (and
its shards) are the same on every machine.

:func:`find_cases` groups them into cases for a model with ``channels`` inputs: with one channel every image is
a case; with more, a case is a 4D file (channels on the fourth axis), the nnU-Net channel files
``CASE_0000<ending>``, ``CASE_0001<ending>``... of one folder, or a CSV row with ``image_0``, ``image_1``...
columns. A case that cannot be completed (a missing channel file) is returned with its ``error`` so that the
batch job reports it and goes on.

Example:
    >>> find_images("incoming/")                                          # doctest: +SKIP
    ['incoming/ct_001.nii.gz', 'incoming/patient7/series_3', 'incoming/scan.nrrd']
    >>> find_cases("imagesTs/", channels=2)[0]                            # doctest: +SKIP
    InputCase(name='BRATS_001', paths=('imagesTs/BRATS_001_0000.nii.gz', 'imagesTs/BRATS_001_0001.nii.gz'), error='')
"""

from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import DatasetError
from pipeline.io.dicom_scan import FolderScan, IgnoredFile, looks_like_dicom, scan_dicom_folder, sniff_dicom
from pipeline.io.reader import IMAGE_SUFFIXES, image_suffix

__all__ = ["NNUNET_CHANNEL", "Discovery", "InputCase", "discover", "find_cases", "find_images", "looks_like_dicom"]

logger = logging.getLogger(__name__)

#: nnU-Net's channel file name: ``<case>_<4-digit channel><ending>``.
NNUNET_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class InputCase:
    """One case to segment.

    Args:
        name: case id (output names derive from it).
        paths: its image paths, one per channel (or one 4D file / one single-channel image / one DICOM folder).
        error: why it cannot be segmented, if known before reading (e.g. a missing channel file).
        series: which DICOM series of the folder (its scan key) where the folder holds several; ``""`` otherwise.
    """

    name: str
    paths: tuple[str, ...]
    error: str = ""
    series: str = ""

    @property
    def source(self) -> str:
        """The input as one string for reports: the path, the channel paths joined by ``;``, or
        ``<folder>#<series key>`` for one of several DICOM series in a folder."""
        return ";".join(self.paths) + (f"#{self.series}" if self.series else "")


@dataclass
class Discovery:
    """What :func:`discover` found.

    Args:
        cases: the cases to segment.
        ignored: files of DICOM folders that are not images to segment, each with its reason.
    """

    cases: list[InputCase]
    ignored: list[IgnoredFile]


def _walk(root: Path) -> tuple[list[str], list[FolderScan], list[IgnoredFile]]:
    """Image files below ``root``, the scans of its folders that hold DICOM, and the entries passed over because
    they are not regular files (a named pipe or a device would block or never end: never opened)."""
    files: list[str] = []
    scans: list[FolderScan] = []
    passed: list[IgnoredFile] = []
    hidden = 0
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = Path(folder)
        # hidden files (the job's own temporaries among them) are never inputs
        visible = [f for f in sorted(names) if not f.startswith(".")]
        hidden += len(names) - len(visible)
        regular = [f for f in visible if (here / f).is_file()]
        passed += [IgnoredFile(str(here / f), "not a regular file (a named pipe, device or broken link): never "
                               "opened") for f in visible if f not in regular]
        images = [str(here / f) for f in regular if image_suffix(f)]
        files += images
        others = [here / f for f in regular if not image_suffix(f)]
        # raw data sets (no preamble, no ending) are tried on a few files of folders without other images
        if any(looks_like_dicom(p) for p in others) or (not images and any(sniff_dicom(p) for p in others[:3])):
            scan = scan_dicom_folder(here)
            if scan.is_dicom:
                scans.append(scan)
    if hidden:
        logger.info("passed over %d hidden file(s) under %s (names starting with '.')", hidden, root)
    return files, scans, passed


def _dicom_cases(scan: FolderScan) -> list[InputCase]:
    from pipeline.data.datalist import case_id

    name = case_id(Path(scan.folder))
    if len(scan.groups) == 1:
        return [InputCase(name, (scan.folder,))]
    cases = []
    for group in scan.groups:
        first = group.datasets[0]
        tag = f"{first.get('Modality', '') or 'image'}{str(first.get('SeriesNumber', '') or '').strip()}"
        cases.append(InputCase(f"{name}_{tag}", (scan.folder,), series=group.key))
    return cases


def _csv_rows(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:  # Excel writes a byte-order mark
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


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
    if not p.is_file() and not p.is_dir():
        raise DatasetError(p, "the input must be a regular file or a folder, not a named pipe or device")
    if p.is_file():
        if p.suffix.lower() == ".csv":
            fields, rows = _csv_rows(p)
            if column not in fields:
                raise DatasetError(p, f"a CSV input needs an '{column}' column", f"columns {fields}")
            return [str((p.parent / row[column].strip()).resolve()) for row in rows
                    if (row.get(column) or "").strip()]
        if not image_suffix(p):
            raise DatasetError(p, f"input files must end in {', '.join(IMAGE_SUFFIXES)} (or be a .csv list); "
                               "DICOM is read by folder: pass the series' folder")
        return [str(p)]
    files, scans, _ = _walk(p)
    return sorted(files + [s.folder for s in scans if s.groups])


def _csv_cases(path: Path, channels: int) -> list[InputCase]:
    """One case per row; a row with an empty cell, or naming the images of an earlier row, is a case with its
    error (reported by the job), never dropped."""
    from pipeline.data.datalist import case_id

    with path.open(newline="", encoding="utf-8-sig") as handle:  # line numbers as an editor shows them; BOM: Excel
        reader = csv.DictReader(handle)
        rows = [(reader.line_num, row) for row in reader]
        fields = list(reader.fieldnames or [])
    columns = [f"image_{c}" for c in range(channels)]
    if channels == 1 or not all(c in fields for c in columns):
        if "image" not in fields:
            want = "an 'image' column" if channels == 1 else \
                f"columns {', '.join(columns)} (or an 'image' column of 4D files)"
            raise DatasetError(path, f"a CSV input for a {channels}-channel model needs {want}", f"columns {fields}")
        columns = ["image"]
    cases: list[InputCase] = []
    first_row: dict[tuple[str, ...], int] = {}
    for row_no, row in rows:
        cells = [(row.get(c) or "").strip() for c in columns]
        paths = tuple(str((path.parent / cell).resolve()) for cell in cells if cell)
        name = (row.get("case") or "").strip() or (case_id(paths[0]) if paths else f"row{row_no}")
        missing = [c for c, cell in zip(columns, cells) if not cell]
        error = ""
        if missing:
            error = f"{path}:{row_no}: every row must name an image in each of the columns " \
                    f"{', '.join(columns)}, got an empty cell in {', '.join(missing)}"
        elif paths in first_row:
            error = f"{path}:{row_no}: every row must name other images than the rows before it, got those of " \
                    f"row {first_row[paths]}"
        first_row.setdefault(paths, row_no)
        # a row that cannot be a case keeps a place of its own in the job (and its report) under its row number
        cases.append(InputCase(name, paths if not error else (f"{path}:{row_no}",), error))
    return cases


def _group_channels(images: list[str], channels: int) -> list[InputCase]:
    """nnU-Net channel files of one folder become one case; other images stay cases of their own."""
    from pipeline.data.datalist import case_id

    groups: dict[tuple[str, str], dict[int, str]] = {}
    cases = []
    for image in images:
        match = NNUNET_CHANNEL.match(case_id(image)) if image_suffix(image) else None
        if match is None:
            cases.append(InputCase(case_id(image), (image,)))
            continue
        groups.setdefault((str(Path(image).parent), match["case"]), {})[int(match["channel"])] = image
    for (folder, name), files in groups.items():
        expected = list(range(channels))
        paths = tuple(files[c] for c in sorted(files))
        error = "" if sorted(files) == expected else (
            f"{Path(folder) / name}: a {channels}-channel case needs the files {name}_0000 to "
            f"{name}_{channels - 1:04d}, got channels {sorted(files)}")
        cases.append(InputCase(name, paths, error))
    return sorted(cases, key=lambda c: c.paths[0])


def discover(path: str | os.PathLike, channels: int = 1) -> Discovery:
    """The cases under ``path`` for a model with ``channels`` input channels, and the DICOM files passed over
    (see the module docstring).

    Args:
        path: an image file, a DICOM series folder, a folder to search recursively, or a CSV list.
        channels: the model's input channels. Defaults to 1 (every image is a case).

    Raises:
        DatasetError: as :func:`find_images`, or a CSV without the columns a multi-channel model needs.
    """
    from pipeline.data.datalist import case_id

    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".csv":
        return Discovery(_csv_cases(p, int(channels)), [])
    if not p.is_dir():
        files, scans, passed = find_images(p), [], []  # its checks of the path
    else:
        files, scans, passed = _walk(p)
    ignored = passed + [item for scan in scans for item in scan.ignored]
    if int(channels) <= 1:
        cases = [InputCase(case_id(Path(i)), (i,)) for i in files]
    else:
        cases = _group_channels(files, int(channels))
    cases += [case for scan in scans for case in _dicom_cases(scan)]
    return Discovery(sorted(cases, key=lambda c: c.source), ignored)


def find_cases(path: str | os.PathLike, channels: int = 1) -> list[InputCase]:
    """The cases under ``path`` for a model with ``channels`` input channels (:func:`discover`'s cases).

    Args:
        path: an image file, a DICOM series folder, a folder to search recursively, or a CSV list.
        channels: the model's input channels. Defaults to 1 (every image is a case).

    Raises:
        DatasetError: as :func:`find_images`, or a CSV without the columns a multi-channel model needs.
    """
    return discover(path, channels).cases
