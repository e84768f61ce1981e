"""Write images (label maps above all) on a given grid, atomically.

A label map is written on the grid of the image it was predicted from: same shape, spacing, origin and
direction, so that it overlays the input in any viewer; a NIfTI input's label map also carries the input's own
sform and qform (:mod:`pipeline.io.nifti_header`), so every tool places the two alike. The format follows the
output file's ending; DICOM input gets NIfTI output (:func:`label_suffix_for`). Every write goes to a temporary
file in the destination folder first and is renamed into place, so a killed job never leaves a half-written file
under the final name.

Example:
    >>> vol = read_image("mr_lps.nii.gz")                                   # doctest: +SKIP
    >>> write_image(labels, vol.geometry, "out/mr_lps_seg.nii.gz")          # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pipeline.errors import ImageWriteError
from pipeline.io.atomic import atomic_path, raise_if_disk_full
from pipeline.io.geometry import Geometry
from pipeline.io.integrity import check_complete
from pipeline.io.nifti_header import NiftiTransforms, nifti_image
from pipeline.io.reader import IMAGE_SUFFIXES, image_suffix

__all__ = ["NOTES_MAX", "PROVENANCE_PREFIX", "label_suffix_for", "read_notes", "write_image"]

logger = logging.getLogger(__name__)

# Endings ITK compresses with useCompression (NIfTI is compressed by its .gz ending alone).
_COMPRESSIBLE = (".nrrd", ".mha", ".nii.gz")
#: start of the provenance line in every label map the batch job writes (NIfTI descrip, a SEG's Content Description)
PROVENANCE_PREFIX = "pipeline segment "
# ITK's key for a free-text header line: NIfTI descrip, a NRRD/MetaImage field
_NOTES = "ITK_FileNotes"
#: bytes of ``notes`` kept: NIfTI's descrip holds 80 with its terminator, and ITK refuses a longer line outright
NOTES_MAX = 79


def label_suffix_for(input_path: str | os.PathLike) -> str:
    """File ending for the label map of an input: the input's own ending, ``.nii.gz`` for DICOM folders.

    Args:
        input_path: an image file or a DICOM series folder.

    Example:
        >>> label_suffix_for("scan.nrrd"), label_suffix_for("series_dir/")
        ('.nrrd', '.nii.gz')
    """
    suffix = image_suffix(input_path)
    # .mhd/.nhdr are header + detached data pairs: write the single-file variants instead.
    return {"": ".nii.gz", ".mhd": ".mha", ".nhdr": ".nrrd"}.get(suffix, suffix)


def _same(read: np.ndarray, written: np.ndarray) -> bool:
    if read.dtype.kind != "f":
        return np.array_equal(read, written)
    # ITK's NIfTI reader gives NaN back as 0; the writer stored it as NaN
    return np.array_equal(np.nan_to_num(read, nan=0.0), np.nan_to_num(written, nan=0.0))


def _verify(tmp: Path, dest: Path, read_back: Callable[[], bool]) -> None:
    """Read the written file back (ITK reports a short write on stderr only, and zero-fills a short read).

    Args:
        tmp: the file written.
        dest: its final name (named in the error).
        read_back: reads ``tmp`` and says whether it holds what was meant to be written.
    """
    try:
        check_complete(tmp)
        same = read_back()
    except Exception as exc:  # noqa: BLE001 - ITK and nibabel raise many types for damaged files
        same, why = False, str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else type(exc).__name__
    else:
        why = "its voxels or placement read back different"
    if not same:
        raise_if_disk_full(ImageWriteError(dest, why), dest)
        raise ImageWriteError(dest, f"the file written is incomplete or damaged: {why}")


def _write_itk(arr: np.ndarray, geometry: Geometry, tmp: Path, dest: Path, compress: bool,
               notes: str | None) -> None:
    spatial = geometry.ndim
    order = tuple(reversed(range(spatial))) + tuple(range(spatial, arr.ndim))
    image = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(order)), isVector=arr.ndim > spatial)
    geometry.apply_to(image)
    if notes is not None:
        image.SetMetaData(_NOTES, notes)
    sitk.WriteImage(image, str(tmp), useCompression=compress and image_suffix(dest) in _COMPRESSIBLE)

    def read_back() -> bool:
        back = sitk.ReadImage(str(tmp))  # held here: an array view lives only as long as its image
        return _same(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image))

    _verify(tmp, dest, read_back)


def _write_nibabel(arr: np.ndarray, transforms: NiftiTransforms, tmp: Path, dest: Path, notes: str | None) -> None:
    """A NIfTI label map that carries the source's sform and qform as they are (ITK would write one of them)."""
    import nibabel as nib
    from nibabel.spatialimages import HeaderDataError

    try:
        nib.save(nifti_image(arr, transforms, notes), str(tmp))
    except HeaderDataError as exc:  # a voxel type NIfTI has no code for (float16...)
        raise ImageWriteError(dest, f"NIfTI cannot store these voxels: {exc}") from exc

    def read_back() -> bool:
        back = nib.load(str(tmp))
        data = np.asarray(back.dataobj)
        placed = NiftiTransforms.from_header(back.header).affine
        return data.shape == arr.shape and np.array_equal(data, arr, equal_nan=arr.dtype.kind == "f") \
            and np.allclose(placed, transforms.affine, atol=1e-4)

    _verify(tmp, dest, read_back)


def _source_transforms(arr: np.ndarray, geometry: Geometry, suffix: str) -> NiftiTransforms | None:
    """The NIfTI placement a label map takes over from its source: for scalar NIfTI output on a grid read from a
    NIfTI file, where the fields still describe that grid (a grid changed since is written from its geometry)."""
    transforms = geometry.nifti
    if transforms is None or suffix not in (".nii.gz", ".nii") or arr.ndim != geometry.ndim:
        return None
    try:
        if Geometry.from_affine(geometry.shape, transforms.affine).same_grid(geometry):
            return transforms
    except ValueError:
        pass
    logger.debug("the NIfTI fields recorded with the grid no longer describe it; writing it from its geometry")
    return None


def write_image(array: np.ndarray, geometry: Geometry, path: str | os.PathLike,
                dtype: np.dtype | str | None = None, compress: bool = True, notes: str | None = None) -> Path:
    """Write ``array`` (index order x, y[, z]) on ``geometry``'s grid to ``path``, atomically; the file is read
    back and synced to the disk before it gets its final name.

    A NIfTI label map on the grid of a NIfTI input (``geometry.nifti`` set, as :func:`read_image` sets it) is written
    with nibabel and carries the input's own sform and qform, codes included, so that nibabel, FSL and ITK each
    place it where they place the input, even where its sform and qform disagree. Everything else is written by
    ITK from the geometry.

    Args:
        array: voxels, shape ``geometry.shape``.
        geometry: the grid to write on (usually the input image's).
        path: destination; its ending picks the format (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``).
        dtype: cast to this dtype first. Defaults to None (keep ``array``'s).
        compress: compress where the format allows (NIfTI: by the ``.gz`` ending alone). Defaults to True.
        notes: a line stored in the header (NIfTI ``descrip``, NRRD/MHA ``ITK_FileNotes``), cut to
            :data:`NOTES_MAX` bytes; :func:`read_notes` gives it back. Defaults to None.

    Returns:
        The path written.

    Raises:
        DiskFullError: the file system is full (no file is left under either name).
        ImageWriteError: unsupported ending, array shape differs from the grid, or the write fails.

    Example:
        >>> vol = read_image("mr.nii.gz")                                          # doctest: +SKIP
        >>> write_image(labels, vol.geometry, "mr_seg.nii.gz", notes="pipeline segment")   # doctest: +SKIP
        PosixPath('mr_seg.nii.gz')
    """
    dest = Path(path)
    suffix = image_suffix(dest)
    if suffix not in (".nii.gz", ".nii", ".nrrd", ".mha"):
        raise ImageWriteError(dest, f"output ending must be one of .nii.gz, .nii, .nrrd, .mha, got '{dest.name}'"
                              f" (readable endings: {', '.join(IMAGE_SUFFIXES)})")
    arr = np.asarray(array)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    if tuple(arr.shape[: geometry.ndim]) != geometry.shape:
        raise ImageWriteError(dest, f"array shape {arr.shape} must equal the grid shape {geometry.shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    transforms = _source_transforms(arr, geometry, suffix)
    notes = None if notes is None else notes.encode()[:NOTES_MAX].decode(errors="ignore")
    try:
        with atomic_path(dest, suffix) as tmp:
            if transforms is not None:
                _write_nibabel(arr, transforms, tmp, dest, notes)
            else:
                _write_itk(arr, geometry, tmp, dest, compress, notes)
    except ImageWriteError:
        raise
    except TypeError as exc:  # SimpleITK has no pixel type for it (float16, complex...)
        raise ImageWriteError(dest, f"{suffix} cannot store {arr.dtype} voxels here: {exc}") from exc
    except (RuntimeError, OSError) as exc:
        raise_if_disk_full(exc, dest)  # ITK's NRRD/MHA writers fail with their own words for it
        raise ImageWriteError(dest, str(exc).strip().splitlines()[-1]) from exc
    logger.debug("wrote %s (%s, %s)", dest, arr.dtype, geometry.describe())
    return dest


def read_notes(path: str | os.PathLike) -> str | None:
    """The ``notes`` line :func:`write_image` stored in a file's header (None when there is none, or the file
    cannot be read)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    return reader.GetMetaData(_NOTES) if reader.HasMetaDataKey(_NOTES) else None
