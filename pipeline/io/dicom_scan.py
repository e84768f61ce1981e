"""What the DICOM files of one folder are: image series to segment, and everything else, each named once.

A careful DICOM toolkit reads headers, not file names. :func:`scan_dicom_folder` reads every file's header with
pydicom (pixel data deferred, never decoded here) and sorts the files into

- **image groups**: images of one Series Instance UID and SOP class (several SOP classes may share a series UID
  in exports; they are never mixed into one volume), each a candidate case;
- **ignored files**, each with one line saying why: objects that are not images to segment (SEG, SR, RT
  structure sets, plans and doses, presentation states, key objects, waveforms, DICOMDIRs), files that are not
  DICOM, and damaged files (empty, unreadable header, pixel data shorter than its header declares);
- **own outputs**: DICOM SEGs this project wrote (its manufacturer and a ``pipeline segment`` provenance line),
  which are never inputs and need no mention.

Files of other formats a DICOM folder often holds (``.txt``, ``.json``, ``.xml``, images the reader takes
itself...) are passed over silently; hidden files (the job's temporaries among them) are never looked at.

Example:
    >>> scan = scan_dicom_folder("study/")                           # doctest: +SKIP
    >>> [(g.key, len(g.datasets)) for g in scan.groups]             # doctest: +SKIP
    [('1.2.840.113619.2.55.3.604688119.969.1268071029.320', 120)]
    >>> scan.ignored[0].reason                                       # doctest: +SKIP
    'a Comprehensive SR Storage object, not an image to segment'
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = ["SEG_MANUFACTURER", "DicomGroup", "FolderScan", "IgnoredFile", "looks_like_dicom", "scan_dicom_folder",
           "sniff_dicom"]

logger = logging.getLogger(__name__)

#: the Manufacturer this project writes into its DICOM SEGs
SEG_MANUFACTURER = "unetpp-pipeline"

# objects with pixel data that are not images of the patient to segment, and objects without any
_NOT_IMAGES = {"SEG", "SR", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "RTIMAGE", "PR", "KO", "REG", "RWV",
               "DOC", "ECG", "HD", "AU", "PLAN", "FID", "RESP"}
_DICOMDIR = "1.2.840.10008.1.3.10"
# endings that are never DICOM: skipped without a word (an archive's notes, the reader's own image formats)
_OTHER_FORMATS = (".txt", ".json", ".xml", ".csv", ".md", ".html", ".pdf", ".zip", ".gz", ".tar", ".dump",
                  ".icc", ".png", ".jpg", ".jpeg", ".bmp", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".raw",
                  ".py", ".log", ".ini", ".cfg", ".yaml", ".yml")
_DICOM_ENDINGS = (".dcm", ".dicom", ".dic", ".ima")


@dataclass(frozen=True)
class IgnoredFile:
    """A file of a DICOM folder that is not segmented, and why.

    Args:
        path: the file.
        reason: one line.
        damaged: True for a file that should have been readable DICOM (empty, truncated, unreadable header).
    """

    path: str
    reason: str
    damaged: bool = False


@dataclass
class DicomGroup:
    """The images of one series (one SOP class) in one folder: a candidate case.

    Args:
        folder: the folder.
        key: its name within the folder: the Series Instance UID, plus ``:<SOP class UID>`` where the folder
            holds several SOP classes under one series UID.
        datasets: the files' headers (pixel data not loaded), in file-name order.
    """

    folder: str
    key: str
    datasets: list = field(default_factory=list)

    @property
    def label(self) -> str:
        """``<modality> series <number>`` for messages and case names."""
        first = self.datasets[0]
        number = str(first.get("SeriesNumber", "") or "").strip()
        return f"{first.get('Modality', '') or 'image'} series {number or '?'}".strip()


@dataclass
class FolderScan:
    """Everything :func:`scan_dicom_folder` found in one folder.

    Args:
        folder: the folder.
        groups: image groups, sorted by key.
        ignored: files not segmented, with the reason.
        own: this project's own SEG outputs.
    """

    folder: str
    groups: list[DicomGroup] = field(default_factory=list)
    ignored: list[IgnoredFile] = field(default_factory=list)
    own: list[str] = field(default_factory=list)

    @property
    def is_dicom(self) -> bool:
        """True when the folder holds any DICOM file (images, other objects or own outputs)."""
        return bool(self.groups or self.own or any(not i.reason.startswith("not a DICOM file")
                                                  for i in self.ignored))

    def group(self, key: str | None = None) -> DicomGroup:
        """The group named ``key``; with None, the folder's only group.

        Args:
            key: a group key, or None.

        Raises:
            ImageReadError: no such group, no image at all, or several groups when ``key`` is None.
        """
        from pipeline.errors import ImageReadError

        if key is not None:
            for group in self.groups:
                if group.key == key:
                    return group
            raise ImageReadError(self.folder, f"the folder holds no DICOM image series {key} (any more)")
        if not self.groups:
            why = f"; {len(self.ignored)} file(s) that are not images, e.g. {Path(self.ignored[0].path).name}: " \
                  f"{self.ignored[0].reason}" if self.ignored else ""
            raise ImageReadError(self.folder, f"the folder holds no DICOM series of images{why}")
        if len(self.groups) > 1:
            listed = ", ".join(f"{g.label} ({len(g.datasets)} files)" for g in self.groups)
            raise ImageReadError(self.folder, f"a DICOM folder read as one image must hold one series, found "
                                 f"{len(self.groups)}: {listed} (as the input folder of `pipeline segment`, it gives "
                                 "one case per series)")
        return self.groups[0]


def _has_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def looks_like_dicom(path: str | os.PathLike) -> bool:
    """True for a file with the DICOM preamble (``DICM`` at byte 128) or a DICOM ending (``.dcm``...).

    Args:
        path: the file.
    """
    return Path(path).suffix.lower() in _DICOM_ENDINGS or _has_preamble(Path(path))


def _read_header(path: Path) -> Dataset:
    """pydicom's dataset with the pixel data deferred (not loaded)."""
    import pydicom

    return pydicom.dcmread(str(path), defer_size=1024, force=not _has_preamble(path))


def _pixel_shortfall(ds: Dataset, size: int) -> str:
    """Why the pixel data of ``ds`` (a file of ``size`` bytes) cannot be complete, or ``""``."""
    element = ds.get_item("PixelData", keep_deferred=True)
    length = getattr(element, "length", None)
    tell = getattr(element, "value_tell", None)
    if length is None or tell is None or length == 0xFFFFFFFF:  # encapsulated: the decoder checks it
        return ""
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    if syntax == "1.2.840.10008.1.2.1.99":  # deflated: offsets are into the inflated stream
        return ""
    if tell + length > size:
        return f"truncated: its pixel data needs {length} bytes, the file holds {max(0, size - tell)}"
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:  # colour (subsampled YBR among them) is refused later
        return ""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    needed = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * frames \
        * int(ds.BitsAllocated) // 8
    if length < needed:
        return f"damaged: its pixel data holds {length} bytes, its header declares {needed}"
    return ""


def _sop_class(ds: Dataset) -> str:
    """The SOP Class UID, from the file meta where an anonymiser blanked it."""
    meta = getattr(ds, "file_meta", None)
    return str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else "") or "")


def _sop_name(ds: Dataset) -> str:
    from pydicom.uid import UID

    uid = _sop_class(ds)
    return UID(uid).name if uid else "DICOM"


def _series_key(ds: Dataset) -> str:
    """The Series Instance UID; where an anonymiser blanked it, what else tells series apart (number, frame of
    reference), so that two such series are never one volume."""
    uid = str(ds.get("SeriesInstanceUID", "") or "")
    if uid:
        return uid
    number = str(ds.get("SeriesNumber", "") or "").strip()
    frame = str(ds.get("FrameOfReferenceUID", "") or "")
    return f"no-series-uid.{number or 'x'}.{frame or 'x'}"


def _is_own(ds: Dataset) -> bool:
    from pipeline.io.writer import PROVENANCE_PREFIX  # the writer reads images: imported here, not at the top

    return ds.get("Modality") == "SEG" and str(ds.get("Manufacturer", "")) == SEG_MANUFACTURER \
        and str(ds.get("ContentDescription", "")).startswith(PROVENANCE_PREFIX)


def _classify(path: Path) -> tuple[str, object]:
    """``("image", ds)``, ``("own", None)``, ``("skip", None)`` or ``("ignored", IgnoredFile)``."""
    size = path.stat().st_size
    dicom_name = path.suffix.lower() in _DICOM_ENDINGS
    if size == 0:
        return "ignored", IgnoredFile(str(path), "an empty file (0 bytes)", damaged=True)
    try:
        ds = _read_header(path)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds for damaged files; each is one line
        if _has_preamble(path) or dicom_name:
            first = (str(exc).splitlines() or ["no reason given"])[0][:120]
            return "ignored", IgnoredFile(str(path), f"damaged DICOM: its header cannot be read ({first})",
                                          damaged=True)
        return "ignored", IgnoredFile(str(path), "not a DICOM file")
    if len(ds) == 0 and getattr(ds, "file_meta", None) and _has_preamble(path):  # pydicom warns, returns nothing
        return "ignored", IgnoredFile(str(path), f"damaged (truncated?): no data set after the file meta "
                                      f"({size} bytes)", damaged=True)
    sop_class = _sop_class(ds)
    if not sop_class and "Rows" not in ds:
        return "ignored", IgnoredFile(str(path), "not a DICOM file" if not _has_preamble(path) else
                                      "a DICOM file without a SOP class or image: not an image to segment")
    if sop_class == _DICOMDIR:
        return "ignored", IgnoredFile(str(path), "a DICOMDIR (an index of files, not an image)")
    if _is_own(ds):
        return "own", None
    modality = str(ds.get("Modality", "") or "")
    if modality in _NOT_IMAGES:
        return "ignored", IgnoredFile(str(path), f"{_sop_name(ds)}: not an image to segment")
    if "PixelData" not in ds and "Rows" in ds and _has_preamble(path):  # an image header whose pixels are cut off
        return "ignored", IgnoredFile(str(path), "damaged (truncated?): an image header without its pixel data",
                                      damaged=True)
    if "PixelData" not in ds or "Rows" not in ds:
        return "ignored", IgnoredFile(str(path), f"{_sop_name(ds)} without pixel data: not an image to segment")
    missing = [k for k in ("Columns", "BitsAllocated") if k not in ds]
    if missing:
        return "ignored", IgnoredFile(str(path), f"damaged: an image header without {' or '.join(missing)}",
                                      damaged=True)
    short = _pixel_shortfall(ds, size)
    if short:
        return "ignored", IgnoredFile(str(path), short, damaged=True)
    return "image", ds


def sniff_dicom(path: str | os.PathLike) -> bool:
    """True for a file that parses as a DICOM data set with a SOP class or an image, even without the ``DICM``
    preamble, the file meta or a DICOM ending (raw data sets some exports write).

    Args:
        path: the file.

    Example:
        >>> sniff_dicom("/etc/hostname")
        False
    """
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), force=True, stop_before_pixels=True, defer_size=1024)
        return bool(ds.get("SOPClassUID") or ("Modality" in ds and "Rows" in ds))
    except Exception:  # noqa: BLE001 - anything pydicom cannot parse is not DICOM here
        return False


def _candidates(folder: Path) -> list[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [p for p in entries if not p.name.startswith(".") and p.is_file()
            and not p.name.lower().endswith(_OTHER_FORMATS)]


def scan_dicom_folder(folder: str | os.PathLike) -> FolderScan:
    """Sort the files directly in ``folder`` (not its sub-folders) into image groups, ignored files and this
    project's own outputs (see the module docstring).

    Args:
        folder: the folder.

    Returns:
        A :class:`FolderScan`; a folder without DICOM has no groups and lists its other files as "not a DICOM
        file" (callers decide whether that is worth a word).
    """
    root = Path(folder)
    scan = FolderScan(str(root))
    groups: dict[tuple[str, str], list] = {}
    for path in _candidates(root):  # pydicom logs odd encodings it reads anyway: not the user's concern here
        try:
            kind, value = _classify(path)
        except OSError as exc:  # vanished or unreadable between listing and reading
            kind, value = "ignored", IgnoredFile(str(path), f"cannot be read ({exc.strerror or exc})", damaged=True)
        except Exception as exc:  # noqa: BLE001 - a header with values of the wrong kind: this file, not the job
            first = (str(exc).splitlines() or [""])[0][:120]
            kind, value = "ignored", IgnoredFile(str(path), f"damaged DICOM: its header has values of the wrong "
                                                 f"kind ({first})", damaged=True)
        if kind == "image":
            groups.setdefault((_series_key(value), _sop_class(value)), []).append(value)
        elif kind == "own":
            scan.own.append(str(path))
        elif kind == "ignored":
            scan.ignored.append(value)
    per_series: dict[str, int] = {}
    for series, _ in groups:
        per_series[series] = per_series.get(series, 0) + 1
    for (series, sop_class), datasets in sorted(groups.items()):
        key = series if per_series[series] == 1 else f"{series}:{sop_class}"
        scan.groups.append(DicomGroup(str(root), key, datasets))
    if scan.own:
        logger.debug("%s: %d DICOM SEG(s) written by this project, not inputs", root, len(scan.own))
    return scan
