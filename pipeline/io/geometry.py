"""Image geometry: grid shape, voxel spacing, origin and direction, with the RAS affine derived from them.

ITK (and SimpleITK) describe a grid in LPS physical space by spacing, origin and a direction matrix; NIfTI and
MONAI use a 4x4 RAS affine. :class:`Geometry` keeps the ITK description (it is what the writers need to put a
label map back on an input's grid exactly) and derives the RAS affine and the orientation code
(``"RAS"``, ``"LPS"``, ...; the direction each voxel axis points to) from it.

Example:
    >>> import SimpleITK as sitk
    >>> img = sitk.Image(4, 5, 6, sitk.sitkUInt8)
    >>> img.SetSpacing((0.8, 0.8, 2.5))
    >>> g = Geometry.from_sitk(img)
    >>> g.orientation, g.shape
    ('LPS', (4, 5, 6))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from nibabel.orientations import aff2axcodes, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

if TYPE_CHECKING:
    from pipeline.io.nifti_header import NiftiTransforms

__all__ = ["Geometry"]

_LPS_TO_RAS = (-1.0, -1.0, 1.0)


@dataclass(frozen=True)
class Geometry:
    """The grid of an image in ITK terms (index order x, y, z; LPS physical space).

    Args:
        shape: number of voxels along each index axis (x, y[, z]).
        spacing: voxel size in mm along each index axis.
        origin: LPS position in mm of the centre of voxel (0, 0[, 0]).
        direction: row-major direction cosines, one column per index axis (ITK's convention).
        nifti: for a grid read from a NIfTI file, that file's placement fields (sform, qform, their codes); a NIfTI
            label map written on this grid carries them, so that every tool places it where it places the file.
            Not compared: two grids are equal when their voxels lie in the same places. Defaults to None.
    """

    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...] = field(default=())
    nifti: NiftiTransforms | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        dims = len(self.shape)
        if dims not in (2, 3):
            raise ValueError(f"geometry must be 2D or 3D, got {dims} axes (shape {self.shape})")
        if not self.direction:
            object.__setattr__(self, "direction", tuple(np.eye(dims).ravel().tolist()))
        if len(self.spacing) != dims or len(self.origin) != dims or len(self.direction) != dims * dims:
            raise ValueError(
                f"spacing, origin and direction must match {dims} axes, got spacing {self.spacing}, "
                f"origin {self.origin}, direction {self.direction}"
            )

    @property
    def ndim(self) -> int:
        """Number of spatial axes (2 or 3)."""
        return len(self.shape)

    @classmethod
    def from_sitk(cls, image) -> Geometry:
        """Geometry of a SimpleITK image (or of an ``ImageFileReader`` after ``ReadImageInformation``)."""
        return cls(
            shape=tuple(int(s) for s in image.GetSize()),
            spacing=tuple(float(s) for s in image.GetSpacing()),
            origin=tuple(float(s) for s in image.GetOrigin()),
            direction=tuple(float(s) for s in image.GetDirection()),
        )

    @classmethod
    def from_affine(cls, shape: tuple[int, ...], affine: np.ndarray) -> Geometry:
        """Geometry from a NIfTI-style RAS affine ((d+1) x (d+1), columns = index axes).

        Args:
            shape: spatial shape in index order.
            affine: RAS affine; for 2D shapes a 3x3 or a 4x4 whose third axis is ignored.
        """
        dims = len(shape)
        aff = np.asarray(affine, dtype=float)
        linear = aff[:dims, :dims] * np.asarray(_LPS_TO_RAS[:dims])[:, None]
        origin = aff[:dims, -1] * np.asarray(_LPS_TO_RAS[:dims])
        spacing = np.linalg.norm(linear, axis=0)
        if np.any(spacing <= 0):
            raise ValueError(f"affine has a zero-length axis: {aff.tolist()}")
        direction = linear / spacing
        return cls(tuple(int(s) for s in shape), tuple(spacing.tolist()), tuple(origin.tolist()),
                   tuple(direction.ravel().tolist()))

    def apply_to(self, image) -> None:
        """Set spacing, origin and direction of a SimpleITK image whose size equals :attr:`shape`."""
        if tuple(image.GetSize()) != self.shape:
            raise ValueError(f"image size {tuple(image.GetSize())} differs from the geometry's shape {self.shape}")
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)

    @property
    def direction_matrix(self) -> np.ndarray:
        """Direction cosines as a d x d matrix (LPS, one column per index axis)."""
        return np.asarray(self.direction, dtype=float).reshape(self.ndim, self.ndim)

    @property
    def affine(self) -> np.ndarray:
        """The 4x4 RAS affine (NIfTI / MONAI convention); 2D grids are embedded with a unit third axis."""
        dims = self.ndim
        flip = np.asarray(_LPS_TO_RAS[:dims])
        out = np.eye(4)
        out[:dims, :dims] = flip[:, None] * self.direction_matrix * np.asarray(self.spacing)[None, :]
        out[:dims, 3] = flip * np.asarray(self.origin)
        return out

    @property
    def orientation(self) -> str:
        """Axis codes of the stored voxel order, e.g. ``"RAS"``, ``"LPS"``, ``"LAS"`` (two letters in 2D)."""
        return "".join(aff2axcodes(self.affine))[: self.ndim]

    def as_orientation(self, code: str = "RAS") -> Geometry:
        """The same grid with its voxel axes reordered/flipped to ``code`` (3D only; nibabel's orientation maths).

        Two images whose stored orientations differ (an LPS DICOM series and an LAS NIfTI of it, say) lie on
        the same physical grid exactly when their geometries agree after both are put in one orientation.

        Args:
            code: target axis codes, e.g. ``"RAS"``. Defaults to ``"RAS"``.
        """
        if self.ndim != 3:
            raise ValueError(f"as_orientation needs a 3D grid, got {self.ndim}D")
        transform = ornt_transform(io_orientation(self.affine), axcodes2ornt(tuple(code.upper())))
        affine = self.affine @ inv_ornt_aff(transform, self.shape)
        shape = tuple(int(self.shape[int(axis)]) for axis in np.argsort(transform[:, 0]))
        return Geometry.from_affine(shape, affine)

    def differences(self, other: Geometry, *, spacing_tol: float = 1e-3, position_tol: float = 1e-2,
                    direction_tol: float = 1e-3) -> list[str]:
        """What differs between two grids, one readable phrase each (empty when they are the same grid).

        Args:
            other: the grid to compare with.
            spacing_tol: relative tolerance on spacing. Defaults to 1e-3.
            position_tol: absolute tolerance on the origin, in mm. Defaults to 0.01.
            direction_tol: absolute tolerance on direction cosines. Defaults to 1e-3.
        """
        if self.shape != other.shape:
            return [f"shape {self.shape} vs {other.shape}"]
        found = []
        if not np.allclose(self.spacing, other.spacing, rtol=spacing_tol, atol=0):
            found.append(f"spacing {_fmt(self.spacing)} vs {_fmt(other.spacing)}")
        if not np.allclose(self.origin, other.origin, atol=position_tol, rtol=0):
            found.append(f"origin {_fmt(self.origin)} vs {_fmt(other.origin)}")
        if not np.allclose(self.direction, other.direction, atol=direction_tol, rtol=0):
            found.append(f"direction {self.orientation} {_fmt(self.direction)} vs "
                         f"{other.orientation} {_fmt(other.direction)}")
        return found

    def same_grid(self, other: Geometry, **tolerances: float) -> bool:
        """True when :meth:`differences` finds nothing."""
        return not self.differences(other, **tolerances)

    def describe(self) -> str:
        """One line: shape, spacing and orientation."""
        return f"{'x'.join(map(str, self.shape))} @ {_fmt(self.spacing)} mm {self.orientation}"


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
