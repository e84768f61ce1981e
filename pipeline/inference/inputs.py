"""What the batch job knows about an input before it reads it: its fingerprint, whether it is one of the job's own
outputs, and whether it fits in memory with the other cases in flight.

- :func:`input_fingerprint`: 12 hex digits over the input's content (a whole file up to
  :data:`WHOLE_FILE_LIMIT`, else its size and its first and last MiB; a ``.mhd``/``.nhdr`` header with its data
  file; a DICOM series: its instance UIDs and file sizes). A change inside a larger file that keeps its size and
  both ends, or a DICOM slice rewritten under the same UID and size, goes unseen. The provenance line of each output ends with it, so a re-run redoes a case whose input was replaced.
- :func:`is_own_output`: an image file whose header carries this job's provenance line (any output format, any
  earlier output folder) is never an input.
- :func:`check_input_memory`: the voxels as stored plus their float32 working copy, times the cases read at once,
  against the memory this process may still use (the container's cgroup limit included), before any voxel is read.
- :func:`check_image`: once read, refuse what the model cannot segment; warn about what it should not (a constant
  image, one thinner than :data:`MIN_VOXELS`, a series of another modality than the model's).

Example:
    >>> input_fingerprint(InputCase("ct_000", ("scans/ct_000.nii.gz",)))        # doctest: +SKIP
    '3fa2c19b0d4e'
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from pipeline.data.discover import InputCase
from pipeline.deploy.card import ModelCard
from pipeline.errors import ImageReadError
from pipeline.io import Volume, read_header, read_notes
from pipeline.io.dicom_series import DicomSeries, find_series, instance_uid
from pipeline.io.integrity import check_fits
from pipeline.io.itk_messages import data_file
from pipeline.io.writer import PROVENANCE_PREFIX

__all__ = ["MIN_VOXELS", "WHOLE_FILE_LIMIT", "check_image", "check_input_memory", "input_fingerprint",
           "is_own_output"]

logger = logging.getLogger(__name__)

#: files up to this size are hashed whole; larger ones by size, first and last MiB
WHOLE_FILE_LIMIT = 64 << 20
_EDGE = 1 << 20
#: an image with fewer voxels along any axis gets a warning: too little for the network to see anatomy
MIN_VOXELS = 4
# the modality names model cards use -> DICOM's Modality codes
_MODALITIES = {"MRI": "MR", "MR": "MR", "CT": "CT", "PET": "PT", "PT": "PT", "US": "US"}


def _file_digest(path: Path, digest: hashlib._Hash) -> None:
    size = path.stat().st_size
    digest.update(f"{path.name}:{size}".encode())
    with open(path, "rb") as handle:
        if size <= WHOLE_FILE_LIMIT:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
            return
        digest.update(handle.read(_EDGE))
        handle.seek(size - _EDGE)
        digest.update(handle.read(_EDGE))


def input_fingerprint(case: InputCase, series: DicomSeries | None = None) -> str:
    """12 hex digits that change when the case's input content changes (see the module docstring).

    Args:
        case: the case.
        series: its DICOM series where already found (its headers are not read again). Defaults to None.

    Raises:
        OSError: a file cannot be read; ImageReadError: a DICOM series that cannot be assembled.
    """
    digest = hashlib.sha256()
    for path in case.paths:
        p = Path(path)
        if p.is_dir():
            series = series if series is not None else find_series(p, case.series or None)
            for ds in series.datasets:
                digest.update(f"{instance_uid(ds)}:{os.path.getsize(ds.filename)}".encode())
        else:
            _file_digest(p, digest)
            detached = data_file(p)  # .mhd/.nhdr: the voxels live in another file
            if detached is not None and detached.is_file():
                _file_digest(detached, digest)
    return digest.hexdigest()[:12]


def is_own_output(path: str | os.PathLike) -> bool:
    """True for an image file that carries this job's provenance line in its header (a label map it wrote).

    Args:
        path: an image file.
    """
    notes = read_notes(path)
    return bool(notes) and notes.startswith(PROVENANCE_PREFIX)


def check_input_memory(case: InputCase, at_once: int) -> None:
    """Refuse (before reading) a case whose voxels, stored and as float32, times ``at_once`` cases in flight,
    exceed the share of memory one step may take (:func:`pipeline.io.integrity.check_fits`).

    Args:
        case: the case; image files are measured from their headers (DICOM series are measured when read).
        at_once: cases read and converted at the same time (the job's readers).

    Raises:
        ImageReadError: one line naming the file, the memory needed and the memory available.
    """
    for path in case.paths:
        if Path(path).is_dir():
            continue
        header = read_header(path)
        voxels = float(np.prod(header.geometry.shape, dtype=np.float64)) * header.components
        need = (header.nbytes + voxels * 4) * max(1, at_once)
        size = "x".join(map(str, header.geometry.shape))
        check_fits(need, path, f"reading {size} voxels ({header.pixel_type}) and their float32 copy, "
                   f"{at_once} case(s) at once,")


def check_image(volume: Volume, path: str, card: ModelCard) -> list[str]:
    """Raise for an image the model cannot segment; return warnings for one it can but should not (constant,
    thinner than :data:`MIN_VOXELS` along an axis, another modality than the model was trained on).

    Args:
        volume: the image as read.
        path: its source, for messages.
        card: the model's card.

    Raises:
        ImageReadError: empty, another dimensionality or channel count than the model's, NaN or infinite voxels.
    """
    want = card.image_dims
    if volume.array.size == 0:
        raise ImageReadError(path, "the image is empty (no voxels)")
    if volume.geometry.ndim != want:
        raise ImageReadError(path, f"wrong dimensionality: the model segments {want}D images, got a "
                             f"{volume.geometry.ndim}D image of size {volume.geometry.shape}")
    if volume.channels != card.network.in_channels:
        raise ImageReadError(path, f"the model needs {card.network.in_channels} channel(s), the image has "
                             f"{volume.channels}")
    if np.issubdtype(volume.array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(volume.array)))
        if bad:
            raise ImageReadError(path, f"the image holds {bad} NaN or infinite voxel(s)")
    warnings = []
    low, high = np.min(volume.array), np.max(volume.array)
    if low == high:
        warnings.append(f"the image is constant (every voxel {low:g}): its label map says nothing about anatomy")
    thin = [(axis, n) for axis, n in enumerate(volume.geometry.shape) if n < MIN_VOXELS]
    if thin:
        axis, n = thin[0]
        warnings.append(f"the image is only {n} voxel(s) along axis {axis} (shape {volume.geometry.shape}): too "
                        f"little for a {want}D model to see anatomy; its labels are guesses")
    modality = _modality(volume)
    if modality and card.modality and modality != _MODALITIES.get(card.modality.upper(), card.modality.upper()):
        warnings.append(f"the model was trained on {card.modality} images, this series is {modality}: its labels "
                        "may mean nothing")
    return warnings


def _modality(volume: Volume) -> str:
    """The DICOM Modality of a series (other formats do not record one)."""
    if volume.dicom is None or not volume.dicom.datasets:
        return ""
    return str(volume.dicom.datasets[0].get("Modality", "") or "").upper()
