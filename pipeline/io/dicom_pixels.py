"""The voxels of a checked DICOM series (:class:`~pipeline.io.dicom_series.DicomSeries`).

GDCM (through SimpleITK) decodes every transfer syntax it knows (JPEG, JPEG-LS, JPEG 2000, RLE, deflate) and
applies each file's rescale slope and intercept. A gapless, evenly spaced series of files that share one pixel
encoding is read in one call (in the series' own order; ITK's geometry is not used); anything else file by
file, so that a file that cannot be decoded is named and a slice with its own rescale keeps its values. A raw
data set without file meta, whose encoding GDCM cannot tell, is decoded by pydicom. Slices the series fills (a
gap) are interpolated linearly between their neighbours.

Example:
    >>> from pipeline.io.dicom_series import find_series
    >>> read_series(find_series("ct_series/")).shape                    # doctest: +SKIP
    (512, 512, 20)
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import ImageReadError
from pipeline.io.dicom_series import DicomSeries

__all__ = ["read_series"]

# what decides the pixel type GDCM decodes a file to
_ENCODING = ("RescaleSlope", "RescaleIntercept", "BitsAllocated", "BitsStored", "PixelRepresentation")


def _decode_with_pydicom(path: str) -> np.ndarray | None:
    """pydicom's decoding (uncompressed and the codecs it has), rescaled; None where it cannot either."""
    import pydicom
    from pydicom.pixels import apply_rescale

    try:
        ds = pydicom.dcmread(path, force=True)
        array = ds.pixel_array
        return apply_rescale(array, ds) if "RescaleSlope" in ds or "RescaleIntercept" in ds else array
    except Exception:  # noqa: BLE001 - any failure here leaves GDCM's reason as the one to report
        return None


def _decode(path: str, frames: int) -> np.ndarray:
    """The file's pixels as ``(frames, rows, columns)`` (rescaled as GDCM does), or ImageReadError naming it."""
    import SimpleITK as sitk

    from pipeline.io.reader import short_itk_message

    try:
        array = sitk.GetArrayFromImage(sitk.ReadImage(path))
    except RuntimeError as exc:
        array = _decode_with_pydicom(path)  # GDCM needs the file meta to tell a raw data set's encoding
        if array is None:
            raise ImageReadError(path, f"its pixel data cannot be decoded: {short_itk_message(exc)}") from exc
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
    # ITK gives the whole volume the first file's pixel type: only where every file decodes to the same type
    encodings = {tuple(str(ds.get(k, "")) for k in _ENCODING) for ds in series.datasets}
    if len(encodings) > 1:
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

    Args:
        series: a checked series (:func:`~pipeline.io.dicom_series.find_series`).

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
