"""Read medical images with their full geometry: NIfTI, NRRD, MHA/MHD files and DICOM series folders.

SimpleITK does the reading, except where a format's own definition of its grid and ITK part ways: a NIfTI file's
grid follows the NIfTI rule as nibabel, FSL and MONAI's NibabelReader apply it (the sform where sform_code > 0,
else the qform), its header is checked for what ITK passes over (a zero voxel size, a vox_offset inside the
header), and NIfTI-2 files are read with nibabel (:mod:`pipeline.io.nifti_header`). ITK's errors come back as one
line naming what is wrong (:mod:`pipeline.io.itk_messages`).

A DICOM folder's headers are sorted and checked with pydicom
(:mod:`pipeline.io.dicom_scan`, :mod:`pipeline.io.dicom_series`: series by UID, slices by position, gaps and
duplicates found, never an invented grid) and its pixels decoded by GDCM (JPEG 2000 included). Arrays come back in index order
(x, y[, z]), the order MONAI and nibabel use, with a :class:`~pipeline.io.geometry.Geometry` that a writer
can put back exactly. Bundles read through MONAI's ``LoadImaged(reader="ITKReader")`` instead; tests check
that both agree on the geometry, which they do wherever a NIfTI file's sform and qform agree (ITKReader takes
the qform, MONAI's NibabelReader the sform, as this reader does).

Multi-channel cases come two ways, both returned channel-last ``(x, y, z, c)`` on one 3D grid: a 4D file whose
fourth axis holds the channels (the MSD layout of Task01 brain tumour and Task05 prostate), or one file per
channel (nnU-Net's ``CASE_0000``, ``CASE_0001``...; a CSV's ``image_0``, ``image_1``), which
:func:`read_case` stacks after checking that they share one grid.

Example:
    >>> vol = read_image("ct.nii.gz")                         # doctest: +SKIP
    >>> vol.array.shape, vol.geometry.orientation             # doctest: +SKIP
    ((122, 101, 112), 'RAS')
    >>> read_image("series_folder/").geometry.spacing         # doctest: +SKIP
    (0.9765625, 0.9765625, 2.0)
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pipeline.errors import ImageReadError
from pipeline.io.dicom_pixels import read_series
from pipeline.io.dicom_scan import scan_dicom_folder
from pipeline.io.dicom_series import DicomSeries, find_series
from pipeline.io.geometry import Geometry
from pipeline.io.integrity import check_complete, check_fits
from pipeline.io.itk_messages import (
    check_data_file,
    explain_itk_failure,
    short_itk_message,  # noqa: F401 - pipeline.io.dicom_pixels imports it from here
)
from pipeline.io.nifti_header import NiftiHeader, read_nifti_header

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageHeader",
    "Volume",
    "image_suffix",
    "is_dicom_series",
    "is_image_file",
    "read_case",
    "read_dicom",
    "read_header",
    "read_image",
]

logger = logging.getLogger(__name__)

#: File endings read as single image files (longest first, so ``.nii.gz`` wins over ``.gz``).
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_NIFTI = (".nii.gz", ".nii")


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says, without its voxels.

    Args:
        path: the file or DICOM folder.
        geometry: its grid.
        pixel_type: SimpleITK's pixel type name, e.g. ``"16-bit signed integer"``.
        components: values per voxel: vector components, or the channels of a 4D file (1 for scalar images).
        reader: the library that reads its voxels: ``"itk"``, or ``"nibabel"`` (NIfTI-2, which ITK cannot read).
            Defaults to ``"itk"``.
    """

    path: str
    geometry: Geometry
    pixel_type: str
    components: int = 1
    reader: str = "itk"

    @property
    def nbytes(self) -> int:
        """Bytes the voxels take in memory as stored (8 per value where the type names no bit width)."""
        bits = re.search(r"(\d+)-bit", self.pixel_type)
        per_value = int(bits[1]) // 8 if bits else 8
        return int(np.prod(self.geometry.shape, dtype=np.int64)) * self.components * per_value


@dataclass
class Volume:
    """An image's voxels in index order (x, y[, z]) and its grid.

    Args:
        array: the voxels, shape ``geometry.shape``, plus a trailing channel axis for multi-channel cases (4D
            files, vector images, stacked channel files).
        geometry: the grid.
        path: where it was read from (the first file of a multi-file case).
        dicom: for a DICOM series, the series as read (its slices and source headers, for a DICOM SEG, and its
            warnings). Defaults to None.
    """

    array: np.ndarray
    geometry: Geometry
    path: str = ""
    dicom: DicomSeries | None = None

    @property
    def channels(self) -> int:
        """Number of channels (1 for a scalar image)."""
        return 1 if self.array.ndim == self.geometry.ndim else int(self.array.shape[-1])


def image_suffix(path: str | os.PathLike) -> str:
    """The supported image ending of ``path`` (``".nii.gz"``, ``".mha"``, ...), or ``""``."""
    name = str(path).lower()
    return next((s for s in IMAGE_SUFFIXES if name.endswith(s)), "")


def is_image_file(path: str | os.PathLike) -> bool:
    """True for an existing file with a supported image ending."""
    return Path(path).is_file() and bool(image_suffix(path))


def is_dicom_series(path: str | os.PathLike) -> bool:
    """True for a folder that directly holds the images of at least one DICOM series."""
    folder = Path(path)
    return folder.is_dir() and bool(scan_dicom_folder(folder).groups)


def read_dicom(folder: str | os.PathLike, key: str | None = None, series: DicomSeries | None = None) -> Volume:
    """Read one DICOM image series of a folder, its grid checked (:mod:`pipeline.io.dicom_series`).

    Args:
        folder: the folder.
        key: which series (a :class:`~pipeline.io.dicom_scan.DicomGroup` key); None for the folder's only one.
        series: the series already found (:func:`~pipeline.io.dicom_series.find_series`): its headers are not
            read again. Defaults to None.

    Returns:
        A :class:`Volume` whose ``dicom`` holds the series (slices, source headers, warnings).

    Raises:
        ImageReadError: no such series, several without a key, or a series that breaks a rule (one line).
    """
    series = series if series is not None else find_series(folder, key)
    array = read_series(series)
    logger.debug("read %s: %s %s", folder, array.dtype, series.geometry.describe())
    return Volume(array=array, geometry=series.geometry, path=str(folder), dicom=series)


def _pixel_type(dtype: np.dtype) -> str:
    """SimpleITK's name of a numpy type (``"16-bit signed integer"``...)."""
    return sitk.GetPixelIDValueAsString(sitk.GetImageFromArray(np.zeros((1, 1), dtype)).GetPixelID())


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise ImageReadError(path, "no such file or folder")
    if path.is_file() and not image_suffix(path):
        raise ImageReadError(
            path, f"unsupported file ending; supported are {', '.join(IMAGE_SUFFIXES)} and DICOM series folders"
        )


def _check_dims(path: Path, image) -> None:
    dims = image.GetDimension()
    if dims not in (2, 3, 4):
        raise ImageReadError(path, f"expected a 2D or 3D image (or 3D with channels on a fourth axis), got {dims} "
                             f"dimensions (size {image.GetSize()})")


def _geometry(image) -> Geometry:
    """The spatial grid; a 4D image's fourth axis holds channels, so its grid is the first three axes."""
    if image.GetDimension() != 4:
        return Geometry.from_sitk(image)
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(4, 4)[:3, :3]
    return Geometry(tuple(int(s) for s in image.GetSize()[:3]), tuple(float(s) for s in image.GetSpacing()[:3]),
                    tuple(float(s) for s in image.GetOrigin()[:3]), tuple(direction.ravel().tolist()))


def _components(image) -> int:
    per_voxel = image.GetNumberOfComponentsPerPixel() if hasattr(image, "GetNumberOfComponentsPerPixel") \
        else image.GetNumberOfComponents()
    return int(per_voxel) * (int(image.GetSize()[3]) if image.GetDimension() == 4 else 1)


def _nifti2_header(path: Path, nifti: NiftiHeader) -> ImageHeader:
    """A NIfTI-2 file's header from nibabel (ITK has no NIfTI-2 reader): 2D, 3D, or 3D with channels on axis 4."""
    if len(nifti.shape) not in (2, 3, 4):
        raise ImageReadError(path, f"expected a 2D or 3D image (or 3D with channels on a fourth axis), got "
                             f"{len(nifti.shape)} dimensions (size {nifti.shape})")
    if nifti.dtype.kind not in "iuf":
        raise ImageReadError(path, f"NIfTI-2 voxels must be integers or floats to be read, got {nifti.dtype}")
    dtype = np.result_type(nifti.dtype, np.float32) if nifti.scaled else nifti.dtype  # nibabel's scaled type
    components = nifti.shape[3] if len(nifti.shape) == 4 else 1
    return ImageHeader(str(path), nifti.geometry(nifti.shape[:3]), _pixel_type(dtype), components, "nibabel")


def read_header(path: str | os.PathLike) -> ImageHeader:
    """Read only the header of an image file (a DICOM folder is read whole: its geometry needs every slice).

    A NIfTI file's grid follows nibabel's rule (:mod:`pipeline.io.nifti_header`): the sform where sform_code > 0,
    else the qform; its header is checked for what ITK passes over (a zero voxel size, a vox_offset inside the
    header). NIfTI-2 files are read with nibabel.

    Args:
        path: image file or DICOM series folder.

    Raises:
        ImageReadError: missing, unsupported, unreadable, not 2D/3D, a NIfTI header that breaks a rule, or a
            ``.mhd``/``.nhdr`` whose data file is missing (one line).

    Example:
        >>> read_header("ct.nii.gz").geometry.describe()        # doctest: +SKIP
        '122x101x112 @ (3, 3, 3) mm RAS'
    """
    p = Path(path)
    _check_readable(p)
    if p.is_dir():
        volume = read_dicom(p)
        return ImageHeader(str(p), volume.geometry, _pixel_type(volume.array.dtype))
    nifti = read_nifti_header(p) if image_suffix(p) in _NIFTI else None
    if nifti is not None and nifti.version == 2:
        return _nifti2_header(p, nifti)
    check_data_file(p)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ImageReadError(p, explain_itk_failure(p, exc)) from exc
    _check_dims(p, reader)
    geometry = _geometry(reader)
    if nifti is not None:  # ITK's NIfTI grid takes the qform and pixdim; the format's (nibabel's) rule differs
        geometry = nifti.geometry(geometry.shape)
    return ImageHeader(str(p), geometry, sitk.GetPixelIDValueAsString(reader.GetPixelID()), _components(reader))


def _read_sitk(path: Path) -> sitk.Image:
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ImageReadError(path, explain_itk_failure(path, exc)) from exc
    _check_dims(path, image)
    return image


def _read_nibabel(path: Path, header: ImageHeader, nifti2: bool) -> Volume | None:
    """NIfTI voxels through nibabel: every NIfTI-2 file (ITK has no NIfTI-2 reader), and floating-point NIfTI-1
    (ITK's NIfTI reader turns NaN into 0, which would hide corrupt images from the checks downstream). None for
    other NIfTI-1 files, and for NIfTI-1 files nibabel lays out otherwise than ITK (vector pixels)."""
    if not nifti2 and ("float" not in header.pixel_type or "vector" in header.pixel_type):
        return None
    import nibabel as nib

    try:
        array = np.asarray(nib.load(str(path)).dataobj)
    except Exception as exc:  # nibabel raises many types for damaged files
        raise ImageReadError(path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
    expected = header.geometry.shape + ((header.components,) if header.components > 1 else ())
    if array.ndim > len(expected) and all(s == 1 for s in array.shape[len(expected):]):
        array = array.reshape(array.shape[: len(expected)])
    if tuple(array.shape) != expected:
        if nifti2:
            raise ImageReadError(path, f"the voxel array's shape {array.shape} must match the header's {expected}")
        return None
    return Volume(array=array, geometry=header.geometry, path=str(path))


def read_image(path: str | os.PathLike, dtype: np.dtype | str | None = None) -> Volume:
    """Read an image file or DICOM series folder with its geometry.

    Args:
        path: ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd`` file, or a folder holding one
            DICOM series.
        dtype: cast the voxels to this dtype. Defaults to None (keep the stored type).

    Returns:
        A :class:`Volume`, array in index order (x, y[, z]), channels last for a 4D file.

    Raises:
        ImageReadError: missing, unsupported format, unreadable (the reader's message, on one line), truncated
            (data shorter than the header declares), too large for the memory available, several DICOM series in
            one folder, not 2D/3D (3D plus channels for a 4D file), a NIfTI header that breaks a rule of the
            format, or a ``.mhd``/``.nhdr`` whose data file is missing.

    Example:
        >>> vol = read_image("mr.nii.gz", dtype="float32")     # doctest: +SKIP
        >>> vol.geometry.nifti.sform_code                      # doctest: +SKIP
        1
    """
    p = Path(path)
    _check_readable(p)
    if p.is_dir():
        volume = read_dicom(p)
        return volume if dtype is None else Volume(volume.array.astype(dtype, copy=False), volume.geometry,
                                                   volume.path, volume.dicom)
    header = read_header(p)  # before any voxel: a header declaring a huge grid, data shorter than declared
    size = "x".join(map(str, header.geometry.shape))
    check_fits(header.nbytes, p, f"reading the image ({size}, {header.pixel_type})")
    check_complete(p)
    if image_suffix(p) in _NIFTI:
        by_nibabel = _read_nibabel(p, header, nifti2=header.reader == "nibabel")
        if by_nibabel is not None:
            return by_nibabel if dtype is None else Volume(by_nibabel.array.astype(dtype, copy=False),
                                                           by_nibabel.geometry, by_nibabel.path)
    image = _read_sitk(p)
    array = sitk.GetArrayFromImage(image)  # (z, y, x[, c]); a 4D file: (c, z, y, x[, components])
    if image.GetDimension() == 4:
        array = np.moveaxis(array, 0, -1)
        array = array.reshape(*array.shape[:3], -1)
        spatial = 3
    else:
        spatial = image.GetDimension()
    order = tuple(reversed(range(spatial))) + tuple(range(spatial, array.ndim))
    array = array.transpose(order)
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    geometry = header.geometry  # ITK's own for other formats; a NIfTI file's by its format's rule
    logger.debug("read %s: %s %s", p, array.dtype, geometry.describe())
    return Volume(array=array, geometry=geometry, path=str(p))


def read_case(paths: str | os.PathLike | Sequence[str | os.PathLike], dtype: np.dtype | str | None = None) -> Volume:
    """Read one case: an image (a 4D file gives its channels) or one file per channel, stacked channel-last.

    Args:
        paths: one image path, or the paths of the case's channels in order.
        dtype: cast the voxels to this dtype. Defaults to None (the stored types; channel files are stacked
            with numpy's common type).

    Returns:
        A :class:`Volume`: ``(x, y[, z])`` for a one-channel case, else ``(x, y[, z], c)``.

    Raises:
        ImageReadError: a channel that cannot be read, that has channels of its own, or that lies on another grid
            than the first (the difference is named).
    """
    if isinstance(paths, (str, os.PathLike)):
        return read_image(paths, dtype)
    files = [str(p) for p in paths]
    if not files:
        raise ImageReadError("(no files)", "a case must name at least one image")
    if len(files) == 1:
        return read_image(files[0], dtype)
    volumes = [read_image(f, dtype) for f in files]
    first = volumes[0]
    for index, vol in enumerate(volumes):
        if vol.channels != 1:
            raise ImageReadError(vol.path, f"channel {index} of a case must hold one channel, it has {vol.channels}")
        diffs = first.geometry.differences(vol.geometry)
        if diffs:
            raise ImageReadError(vol.path, f"all channels of a case must share one grid; channel {index} differs "
                                 f"from {Path(first.path).name}: {'; '.join(diffs)}")
    return Volume(np.stack([v.array for v in volumes], axis=-1), first.geometry, first.path)
