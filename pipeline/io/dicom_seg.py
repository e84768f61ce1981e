"""DICOM Segmentation objects for label maps of DICOM series, encoded by highdicom (never by hand).

The SEG is a binary segmentation on the source series' own frames: frame ``k`` of the label map (index order
``(X, Y, Z)``, as :func:`pipeline.io.read_image` reads a series) belongs to the ``k``-th source image in the order
GDCM sorts the series by position, which is the order the volume was built in, whatever the file names. highdicom
takes each frame's plane position from its source image, so oblique and gantry-tilted series keep their geometry.

What it holds: the Study Instance UID, Frame of Reference, patient and study attributes of the source; a new Series
Instance UID and number (the source's + 1000); references to the source series and every source SOP instance;
one segment per foreground label, with its name, a SNOMED CT category and type (:func:`segment_codes`), a display
colour, and the algorithm (name, version, the model file's SHA-256). Empty frames are not written
(``omit_empty_frames``); a label the model did not find still has its segment description. The provenance line of
the batch job is the Content Description, so a re-run recognises its own files.

Example:
    >>> write_dicom_seg(labels, "scans/ct_series", "out/ct_series_seg.dcm", {1: "liver"},
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

from pipeline.errors import PipelineError
from pipeline.io.atomic import atomic_path

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


def _repair_identifiers(datasets: list, series_dir: Path) -> None:
    """Fill identifiers that anonymisers blank: the SOP class and instance from each file's meta header (the
    same values, by the standard); a missing study or series UID is derived from the Frame of Reference (stable,
    so re-runs agree) with a warning, because such a SEG cannot file into the source study in a PACS."""
    from pydicom.uid import generate_uid

    for ds in datasets:
        meta = getattr(ds, "file_meta", None)
        if not str(ds.get("SOPClassUID", "") or "") and meta is not None:
            ds.SOPClassUID = meta.get("MediaStorageSOPClassUID", "")
        if not str(ds.get("SOPInstanceUID", "") or "") and meta is not None:
            ds.SOPInstanceUID = meta.get("MediaStorageSOPInstanceUID", "")
        if not ds.SOPClassUID or not ds.SOPInstanceUID:
            raise PipelineError(f"{series_dir}: every source image needs a SOP Class and Instance UID, "
                                f"got none in {Path(ds.filename).name}")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        if not all(str(ds.get(keyword, "") or "") for ds in datasets):
            seed = [keyword, str(datasets[0].get("FrameOfReferenceUID", "")), str(series_dir.resolve())]
            derived = generate_uid(entropy_srcs=seed)
            logger.warning("%s: the source series has no %s; the SEG uses %s, derived from its frame of "
                           "reference, and will not file into the source study in a PACS", series_dir, keyword,
                           derived)
            for ds in datasets:
                setattr(ds, keyword, derived)


def _source_datasets(series_dir: Path) -> list:
    import pydicom
    import SimpleITK as sitk

    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(series_dir))
    if len(ids) != 1:
        raise PipelineError(f"{series_dir}: a DICOM SEG needs exactly one source series in the folder, got {len(ids)}")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series_dir), ids[0])  # sorted by position, as read
    datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]  # the SEG needs no source pixels
    _repair_identifiers(datasets, series_dir)
    return datasets


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


def write_dicom_seg(labels: np.ndarray, series_dir: str | os.PathLike, dest: str | os.PathLike,
                    names: Mapping[int, str], algorithm: SegAlgorithm, notes: str = "") -> Path:
    """Write the label map of a DICOM series as a DICOM SEG, atomically.

    Args:
        labels: ``(X, Y, Z)`` label ids on the series' grid (as read by :func:`pipeline.io.read_image`).
        series_dir: the folder of the source series.
        dest: the SEG file.
        names: label id -> name for every foreground label of the model (ids 1..N); id 0 is background.
        algorithm: name, version and model hash for the algorithm identification.
        notes: provenance line, stored as the Content Description. Defaults to ``""``.

    Returns:
        ``dest``.

    Raises:
        PipelineError: the folder does not hold one series, or the label map does not match its frames.
    """
    import highdicom as hd

    sources = _source_datasets(Path(series_dir))
    frames = np.ascontiguousarray(np.asarray(labels).transpose(2, 1, 0)).astype(np.uint8)  # (slices, rows, cols)
    rows, cols = int(sources[0].Rows), int(sources[0].Columns)
    if frames.shape != (len(sources), rows, cols):
        raise PipelineError(f"{series_dir}: the label map must have the series' shape (slices, rows, columns) "
                            f"{(len(sources), rows, cols)}, got {frames.shape}")
    segments = {int(k): str(v) for k, v in names.items() if int(k) > 0}
    numbers = sorted(segments)
    if numbers != list(range(1, len(numbers) + 1)) or int(frames.max(initial=0)) > len(numbers):
        raise PipelineError(f"{series_dir}: label ids must be 1..N with a name each, got names for {numbers} and "
                            f"values up to {int(frames.max(initial=0))}")
    first = sources[0]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_descriptions(segments, algorithm),
        series_instance_uid=hd.UID(), series_number=int(getattr(first, "SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="unetpp-pipeline",
        manufacturer_model_name=algorithm.name[:64], software_versions=algorithm.version[:64],
        device_serial_number="none", content_description=notes[:64] or None, content_label="SEGMENTATION",
        series_description=f"Segmentation ({algorithm.name})"[:64], omit_empty_frames=True)
    dest = Path(dest)
    with atomic_path(dest, suffix=SEG_SUFFIX) as tmp:
        seg.save_as(str(tmp))
    logger.info("wrote DICOM SEG %s (%d segments, %d frames)", dest, len(numbers), int(seg.NumberOfFrames))
    return dest


def read_seg_notes(path: str | os.PathLike) -> str | None:
    """The provenance line of a SEG this job wrote (its Content Description), or None."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["ContentDescription", "Modality"])
    except Exception:  # noqa: BLE001 - not a readable DICOM file: no provenance
        return None
    return str(ds.ContentDescription) if getattr(ds, "Modality", "") == "SEG" and "ContentDescription" in ds \
        else None


def read_dicom_seg(path: str | os.PathLike, series_dir: str | os.PathLike) -> np.ndarray:
    """The label map of a SEG on its source series' grid, ``(X, Y, Z)`` as :func:`pipeline.io.read_image` reads
    the series (frames the SEG omits as empty are zeros).

    Args:
        path: the SEG file.
        series_dir: the folder of its source series.
    """
    import highdicom as hd

    sources = _source_datasets(Path(series_dir))
    seg = hd.seg.segread(str(path))
    frames = seg.get_pixels_by_source_instance([str(ds.SOPInstanceUID) for ds in sources], combine_segments=True,
                                               assert_missing_frames_are_empty=True)
    return np.asarray(frames).transpose(2, 1, 0)
