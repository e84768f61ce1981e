"""NIfTI headers read as the format defines them, before ITK reads the voxels.

ITK's NIfTI reader departs from the NIfTI standard and from nibabel, FSL and MONAI's NibabelReader in ways that
move or stretch an image without a word (measured with SimpleITK 2.5):

- a spatial pixdim of 0 is read as 1 mm;
- a single-file ``.nii`` whose vox_offset is below 352 is read from the wrong place (nibabel refuses the header);
- where the sform and the qform disagree ITK takes the qform; nibabel takes the sform when sform_code > 0, else
  the qform when qform_code > 0, and so do FSL and MONAI's NibabelReader;
- a negative pixdim becomes a negative ITK spacing (the axis flipped); nibabel uses its size, and the qform's
  handedness comes from pixdim[0] (qfac) alone;
- NIfTI-2 files are not read at all.

:func:`read_nifti_header` refuses the first two in one line. :meth:`NiftiHeader.geometry` gives the grid by nibabel's
rule, with a record of the file's placement fields (:class:`NiftiTransforms`) that the writer copies into a label
map, so that every tool places the label map where it places the image. A file with sform_code and qform_code both
0 says nothing of its orientation; it is read as ITK reads it (axes along L, P, S from 0 mm), with a warning
(nibabel instead centres the grid and flips its first axis).

Example:
    >>> header = read_nifti_header("ct.nii.gz")              # doctest: +SKIP
    >>> header.geometry().orientation, header.transforms.sform_code   # doctest: +SKIP
    ('RAS', 1)
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.quaternions import fillpositive, quat2mat

from pipeline.errors import ImageReadError
from pipeline.io.geometry import Geometry

__all__ = ["NiftiHeader", "NiftiTransforms", "nifti_image", "read_nifti_header"]

logger = logging.getLogger(__name__)

_QUATERN = ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z")
_NIFTI_UNITS_MM = 2


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ")"


@dataclass(frozen=True)
class NiftiTransforms:
    """The placement fields of a NIfTI header, as nibabel reads them (negative voxel sizes made positive, a qfac
    other than -1 or 1 taken as 1).

    Args:
        sform_code: 0 (no sform), 1 scanner, 2 aligned, 3 Talairach, 4 MNI, 5 template.
        srow: the sform's three rows, 12 values (RAS mm).
        qform_code: as ``sform_code``, for the qform.
        quatern: quatern_b, quatern_c, quatern_d, qoffset_x, qoffset_y, qoffset_z.
        pixdim: pixdim[0:4]: qfac (the qform's handedness) and the three voxel sizes.
        units: the spatial units code of xyzt_units. Defaults to 2 (mm).
    """

    sform_code: int
    srow: tuple[float, ...]
    qform_code: int
    quatern: tuple[float, ...]
    pixdim: tuple[float, ...]
    units: int = _NIFTI_UNITS_MM

    @classmethod
    def from_header(cls, header: nib.Nifti1Header) -> NiftiTransforms:
        """The fields of a nibabel NIfTI-1 or NIfTI-2 header (read with or without nibabel's fixes)."""
        pixdim = [float(v) for v in header["pixdim"][:4]]
        qfac = pixdim[0] if pixdim[0] in (-1.0, 1.0) else 1.0  # the standard: any other value counts as 1
        rows = (header["srow_x"], header["srow_y"], header["srow_z"])
        return cls(int(header["sform_code"]), tuple(float(v) for row in rows for v in row),
                   int(header["qform_code"]), tuple(float(header[k]) for k in _QUATERN),
                   (qfac, *(abs(v) for v in pixdim[1:])), int(header["xyzt_units"]) & 0x07)

    def to_header(self, header: nib.Nifti1Header) -> None:
        """Write these fields into a nibabel header."""
        header["sform_code"], header["qform_code"] = self.sform_code, self.qform_code
        header["srow_x"], header["srow_y"], header["srow_z"] = self.srow[:4], self.srow[4:8], self.srow[8:]
        for key, value in zip(_QUATERN, self.quatern):
            header[key] = value
        header["pixdim"][:4] = self.pixdim
        header["xyzt_units"] = (int(header["xyzt_units"]) & ~0x07) | self.units

    @property
    def source(self) -> str:
        """Which field places the image: ``"sform"``, ``"qform"``, or ``"pixdim"`` (both codes 0)."""
        return "sform" if self.sform_code > 0 else "qform" if self.qform_code > 0 else "pixdim"

    @property
    def sform(self) -> np.ndarray:
        """The sform as a 4x4 RAS affine."""
        out = np.eye(4)
        out[:3] = np.asarray(self.srow, dtype=float).reshape(3, 4)
        return out

    @property
    def qform(self) -> np.ndarray:
        """The qform as a 4x4 RAS affine (nibabel's arithmetic).

        Raises:
            ValueError: the quaternion is not a rotation (b² + c² + d² > 1).
        """
        bcd = np.asarray(self.quatern[:3], dtype=float)
        try:
            rotation = quat2mat(fillpositive(bcd, nib.Nifti1Header.quaternion_threshold))
        except ValueError as exc:
            raise ValueError(f"its quaternion (b, c, d) = {_fmt(bcd)} is no rotation (b² + c² + d² > 1)") from exc
        out = np.eye(4)
        sizes = np.asarray(self.pixdim[1:], dtype=float) * [1.0, 1.0, self.pixdim[0]]
        out[:3, :3] = rotation * sizes[None, :]
        out[:3, 3] = self.quatern[3:]
        return out

    @property
    def affine(self) -> np.ndarray:
        """The RAS affine that places the image: the sform if sform_code > 0, else the qform if qform_code > 0
        (nibabel's rule), else the voxel sizes along L, P, S from 0 mm (ITK's reading; the file states none)."""
        if self.source == "sform":
            return self.sform
        if self.source == "qform":
            return self.qform
        return np.diag([-self.pixdim[1], -self.pixdim[2], self.pixdim[3], 1.0])


@dataclass(frozen=True)
class NiftiHeader:
    """A NIfTI header's facts that ITK reads differently, or not at all (NIfTI-2).

    Args:
        path: the file.
        version: 1 or 2.
        shape: the data shape (dim[1:dim[0]+1]).
        dtype: the voxels' type as stored.
        scaled: True where scl_slope/scl_inter rescale the stored values.
        transforms: the placement fields.
    """

    path: str
    version: int
    shape: tuple[int, ...]
    dtype: np.dtype
    scaled: bool
    transforms: NiftiTransforms

    def geometry(self, shape: tuple[int, ...] | None = None) -> Geometry:
        """The grid by nibabel's rule (:attr:`NiftiTransforms.affine`), carrying :attr:`transforms`; logs a warning
        naming the file where the fields it does not use say otherwise.

        Args:
            shape: the spatial shape. Defaults to None (the first three axes of :attr:`shape`).

        Raises:
            ImageReadError: the placing field holds non-finite numbers, a zero-length axis or a quaternion that is
                no rotation (one line).
        """
        shape = tuple(self.shape[:3]) if shape is None else tuple(shape)
        t = self.transforms
        try:
            affine = t.affine
            if not np.all(np.isfinite(affine)):
                raise ValueError(f"it holds non-finite numbers {_fmt(affine[:3].ravel())}")
            grid = replace(Geometry.from_affine(shape, affine), nifti=t)
        except ValueError as exc:
            code = f" ({t.source}_code {getattr(t, t.source + '_code')})" if t.source != "pixdim" else ""
            raise ImageReadError(self.path, f"the {t.source}{code} must place the image on a grid: {exc}") from exc
        self._warn_if_contradicted(grid)
        return grid

    def _warn_if_contradicted(self, grid: Geometry) -> None:
        t = self.transforms
        if t.source == "pixdim":
            logger.warning("%s: sform_code and qform_code are both 0, so the file does not say how it lies; read as "
                           "ITK reads it (axes along L, P, S from 0 mm; nibabel centres it and flips the first axis)",
                           self.path)
            return
        if t.source == "qform":
            return
        if t.qform_code > 0:
            try:
                diffs = grid.differences(Geometry.from_affine(grid.shape, t.qform))
            except ValueError as exc:
                diffs = [f"the qform is unusable ({exc})"]
            if diffs:
                logger.warning("%s: the sform (code %d) and the qform (code %d) disagree, sform vs qform (LPS mm): "
                               "%s; using the sform, as nibabel, FSL and MONAI's NibabelReader do (ITK uses the qform)",
                               self.path, t.sform_code, t.qform_code, "; ".join(diffs))
            return
        sizes = t.pixdim[1:grid.ndim + 1]
        if not np.allclose(grid.spacing, sizes, rtol=1e-3, atol=0):
            logger.warning("%s: the sform's voxel sizes %s differ from pixdim %s; using the sform, as nibabel does "
                           "(ITK takes pixdim)", self.path, _fmt(grid.spacing), _fmt(sizes))


def _first_bytes(path: Path, count: int) -> bytes:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            return handle.read(count)
    except (OSError, EOFError, zlib.error):
        return b""  # the reader that follows reports the damaged file


def _parse(block: bytes) -> nib.Nifti1Header | None:
    """The raw header (nibabel's fixes not applied), or None for a block that does not start a NIfTI header."""
    for klass in (nib.Nifti2Header, nib.Nifti1Header):
        size = klass.template_dtype.itemsize
        if len(block) >= size and klass.may_contain_header(block[:size]):
            return klass(block[:size], check=False)
    return None


def _check(path: Path, header: nib.Nifti1Header, version: int) -> None:
    """The header rules ITK passes over silently (see the module's notes), one line each."""
    offset = float(header["vox_offset"])
    least = header.single_vox_offset
    if header["magic"] == header.single_magic and not offset >= least:
        raise ImageReadError(path, f"vox_offset (where the voxels start) must be at least {least} in a single-file "
                             f"NIfTI-{version}, got {offset:g}")
    dims = int(header["dim"][0])
    spatial = min(dims, 3) if 1 <= dims <= 7 else 3
    sizes = np.asarray(header["pixdim"][1:spatial + 1], dtype=float)
    if not np.all(np.isfinite(sizes) & (sizes != 0)):
        raise ImageReadError(path, f"voxel spacing must be non-zero and finite, pixdim[1:4] = "
                             f"{_fmt(header['pixdim'][1:4])}")


def read_nifti_header(path: str | os.PathLike) -> NiftiHeader | None:
    """Read a NIfTI-1 or NIfTI-2 header and check the rules ITK passes over.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.

    Returns:
        The header's facts, or None where the file does not start with a NIfTI header (the image reader then
        reports the file).

    Raises:
        ImageReadError: a single-file vox_offset below the header's size, or a spatial pixdim that is 0 or not
            finite (one line naming the file, the rule and the value).

    Example:
        >>> read_nifti_header("scan.nii.gz").transforms.source     # doctest: +SKIP
        'sform'
    """
    p = Path(path)
    header = _parse(_first_bytes(p, 540))
    if header is None:
        return None
    version = 2 if isinstance(header, nib.Nifti2Header) else 1
    _check(p, header, version)
    slope, inter = (float(header["scl_slope"]), float(header["scl_inter"]))
    scaled = np.isfinite(slope) and slope != 0 and (slope != 1 or (np.isfinite(inter) and inter != 0))
    return NiftiHeader(str(p), version, tuple(int(s) for s in header.get_data_shape()), header.get_data_dtype(),
                       bool(scaled), NiftiTransforms.from_header(header))


def nifti_image(array: np.ndarray, transforms: NiftiTransforms, notes: str | None = None) -> nib.Nifti1Image:
    """A NIfTI-1 image of ``array`` (index order) that carries ``transforms`` as they are, codes included.

    Args:
        array: the voxels, stored in their own type.
        transforms: the placement fields to carry (usually an input image's).
        notes: a line for the header's descrip (80 bytes at most; :func:`pipeline.io.writer.write_image` keeps 79). Defaults to None.

    Example:
        >>> t = NiftiTransforms(2, (1, 0, 0, 5, 0, 1, 0, 0, 0, 0, 1, 0), 0, (0,) * 6, (1, 1, 1, 1))
        >>> image = nifti_image(np.zeros((2, 3, 4), np.uint8), t, notes="made by a test")
        >>> image.header.get_sform(coded=True)[1], image.header.get_sform()[0, 3], image.header["descrip"]
        (2, np.float64(5.0), array(b'made by a test', dtype='|S80'))
    """
    header = nib.Nifti1Header()
    header.set_data_dtype(array.dtype)
    header.set_data_shape(array.shape)
    transforms.to_header(header)
    if notes is not None:
        header["descrip"] = notes.encode()[:80].decode(errors="ignore").encode()
    # affine None: nibabel keeps the header's sform and qform instead of writing one affine into both
    return nib.Nifti1Image(array, None, header=header, dtype=array.dtype)
