"""A DICOM image series as a volume on a grid that is checked, never invented.

:func:`assemble_series` turns the headers of one image group (:mod:`pipeline.io.dicom_scan`) into a
:class:`DicomSeries`: every image (or every frame of an enhanced multi-frame image) sorted by its position along
the slice normal, with the grid the positions prove. The rules, each refusal one line naming a file and a value:

- every image needs Rows/Columns, Pixel Spacing, Image Position and Orientation (Patient) (an enhanced image: in
  its functional groups); one grey value per pixel; all images the same size, orientation and pixel spacing;
  localizers filed under the series' UID are left out, with a warning;
- the same instance twice at one position (a copied file) is read once, with a warning; one instance UID at two
  positions, or two instances at one position (echoes, phases, a repeated slice), are refused: such a series
  must be repaired or split first;
- every slice within a tenth of the median step of its place on the regular grid (errors do not add up along the
  series); a gap of up to :data:`MAX_FILLED` missing slices is filled for the network by linear interpolation of
  its neighbours, with a warning naming it (the label map keeps the regular grid; a SEG has frames only for
  images that exist); a wider gap, or a slice off the grid, is refused;
- slices that step sideways by one common vector (a tilted gantry) are read stacked along the normal, with a
  warning; their SEG frames keep each image's own position, and :attr:`DicomSeries.shear_deg` tells writers
  that a volume grid cannot; a slice off that stack by more than half a pixel is refused.

:func:`pipeline.io.dicom_pixels.read_series` decodes the pixels.

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
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from pipeline.errors import ImageReadError
from pipeline.io.dicom_scan import DicomGroup
from pipeline.io.geometry import Geometry

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = ["MAX_FILLED", "DicomSeries", "SliceRef", "assemble_series", "find_series", "instance_uid"]

logger = logging.getLogger(__name__)

#: the most consecutive missing slices filled by interpolation; a wider gap refuses the series
MAX_FILLED = 2
_ANGLE_TOL = 1e-3  # direction cosines that differ by less are one orientation
_REL_TOL = 1e-3  # pixel spacings that differ by less (relative) are one spacing
_GRID_TOL = 0.1  # each slice may lie this fraction of a step off its grid position
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


class _Plane(NamedTuple):
    """One image plane as its header gives it (values unchecked)."""

    path: str
    frame: int  # 1-based frame of an enhanced image, 0 for a single-frame file
    position: object
    orientation: object
    spacing: object
    uid: str

    @property
    def name(self) -> str:
        return Path(self.path).name + (f" frame {self.frame}" if self.frame else "")


def _frame_items(ds: Dataset) -> list[tuple[int, object, object, object]]:
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


def _planes(group: DicomGroup) -> list[_Plane]:
    """Every image plane of the group: one per file, or one per frame of an enhanced image."""
    datasets = group.datasets
    multi = [ds for ds in datasets if int(ds.get("NumberOfFrames", 1) or 1) > 1
             or "PerFrameFunctionalGroupsSequence" in ds]
    if multi:
        ds = multi[0]
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if len(datasets) > 1:
            raise ImageReadError(group.folder, f"{group.label}: a multi-frame image ({Path(ds.filename).name}, "
                                 f"{frames} frames) must be the only image of its series, found {len(datasets)} "
                                 "files")
        if "PerFrameFunctionalGroupsSequence" not in ds:
            raise ImageReadError(ds.filename, f"a multi-frame image must give each frame's position (an enhanced "
                                 f"image's functional groups); this {frames}-frame {ds.get('Modality', '')} image "
                                 "has none: its frames are not a volume")
        uid = instance_uid(ds)
        return [_Plane(ds.filename, f, pos, ori, sp, uid) for f, pos, ori, sp in _frame_items(ds)]
    return [_Plane(ds.filename, 0, ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient"),
                   ds.get("PixelSpacing"), instance_uid(ds)) for ds in datasets]


def instance_uid(ds: Dataset) -> str:
    """The SOP Instance UID of a header (from the file meta where an anonymiser blanked it), or its file name.

    Args:
        ds: a pydicom header.
    """
    meta = getattr(ds, "file_meta", None)
    return str(ds.get("SOPInstanceUID", "") or (meta.get("MediaStorageSOPInstanceUID", "") if meta else "")
               or ds.filename)


def _without_localizers(group: DicomGroup, warnings: list[str]) -> DicomGroup:
    """The group less its LOCALIZER images (scouts filed under the series' UID), when it has other images."""
    def scout(ds: Dataset) -> bool:
        return "LOCALIZER" in [str(v).upper() for v in (ds.get("ImageType") or [])]

    scouts = [ds for ds in group.datasets if scout(ds)]
    if not scouts or len(scouts) == len(group.datasets):
        return group
    warnings.append(f"{len(scouts)} localizer image(s) filed under the series left out: "
                    f"{', '.join(Path(ds.filename).name for ds in scouts[:3])}{' ...' if len(scouts) > 3 else ''}")
    return DicomGroup(group.folder, group.key, [ds for ds in group.datasets if not scout(ds)])


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


def _plane_geometry(group: DicomGroup, planes: list[_Plane]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orientation (row, column cosines), pixel spacing (row, column) and positions, all checked."""
    refs: dict[str, tuple] = {}
    for plane in planes:
        for keyword, value, count in (("Image Orientation (Patient)", plane.orientation, 6),
                                      ("Pixel Spacing", plane.spacing, 2),
                                      ("Image Position (Patient)", plane.position, 3)):
            parsed = _floats(value, count) if value is not None else None
            if parsed is None or (keyword == "Pixel Spacing" and np.any(parsed <= 0)):
                got = "none" if value is None else f"'{value}'"
                raise ImageReadError(plane.path, f"every image of a series to segment needs a valid {keyword} (its "
                                     f"grid is unknown without it, and none is invented); {plane.name} has {got}")
            if keyword not in refs:
                refs[keyword] = (parsed, plane.name)
            elif keyword != "Image Position (Patient)":
                base, base_where = refs[keyword]
                close = np.allclose(parsed, base, atol=_ANGLE_TOL) if count == 6 else \
                    np.allclose(parsed, base, rtol=_REL_TOL, atol=0)
                if not close:
                    raise ImageReadError(group.folder, f"{group.label}: all images of a series must share one "
                                         f"{keyword}; {plane.name} has {_show(parsed)}, {base_where} {_show(base)}")
    orientation, spacing = refs["Image Orientation (Patient)"][0], refs["Pixel Spacing"][0]
    positions = np.asarray([_floats(p.position, 3) for p in planes])
    return orientation, spacing, positions


def _dedupe(group: DicomGroup, planes: list[_Plane], warnings: list[str]) -> list[_Plane]:
    """Planes that repeat an instance (same UID, frame and position: a copied file) once, named in a warning;
    one UID at two positions is refused (an anonymiser or an export broke the UIDs)."""
    seen: dict[tuple[str, int], _Plane] = {}
    kept, copies = [], []
    for plane in planes:
        key = (plane.uid, plane.frame)
        first = seen.get(key)
        if first is None:
            seen[key] = plane
            kept.append(plane)
            continue
        here, there = _floats(plane.position, 3), _floats(first.position, 3)
        if here is None or there is None or not np.allclose(here, there, atol=1e-3):
            raise ImageReadError(group.folder, f"{group.label}: every image needs its own SOP Instance UID; "
                                 f"{plane.name} and {first.name} share {plane.uid} at different positions")
        copies.append(f"{plane.name} (= {first.name})")
    if copies:
        warnings.append(f"{len(copies)} file(s) repeat an image of the series and were read once: "
                        f"{', '.join(copies[:3])}{' ...' if len(copies) > 3 else ''}")
    return kept


def _grid(group: DicomGroup, names: list[str], offsets: np.ndarray, warnings: list[str]) -> tuple[list[int], float]:
    """Volume index of each sorted slice and the slice step (the median step). Each slice must lie within
    :data:`_GRID_TOL` steps of its grid position (errors do not add up along the series); refuses two images at
    one position, gaps wider than :data:`MAX_FILLED` slices and slices off the grid."""
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
    index = np.concatenate([[0], np.cumsum(np.maximum(1, np.rint(steps / step)))]).astype(int)
    origin = float(np.median(offsets - index * step))
    error = offsets - (origin + index * step)
    worst = int(np.argmax(np.abs(error)))
    if abs(error[worst]) > _GRID_TOL * step:
        raise ImageReadError(group.folder, f"{group.label}: slice positions must lie on a regular grid; "
                             f"{names[worst]} lies {error[worst]:+.3f} mm off it (the median step is {step:.3f} mm)")
    for k in np.flatnonzero(np.diff(index) > 1):
        missing = int(index[k + 1] - index[k] - 1)
        if missing > MAX_FILLED:
            raise ImageReadError(group.folder, f"{group.label}: {missing} slices are missing between "
                                 f"{names[k]} and {names[k + 1]} ({steps[k]:.2f} mm gap, step {step:.3f} mm); at "
                                 f"most {MAX_FILLED} are filled")
        warnings.append(f"{missing} slice(s) missing between {names[k]} and {names[k + 1]} ({offsets[k]:.2f} "
                        f"to {offsets[k + 1]:.2f} mm along the normal, step {step:.3f} mm): filled by "
                        "interpolation for the network; the label map there is a guess")
    return index.tolist(), step


def _shear(group: DicomGroup, names: list[str], positions: np.ndarray, normal: np.ndarray, index: list[int],
           pixel: float) -> float:
    """The tilt (degrees) of a stack whose slices step sideways by one common vector per slice (a tilted gantry);
    a slice off that line by more than half a pixel is refused."""
    if len(positions) < 2:
        return 0.0
    along = positions @ normal
    sideways = positions - np.outer(along, normal)
    idx = np.asarray(index, dtype=float)
    per_slice = np.median(np.diff(sideways, axis=0) / np.diff(idx)[:, None], axis=0)
    start = np.median(sideways - np.outer(idx, per_slice), axis=0)
    off = np.linalg.norm(sideways - (start + np.outer(idx, per_slice)), axis=1)
    worst = int(np.argmax(off))
    if off[worst] > 0.5 * pixel:
        raise ImageReadError(group.folder, f"{group.label}: the slices must form one stack; {names[worst]} lies "
                             f"{off[worst]:.2f} mm sideways of the others")
    step = float(np.median(np.diff(along) / np.diff(idx)))
    return float(np.degrees(np.arctan2(np.linalg.norm(per_slice), step)))


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
    warnings: list[str] = []
    group = _without_localizers(group, warnings)
    _check_images(group)
    planes = _dedupe(group, _planes(group), warnings)
    orientation, spacing, positions = _plane_geometry(group, planes)
    row, col = orientation[:3], orientation[3:]
    normal = np.cross(row, col)
    if abs(np.linalg.norm(normal) - 1) > 1e-2 or abs(float(row @ col)) > 1e-2:
        raise ImageReadError(planes[0].path, f"Image Orientation (Patient) must hold two perpendicular unit vectors, "
                             f"got {_show(orientation)}")
    order = np.argsort(positions @ normal, kind="stable")
    planes, positions = [planes[k] for k in order], positions[order]
    names = [p.name for p in planes]
    index, step = _grid(group, names, positions @ normal, warnings)
    shear = _shear(group, names, positions, normal, index, float(min(spacing)))
    if shear > _SHEAR_TOL_DEG:
        warnings.append(f"the slices step {shear:.1f} degrees off their normal (gantry tilt): stacked along the "
                        "normal for the network; a DICOM SEG keeps each slice's position, a NIfTI grid cannot")
    else:
        shear = 0.0
    slices = [SliceRef(p.path, i, tuple(float(v) for v in pos), p.frame)
              for p, i, pos in zip(planes, index, positions)]
    geometry = _geometry(slices, group.datasets[0], orientation, spacing, step)
    files = list(dict.fromkeys(s.path for s in slices))
    by_file = {ds.filename: ds for ds in group.datasets}
    return DicomSeries(group.folder, group.key, [by_file[f] for f in files], slices, geometry, warnings, shear)


def _geometry(slices: list[SliceRef], first: Dataset, orientation: np.ndarray, spacing: np.ndarray,
              step: float) -> Geometry:
    """The grid: 3D from the first slice along (row, column, normal); 2D for one axial image."""
    row, col = orientation[:3], orientation[3:]
    normal = np.cross(row, col)
    size, pixel = (int(first.Columns), int(first.Rows)), (float(spacing[1]), float(spacing[0]))
    origin = slices[0].position
    if len(slices) == 1:
        if not np.allclose(np.abs(normal), [0, 0, 1], atol=1e-6):  # a 2D grid has no room for the tilt
            raise ImageReadError(slices[0].path, "a single DICOM image is read as a 2D image and must be axial; "
                                 f"this one's orientation is {_show(orientation)}")
        return Geometry(size, pixel, origin[:2], tuple(np.stack([row[:2], col[:2]], axis=1).ravel().tolist()))
    return Geometry((*size, slices[-1].index + 1), (*pixel, step), origin,
                    tuple(np.stack([row, col, normal], axis=1).ravel().tolist()))


def find_series(folder: str | os.PathLike, key: str | None = None) -> DicomSeries:
    """The checked series ``key`` of ``folder`` (its only one for None), headers only: no pixel is decoded.

    Args:
        folder: the folder.
        key: a :class:`~pipeline.io.dicom_scan.DicomGroup` key; None for the folder's only series.

    Raises:
        ImageReadError: as :meth:`~pipeline.io.dicom_scan.FolderScan.group` and :func:`assemble_series`.
    """
    from pipeline.io.dicom_scan import scan_dicom_folder

    return assemble_series(scan_dicom_folder(folder).group(key))
