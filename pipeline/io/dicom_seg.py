"""DICOM Segmentation objects for label maps of DICOM series, encoded by highdicom (never by hand).

The SEG is a binary segmentation on the source series' own frames: slice ``k`` of the label map (index order
``(X, Y, Z)``, as :func:`pipeline.io.read_image` reads a series) belongs to the image the reader put there
(:class:`~pipeline.io.dicom_series.DicomSeries`: sorted by position, whatever the file names; an enhanced image's
frames by frame number); slices the reader filled have no image and no frame. highdicom takes each frame's plane
position from its source image, so oblique and gantry-tilted series keep their geometry.

What it holds: the Study Instance UID, Frame of Reference, patient and study attributes of the source (absent Type 2
attributes written empty); a new Series Instance UID and number (the source's + 1000); references to the source
series and every source instance read; one segment per foreground label, with its name, a SNOMED CT category and
type (:func:`segment_codes`), a display colour, and the algorithm (name, version, the model file's SHA-256). Empty
frames are not written (``omit_empty_frames``); a label the model did not find still has its segment description.
The provenance line of the batch job is the Content Description, so a re-run recognises its own files. The file
is read back before its rename; a full disk raises :class:`~pipeline.errors.DiskFullError` however pydicom
reports it.

Example:
    >>> write_dicom_seg(labels, volume.dicom, "out/ct_series_seg.dcm", {1: "liver"},
    ...                 SegAlgorithm("UNet++ CT", "0.2.0", "3f2a..."), "pipeline segment 0123")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import ImageReadError, ImageWriteError, PipelineError
from pipeline.io.atomic import atomic_path, raise_if_disk_full
from pipeline.io.dicom_scan import SEG_MANUFACTURER
from pipeline.io.dicom_series import DicomSeries, instance_uid

__all__ = ["SEG_SUFFIX", "SegAlgorithm", "read_dicom_seg", "read_seg_notes", "segment_codes", "write_dicom_seg"]

logger = logging.getLogger(__name__)

#: file ending of the SEG outputs
SEG_SUFFIX = ".dcm"
# the QC images' colours, so that a viewer shows the classes as the MLflow pictures do
_RGB = [(255, 59, 48), (52, 199, 89), (0, 122, 255), (255, 204, 0), (175, 82, 222), (90, 200, 250), (255, 149, 0)]


_QUALIFIERS = {"Left", "Right", "Anterior", "Posterior", "Upper", "Lower", "Superior", "Inferior", "Medial",
               "Lateral", "Bilateral", "Proximal", "Distal", "Part", "Region", "Structure"}


@dataclass(frozen=True)
class SegAlgorithm:
    """The algorithm identification of the segments.

    Args:
        name: the model's name (its bundle's).
        version: the model's version (its bundle's).
        model_sha256: SHA-256 of the exported model file.
    """

    name: str
    version: str
    model_sha256: str


def segment_codes(name: str) -> tuple[object, object]:
    """``(category, type)`` codes of a label name.

    Rule: a name that is, or contains, a SNOMED CT structure known to pydicom's code dictionary (``liver``,
    ``left kidney`` -> kidney, ``hippocampus``...; laterality and other qualifiers are skipped) gets that
    structure as its type and *Anatomical Structure* (SCT
    91723000) as its category; any other name gets *Tissue* (SCT 85756007) for both, DICOM's generic choice.

    Example:
        >>> [c.value for c in segment_codes("Liver")], [c.value for c in segment_codes("lesion 3")]
        (['91723000', '10200004'], ['85756007', '85756007'])
    """
    from pydicom.sr.codedict import codes

    words = [w.capitalize() for w in re.split(r"[^A-Za-z]+", name) if w]
    # the whole name first, then single words from the last (the noun in English: "left kidney"), qualifiers never
    candidates = ["".join(words)] + list(reversed(words))
    candidates = [c for c in candidates if c not in _QUALIFIERS]
    for candidate in candidates:
        if candidate and candidate in dir(codes.SCT):
            code = getattr(codes.SCT, candidate)
            return codes.SCT.AnatomicalStructure, code
    return codes.SCT.Tissue, codes.SCT.Tissue


# Type 2 attributes highdicom copies from the source: anonymisers drop them; a SEG writes them empty
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "StudyDate",
          "StudyTime", "ReferringPhysicianName")


def _repair_identifiers(datasets: list, folder: str) -> None:
    """Make the source headers fit a SEG: the SOP class and instance from each file's meta header where an
    anonymiser blanked them (the same values, by the standard); a missing study or series UID derived from the
    Frame of Reference (stable, so re-runs agree) with a warning, because such a SEG cannot file into the source
    study; absent Type 2 attributes empty (never read from elsewhere). A missing Frame of Reference refuses."""
    from pydicom.uid import generate_uid

    for ds in datasets:
        meta = getattr(ds, "file_meta", None)
        if not str(ds.get("SOPClassUID", "") or "") and meta is not None:
            ds.SOPClassUID = meta.get("MediaStorageSOPClassUID", "")
        if not str(ds.get("SOPInstanceUID", "") or "") and meta is not None:
            ds.SOPInstanceUID = meta.get("MediaStorageSOPInstanceUID", "")
        if not ds.SOPClassUID or not ds.SOPInstanceUID:
            raise PipelineError(f"{ds.filename}: every source image of a DICOM SEG needs a SOP Class and Instance "
                                "UID, this one has none")
        if not str(ds.get("FrameOfReferenceUID", "") or ""):
            raise PipelineError(f"{ds.filename}: a DICOM SEG needs its source's Frame of Reference UID (0020,0052) "
                                "to place its frames, this image has none; use --output-format nifti")
        for keyword in _TYPE2:
            if keyword not in ds:
                setattr(ds, keyword, None)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        if not all(str(ds.get(keyword, "") or "") for ds in datasets):
            seed = [keyword, str(datasets[0].get("FrameOfReferenceUID", "")), str(Path(folder).resolve())]
            derived = generate_uid(entropy_srcs=seed)
            logger.warning("%s: the source series has no %s; the SEG uses %s, derived from its frame of "
                           "reference, and will not file into the source study in a PACS", folder, keyword,
                           derived)
            for ds in datasets:
                setattr(ds, keyword, derived)


def _series_of(source: DicomSeries | str | os.PathLike) -> DicomSeries:
    """The series itself, or the only image series of a folder, checked as the reader checks it."""
    from pipeline.io.dicom_series import find_series

    return source if isinstance(source, DicomSeries) else find_series(source)


def _sources(series: DicomSeries) -> list:
    """Copies of the source headers, repaired for a SEG (the series' own stay as read)."""
    import copy

    datasets = [copy.deepcopy(ds) for ds in series.datasets]
    for ds in datasets:
        if "PixelData" in ds:  # a SEG needs no source pixels (and they were never loaded)
            del ds.PixelData
    _repair_identifiers(datasets, series.folder)
    return datasets


def _frames(labels: np.ndarray, series: DicomSeries, rows: int, cols: int) -> np.ndarray:
    """``(source images or frames, rows, columns)``: the label map's slices that an image holds, in the order
    highdicom pairs them with the sources (file order; frame order of an enhanced image)."""
    grid = series.geometry.shape
    array = np.asarray(labels)
    if array.shape != grid:
        raise PipelineError(f"{series.folder}: the label map must have the series' shape {grid}, got {array.shape}")
    if array.ndim == 2:
        array = array[:, :, None]
    refs = sorted(series.slices, key=lambda s: (s.frame,)) if series.enhanced else series.slices
    frames = np.stack([array[:, :, ref.index].T for ref in refs]).astype(np.uint8)
    if frames.shape[1:] != (rows, cols):
        raise PipelineError(f"{series.folder}: the label map's slices must be {rows}x{cols}, got {frames.shape[1:]}")
    return np.ascontiguousarray(frames)


def _descriptions(names: Mapping[int, str], algorithm: SegAlgorithm) -> list:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm.name[:64], family=codes.cid7162.ArtificialIntelligence, version=algorithm.version[:64],
        parameters={"model_sha256": algorithm.model_sha256})
    out = []
    for number, name in sorted(names.items()):
        category, kind = segment_codes(name)
        out.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=name[:64],
            segmented_property_category=category, segmented_property_type=kind,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=identification,
            display_color=hd.color.CIELabColor.from_rgb(*_RGB[(number - 1) % len(_RGB)])))
    return out


def write_dicom_seg(labels: np.ndarray, source: DicomSeries | str | os.PathLike, dest: str | os.PathLike,
                    names: Mapping[int, str], algorithm: SegAlgorithm, notes: str = "") -> Path:
    """Write the label map of a DICOM series as a DICOM SEG, atomically, read back before its rename.

    Args:
        labels: label ids on the series' grid (``(X, Y, Z)``, as :func:`pipeline.io.read_image` reads it).
        source: the series as read (``Volume.dicom``), or the folder of its only series.
        dest: the SEG file.
        names: label id -> name for every foreground label of the model (ids 1..N); id 0 is background.
        algorithm: name, version and model hash for the algorithm identification.
        notes: provenance line, stored as the Content Description. Defaults to ``""``.

    Returns:
        ``dest``.

    Raises:
        PipelineError: the label map does not match the series, a source lacks what a SEG needs, or the file
            reads back different.
        DiskFullError: the file system is full (nothing is left under either name).
    """
    import highdicom as hd

    series = _series_of(source)
    sources = _sources(series)
    rows, cols = int(sources[0].Rows), int(sources[0].Columns)
    frames = _frames(labels, series, rows, cols)
    segments = {int(k): str(v) for k, v in names.items() if int(k) > 0}
    numbers = sorted(segments)
    if numbers != list(range(1, len(numbers) + 1)) or int(frames.max(initial=0)) > len(numbers):
        raise PipelineError(f"{series.folder}: label ids must be 1..N with a name each, got names for {numbers} and "
                            f"values up to {int(frames.max(initial=0))}")
    first = sources[0]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_descriptions(segments, algorithm),
        series_instance_uid=hd.UID(), series_number=int(getattr(first, "SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=SEG_MANUFACTURER,
        manufacturer_model_name=algorithm.name[:64], software_versions=algorithm.version[:64],
        device_serial_number="none", content_description=notes[:64] or None, content_label="SEGMENTATION",
        series_description=f"Segmentation ({algorithm.name})"[:64],
        omit_empty_frames=bool(frames.any()))  # highdicom keeps every frame of an empty map anyway, with a warning
    dest = Path(dest)
    with atomic_path(dest, suffix=SEG_SUFFIX) as tmp:
        seg.save_as(str(tmp))
        _verify(tmp, series, frames, dest)
    logger.info("wrote DICOM SEG %s (%d segments, %d frames)", dest, len(numbers), int(seg.NumberOfFrames))
    return dest


def _verify(tmp: Path, series: DicomSeries, frames: np.ndarray, dest: Path) -> None:
    """Read the written SEG back: its frames must be the label map's, or the write did not complete."""
    try:
        again = _frames(read_dicom_seg(tmp, series), series, frames.shape[1], frames.shape[2])
    except Exception as exc:  # any failure to read it back means a damaged file (or a full disk)
        raise_if_disk_full(exc, dest)
        raise ImageWriteError(dest, f"the DICOM SEG does not read back ({str(exc).splitlines()[0][:160]})") from exc
    if not np.array_equal(again, frames):
        raise ImageWriteError(dest, "the DICOM SEG reads back different from the label map")


def read_seg_notes(path: str | os.PathLike) -> str | None:
    """The provenance line of a SEG this job wrote (its Content Description), or None."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["ContentDescription", "Modality"])
    except Exception:  # noqa: BLE001 - not a readable DICOM file: no provenance
        return None
    return str(ds.ContentDescription) if getattr(ds, "Modality", "") == "SEG" and "ContentDescription" in ds \
        else None


def read_dicom_seg(path: str | os.PathLike, source: DicomSeries | str | os.PathLike) -> np.ndarray:
    """The label map of a SEG on its source series' grid, ``(X, Y, Z)`` as :func:`pipeline.io.read_image` reads
    the series (frames the SEG omits as empty, and slices no image holds, are zeros).

    Args:
        path: the SEG file.
        source: the series as read (``Volume.dicom``), or the folder of its only series.

    Raises:
        ImageReadError: the file is not a readable SEG of that series (named, with the reason).
    """
    import highdicom as hd

    series = _series_of(source)
    try:
        seg = hd.seg.segread(str(path))
        if series.enhanced:
            refs = sorted(series.slices, key=lambda s: s.frame)
            uid = instance_uid(series.datasets[0])
            frames = seg.get_pixels_by_source_frame(uid, [r.frame for r in refs], combine_segments=True,
                                                    assert_missing_frames_are_empty=True)
        else:
            refs = series.slices
            uids = [instance_uid(ds) for ds in series.datasets]
            frames = seg.get_pixels_by_source_instance(uids, combine_segments=True,
                                                       assert_missing_frames_are_empty=True)
    except Exception as exc:  # pydicom and highdicom raise many kinds for a damaged or foreign file
        first = (str(exc).splitlines() or ["no reason given"])[0][:160]
        raise ImageReadError(path, f"not a readable DICOM SEG of {series.folder} ({first})") from exc
    labels = np.zeros(series.geometry.shape if series.geometry.ndim == 3 else (*series.geometry.shape, 1),
                      np.uint8)
    for ref, frame in zip(refs, np.asarray(frames)):
        labels[:, :, ref.index] = frame.T
    return labels if series.geometry.ndim == 3 else labels[:, :, 0]
