"""A DICOM image series as a volume on a grid that is checked, never invented.

:func:`assemble_series` turns the headers of one image group (:mod:`pipeline.io.dicom_scan`) into a
:class:`DicomSeries`: every image (or every frame of an enhanced multi-frame image) sorted by its position along
the slice normal, with the grid the positions prove. The rules, each refusal one line naming a file and a value:

- every image needs Rows/Columns, Pixel Spacing, Image Position and Orientation (Patient) (an enhanced image: in
  its functional groups); one grey value per pixel; all images the same size, orientation and pixel spacing;
- the same instance twice (a copied file) is read once, with a warning; two instances at one position (echoes,
  phases, a repeated slice) are refused: such a series must be split first;
- slices a median step apart; a gap of up to :data:`MAX_FILLED` missing slices is filled for the network by
  linear interpolation of its neighbours, with a warning naming it (the label map keeps the regular grid; a SEG
  has frames only for images that exist); a wider gap, or positions off the regular grid, are refused;
- slices that step sideways (a tilted gantry) are read stacked along the normal, with a warning; their SEG frames
  keep each image's own position, and :attr:`DicomSeries.shear_deg` tells writers that a volume grid cannot.

:func:`read_series` decodes the pixels through SimpleITK (GDCM: JPEG, JPEG-LS, JPEG 2000, RLE), one file at a
time, so that a file that cannot be decoded is named.

Example:
    >>> from pipeline.io.dicom_scan import scan_dicom_folder
    >>> series = assemble_series(scan_dicom_folder("ct_series/").group())       # doctest: +SKIP
    >>> series.geometry.spacing, series.warnings                               # doctest: +SKIP
    ((0.78125, 0.78125, 2.5), [])
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import ImageReadError
from pipeline.io.dicom_scan import DicomGroup
from pipeline.io.geometry import Geometry

__all__ = ["MAX_FILLED", "DicomSeries", "SliceRef", "assemble_series", "find_series", "instance_uid",
           "read_series"]

logger = logging.getLogger(__name__)

#: the most consecutive missing slices filled by interpolation; a wider gap refuses the series
MAX_FILLED = 2
_ANGLE_TOL = 1e-3  # direction cosines that differ by less are one orientation
_REL_TOL = 1e-3  # pixel spacings that differ by less (relative) are one spacing
_GRID_TOL = 0.2  # a step may be off a whole number of median steps by this fraction
_SHEAR_TOL_DEG = 0.5  # sideways steps below this angle are rounding, not a tilt


@dataclass(frozen=True)
class SliceRef:
    """One slice of the volume and where it came from.

    Args:
        path: its file.
        index: its z index in the volume.
        position: its Image Position (Patient), mm.
        frame: its frame number (1-based) in an enhanced multi-frame file, else 0.
    """

    path: str
    index: int
    position: tuple[float, float, float]
    frame: int = 0


@dataclass
class DicomSeries:
    """A checked series: its slices in volume order, the grid, and what a reader should know.

    Args:
        folder: its folder.
        key: its key in the folder (:class:`~pipeline.io.dicom_scan.DicomGroup`).
        datasets: the headers of its files (one per file; pixel data not loaded), in slice order.
        slices: one per volume slice that an image holds (filled slices have none).
        geometry: the grid (2D for a single image).
        warnings: one line each: copies read once, filled gaps, a tilt.
        shear_deg: the gantry/detector tilt the slice positions show (0 for a stack along the normal).
    """

    folder: str
    key: str
    datasets: list
    slices: list[SliceRef]
    geometry: Geometry
    warnings: list[str] = field(default_factory=list)
    shear_deg: float = 0.0

    @property
    def enhanced(self) -> bool:
        """True for one enhanced multi-frame file."""
        return bool(self.slices) and self.slices[0].frame > 0


def _show(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{float(v):.4g}" for v in values) + "]"


def _floats(value, count: int) -> np.ndarray | None:
    try:
        out = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (count,) and np.all(np.isfinite(out)) else None


def _frame_items(ds) -> list[tuple[int, object, object, object]]:
    """``(frame, position, orientation, spacing)`` of each frame of an enhanced image (functional groups)."""
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]

    def attr(item, sequence: str, keyword: str):
        for source in (item, shared):
            if source is not None and sequence in source and source[sequence].value:
                value = source[sequence].value[0].get(keyword)
                if value is not None:
                    return value
        return None

    return [(k + 1, attr(item, "PlanePositionSequence", "ImagePositionPatient"),
             attr(item, "PlaneOrientationSequence", "ImageOrientationPatient"),
             attr(item, "PixelMeasuresSequence", "PixelSpacing"))
            for k, item in enumerate(ds.PerFrameFunctionalGroupsSequence)]


def _planes(group: DicomGroup) -> list[tuple[str, int, object, object, object, str]]:
    """``(file, frame, position, orientation, spacing, instance uid)`` of every image plane of the group."""
    datasets = group.datasets
    multi = [ds for ds in datasets if int(ds.get("NumberOfFrames", 1) or 1) > 1]
    if multi:
        ds = multi[0]
        name = Path(ds.filename).name
        if len(datasets) > 1:
            raise ImageReadError(group.folder, f"{group.label}: a multi-frame image ({name}, {ds.NumberOfFrames} "
                                 f"frames) must be the only image of its series, found {len(datasets)} files")
        if "PerFrameFunctionalGroupsSequence" not in ds:
            raise ImageReadError(ds.filename, f"a multi-frame image must give each frame's position (an enhanced "
                                 f"image's functional groups); this {ds.NumberOfFrames}-frame "
                                 f"{ds.get('Modality', '')} image has none: its frames are not a volume")
        uid = instance_uid(ds)
        return [(ds.filename, f, pos, ori, sp, uid) for f, pos, ori, sp in _frame_items(ds)]
    return [(ds.filename, 0, ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient"),
             ds.get("PixelSpacing"), instance_uid(ds)) for ds in datasets]


def instance_uid(ds) -> str:
    """The SOP Instance UID of a header (from the file meta where an anonymiser blanked it), or its file name."""
    meta = getattr(ds, "file_meta", None)
    return str(ds.get("SOPInstanceUID", "") or (meta.get("MediaStorageSOPInstanceUID", "") if meta else "")
               or ds.filename)


def _check_images(group: DicomGroup) -> None:
    first = group.datasets[0]
    for ds in group.datasets:
        name = Path(ds.filename).name
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise ImageReadError(ds.filename, f"a series to segment must hold grey-scale images (one sample per "
                                 f"pixel), {name} has {ds.SamplesPerPixel} ({ds.get('PhotometricInterpretation')})")
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise ImageReadError(group.folder, f"{group.label}: all images of a series must have one size; {name} "
                                 f"is {ds.Rows}x{ds.Columns}, {Path(first.filename).name} {first.Rows}x"
                                 f"{first.Columns} (rows x columns)")


def _plane_geometry(group: DicomGroup, planes: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orientation (row, column cosines), pixel spacing (row, column) and positions, all checked."""
    refs: dict[str, tuple] = {}
    for path, frame, pos, ori, spacing, _ in planes:
        where = Path(path).name + (f" frame {frame}" if frame else "")
        for keyword, value, count in (("Image Orientation (Patient)", ori, 6), ("Pixel Spacing", spacing, 2),
                                      ("Image Position (Patient)", pos, 3)):
            parsed = _floats(value, count) if value is not None else None
            if parsed is None or (keyword == "Pixel Spacing" and np.any(parsed <= 0)):
                got = "none" if value is None else f"'{value}'"
                raise ImageReadError(path, f"every image of a series to segment needs a valid {keyword} (its grid "
                                     f"is unknown without it, and none is invented); {where} has {got}")
            if keyword not in refs:
                refs[keyword] = (parsed, where)
            elif keyword != "Image Position (Patient)":
                base, base_where = refs[keyword]
                close = np.allclose(parsed, base, atol=_ANGLE_TOL) if count == 6 else \
                    np.allclose(parsed, base, rtol=_REL_TOL, atol=0)
                if not close:
                    raise ImageReadError(group.folder, f"{group.label}: all images of a series must share one "
                                         f"{keyword}; {where} has {_show(parsed)}, {base_where} {_show(base)}")
    orientation, spacing = refs["Image Orientation (Patient)"][0], refs["Pixel Spacing"][0]
    positions = np.asarray([_floats(p[2], 3) for p in planes])
    return orientation, spacing, positions


def _dedupe(group: DicomGroup, planes: list, warnings: list[str]) -> list:
    """Planes with the same instance (and frame) once; copies are named in a warning."""
    seen: dict[tuple[str, int], str] = {}
    kept, copies = [], []
    for plane in planes:
        key = (plane[5], plane[1])
        if key in seen:
            copies.append(f"{Path(plane[0]).name} (= {Path(seen[key]).name})")
            continue
        seen[key] = plane[0]
        kept.append(plane)
    if copies:
        warnings.append(f"{len(copies)} file(s) repeat an image of the series and were read once: "
                        f"{', '.join(copies[:3])}{' ...' if len(copies) > 3 else ''}")
    return kept


def _grid(group: DicomGroup, names: list[str], offsets: np.ndarray, warnings: list[str]) -> tuple[list[int], float]:
    """Volume index of each sorted slice and the slice step; refuses duplicates, wide gaps, irregular steps."""
    steps = np.diff(offsets)
    if not len(steps):
        return [0], 0.0
    tiny = np.flatnonzero(steps < 1e-3)
    if len(tiny):
        k = int(tiny[0])
        raise ImageReadError(group.folder, f"{group.label}: every position of a series must hold one image; "
                             f"{len(tiny)} position(s) hold more, e.g. {names[k]} and {names[k + 1]} at "
                             f"{offsets[k]:.2f} mm along the normal (echoes, phases or a repeated slice: split the "
                             "series first)")
    step = float(np.median(steps))
    counts = steps / step
    index = [0]
    for k, count in enumerate(counts):
        whole = round(float(count))
        if abs(count - whole) > _GRID_TOL or whole < 1:
            raise ImageReadError(group.folder, f"{group.label}: slice positions must lie on a regular grid; "
                                 f"{names[k]} -> {names[k + 1]} steps {steps[k]:.3f} mm, the median step is "
                                 f"{step:.3f} mm")
        if whole - 1 > MAX_FILLED:
            raise ImageReadError(group.folder, f"{group.label}: {whole - 1} slices are missing between "
                                 f"{names[k]} and {names[k + 1]} ({steps[k]:.2f} mm gap, step {step:.3f} mm); at "
                                 f"most {MAX_FILLED} are filled")
        if whole > 1:
            warnings.append(f"{whole - 1} slice(s) missing between {names[k]} and {names[k + 1]} ({offsets[k]:.2f} "
                            f"to {offsets[k + 1]:.2f} mm along the normal, step {step:.3f} mm): filled by "
                            "interpolation for the network; the label map there is a guess")
        index.append(index[-1] + whole)
    return index, step


def _shear(positions: np.ndarray, normal: np.ndarray) -> float:
    if len(positions) < 2:
        return 0.0
    steps = np.diff(positions, axis=0)
    along = steps @ normal
    sideways = np.linalg.norm(steps - np.outer(along, normal), axis=1)
    return float(np.degrees(np.arctan2(np.median(sideways), np.median(np.abs(along)))))


def assemble_series(group: DicomGroup) -> DicomSeries:
    """Sort and check the images of ``group`` (see the module docstring).

    Args:
        group: one image group of a folder scan.

    Raises:
        ImageReadError: the series breaks a rule; the message names a file and the values.
    """
    try:
        return _assemble(group)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:  # values of the wrong kind
        first = (str(exc).splitlines() or [""])[0][:160]
        raise ImageReadError(group.folder, f"{group.label}: its headers do not describe image planes a volume "
                             f"can be built from ({first})") from exc


def _assemble(group: DicomGroup) -> DicomSeries:
    _check_images(group)
    warnings: list[str] = []
    planes = _dedupe(group, _planes(group), warnings)
    orientation, spacing, positions = _plane_geometry(group, planes)
    row, col = orientation[:3], orientation[3:]
    normal = np.cross(row, col)
    if abs(np.linalg.norm(normal) - 1) > 1e-2 or abs(float(row @ col)) > 1e-2:
        raise ImageReadError(planes[0][0], f"Image Orientation (Patient) must hold two perpendicular unit vectors, "
                             f"got {_show(orientation)}")
    order = np.argsort(positions @ normal, kind="stable")
    planes, positions = [planes[k] for k in order], positions[order]
    names = [Path(p[0]).name + (f" frame {p[1]}" if p[1] else "") for p in planes]
    index, step = _grid(group, names, positions @ normal, warnings)
    shear = _shear(positions, normal)
    if shear > _SHEAR_TOL_DEG:
        warnings.append(f"the slices step {shear:.1f} degrees off their normal (gantry tilt): stacked along the "
                        "normal for the network; a DICOM SEG keeps each slice's position, a NIfTI grid cannot")
    else:
        shear = 0.0
    slices = [SliceRef(p[0], i, tuple(float(v) for v in pos), p[1]) for p, i, pos in zip(planes, index, positions)]
    first = slices[0].position
    if len(slices) == 1:
        if not np.allclose(np.abs(normal), [0, 0, 1], atol=1e-6):  # a 2D grid has no room for the tilt
            raise ImageReadError(slices[0].path, "a single DICOM image is read as a 2D image and must be axial; "
                                 f"this one's orientation is {_show(orientation)}")
        direction = np.stack([row[:2], col[:2]], axis=1)
        geometry = Geometry((int(group.datasets[0].Columns), int(group.datasets[0].Rows)),
                            (float(spacing[1]), float(spacing[0])), first[:2], tuple(direction.ravel().tolist()))
    else:
        direction = np.stack([row, col, normal], axis=1)
        geometry = Geometry((int(group.datasets[0].Columns), int(group.datasets[0].Rows), index[-1] + 1),
                            (float(spacing[1]), float(spacing[0]), step), first, tuple(direction.ravel().tolist()))
    files = list(dict.fromkeys(s.path for s in slices))
    by_file = {ds.filename: ds for ds in group.datasets}
    return DicomSeries(group.folder, group.key, [by_file[f] for f in files], slices, geometry, warnings, shear)


def find_series(folder: str | os.PathLike, key: str | None = None) -> DicomSeries:
    """The checked series ``key`` of ``folder`` (its only one for None), headers only: no pixel is decoded.

    Raises:
        ImageReadError: as :meth:`~pipeline.io.dicom_scan.FolderScan.group` and :func:`assemble_series`.
    """
    from pipeline.io.dicom_scan import scan_dicom_folder

    return assemble_series(scan_dicom_folder(folder).group(key))


def _decode(path: str, frames: int) -> np.ndarray:
    """The file's pixels as ``(frames, rows, columns)`` (rescaled as GDCM does), or ImageReadError naming it."""
    import SimpleITK as sitk

    from pipeline.io.reader import short_itk_message

    try:
        image = sitk.ReadImage(path)
    except RuntimeError as exc:
        raise ImageReadError(path, f"its pixel data cannot be decoded: {short_itk_message(exc)}") from exc
    array = sitk.GetArrayFromImage(image)
    array = array.reshape((-1, *array.shape[-2:])) if array.ndim >= 2 else array
    if array.shape[0] != frames:
        raise ImageReadError(path, f"its pixel data holds {array.shape[0]} frame(s), its header declares {frames}")
    return array


def _read_at_once(series: DicomSeries, rows: int, cols: int) -> np.ndarray | None:
    """A gapless, evenly spaced series of single-frame files in one ImageSeriesReader call, in this module's order
    (faster than file by file for uncompressed series: benchmarks/dicom_read.py); None where that does not apply
    or fails, so that the file-by-file path names the file at fault. ITK's own geometry is not used."""
    import SimpleITK as sitk

    if series.enhanced or len(series.slices) < 2 or len(series.slices) != series.geometry.shape[-1]:
        return None
    steps = np.linalg.norm(np.diff([s.position for s in series.slices], axis=0), axis=1)
    if np.ptp(steps) > 1e-4 * float(np.median(steps)):  # ITK would warn on stderr about its uneven grid
        return None
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([s.path for s in series.slices])
    try:
        array = sitk.GetArrayFromImage(reader.Execute())
    except RuntimeError:
        return None
    if array.shape != (len(series.slices), rows, cols):
        return None
    return np.ascontiguousarray(array.transpose(2, 1, 0))


def read_series(series: DicomSeries) -> np.ndarray:
    """The voxels of ``series`` in index order ``(x, y, z)`` (``(x, y)`` for one image), filled slices
    interpolated from their neighbours.

    Raises:
        ImageReadError: a file that cannot be decoded, or decodes to another size than its header says.
    """
    rows, cols = int(series.datasets[0].Rows), int(series.datasets[0].Columns)
    whole = _read_at_once(series, rows, cols)
    if whole is not None:
        return whole
    planes: dict[int, np.ndarray] = {}
    for ds in series.datasets:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        pixels = _decode(ds.filename, frames)
        if pixels.shape[1:] != (rows, cols):
            raise ImageReadError(ds.filename, f"its pixels are {pixels.shape[1]}x{pixels.shape[2]}, its header "
                                 f"declares {rows}x{cols}")
        for ref in (s for s in series.slices if s.path == ds.filename):
            planes[ref.index] = pixels[ref.frame - 1 if ref.frame else 0]
    dtype = np.result_type(*planes.values())
    if len(planes) == 1 and series.geometry.ndim == 2:
        return next(iter(planes.values())).T.copy()
    depth = series.geometry.shape[2]
    if len(planes) < depth:
        dtype = np.result_type(dtype, np.float32)
    volume = np.empty((depth, rows, cols), dtype=dtype)
    known = sorted(planes)
    for k in known:
        volume[k] = planes[k]
    for k in set(range(depth)) - set(known):  # a gap: linear interpolation between its two neighbours
        below, above = max(i for i in known if i < k), min(i for i in known if i > k)
        weight = (k - below) / (above - below)
        volume[k] = (1 - weight) * planes[below] + weight * planes[above]
    return np.ascontiguousarray(volume.transpose(2, 1, 0))
