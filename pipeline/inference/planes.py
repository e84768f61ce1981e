"""The three orthogonal planes a preview shows, cut from an image and its label map in radiological convention.

Arrays are first put in one known orientation, whatever their storage: index axes pointing to the patient's
Left, Posterior and Superior (``LPS``; nibabel's orientation maths on the grid's affine, so an oblique grid is
taken along its nearest axes). Each plane is then laid out as a radiologist reads it, row 0 at the top:

- axial: patient's right on the picture's left, anterior at the top (seen from the feet);
- coronal: patient's right on the picture's left, superior at the top (seen from the front);
- sagittal: anterior on the picture's left, superior at the top.

The planes cross at the centre of the largest labelled structure: the largest connected component of the
foreground (every label together, 26-connected in 3D), at its voxel nearest to its centroid in millimetres, so
that all three planes pass through the structure even when it is curved (a centroid can fall outside a C shape).
A label split in two (both kidneys as one label) shows its larger part whole rather than the gap between them.
An empty label map gives the planes through the image's centre. A 2D image gives one (axial) plane.

Example:
    >>> from pipeline.io import Geometry
    >>> image = np.zeros((5, 4, 3)); labels = np.zeros((5, 4, 3), np.uint8); labels[1, 2, 0] = 1
    >>> cut = preview_planes(image, labels, Geometry((5, 4, 3), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0)))
    >>> [p.view for p in cut.planes], cut.centre, cut.found
    (['axial', 'coronal', 'sagittal'], (1, 2, 0), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from pipeline.io.geometry import Geometry

__all__ = ["Plane", "Planes", "preview_planes", "structure_centre", "to_lps"]


@dataclass(frozen=True)
class Plane:
    """One picture: image and labels, row 0 at the top.

    Args:
        view: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
        image: the image's 2D cut.
        labels: the label map's 2D cut, the same shape.
        aspect: height over width of one pixel, in millimetres (matplotlib's ``imshow(aspect=...)``).
        sides: what lies at the picture's left, right, top and bottom edges (``"R"``, ``"L"``, ``"A"``...).
    """

    view: str
    image: np.ndarray
    labels: np.ndarray
    aspect: float
    sides: tuple[str, str, str, str]


@dataclass(frozen=True)
class Planes:
    """The planes of one preview.

    Args:
        planes: axial, coronal and sagittal (3D), or axial alone (2D).
        centre: where they cross, as an index of the ``LPS`` grid (:func:`to_lps`).
        found: False when the label map holds no structure (the planes cross at the image's centre).
        present: the labels (ids > 0) the whole label map holds, also those the planes miss.
    """

    planes: list[Plane]
    centre: tuple[int, ...]
    found: bool
    present: tuple[int, ...] = ()


def to_lps(array: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, tuple[float, ...]]:
    """``array`` (on ``geometry``'s grid) with its axes turned to point Left, Posterior, Superior, and the
    spacing along them. A 2D grid is taken as one axial slice (its third axis is Superior).

    Args:
        array: voxels in index order, ``geometry.shape``.
        geometry: the grid (direction and spacing are read; the origin does not matter).

    Example:
        >>> ras = Geometry.from_affine((3, 2, 2), np.diag([2.0, 1.0, 1.0, 1.0]))   # stored RAS
        >>> lps, spacing = to_lps(np.arange(12).reshape(3, 2, 2), ras)
        >>> lps[:, 1, 0].tolist(), spacing                              # x and y reversed: L and P come first
        ([8, 4, 0], (2.0, 1.0, 1.0))
    """
    if tuple(array.shape) != tuple(geometry.shape):
        raise ValueError(f"array of shape {array.shape} does not lie on the grid {geometry.shape}")
    flat = geometry.ndim == 2
    voxels = array[..., None] if flat else array
    spacing = (*geometry.spacing, 1.0) if flat else geometry.spacing
    transform = ornt_transform(io_orientation(geometry.affine), axcodes2ornt(("L", "P", "S")))
    turned = apply_orientation(voxels, transform)
    order = np.argsort(transform[:, 0])  # new axis j comes from stored axis order[j]
    return turned, tuple(float(spacing[int(i)]) for i in order)


def structure_centre(labels: np.ndarray, spacing: tuple[float, ...]) -> tuple[int, ...] | None:
    """The voxel of the largest connected component of ``labels > 0`` nearest to that component's centroid (in
    millimetres), or None when there is no foreground.

    Args:
        labels: a label map (2D or 3D).
        spacing: voxel size along its axes, in mm.

    Example:
        >>> ring = np.zeros((7, 7), np.uint8); ring[1:6, 1] = ring[1, 1:6] = ring[5, 1:6] = 1   # a C shape
        >>> structure_centre(ring, (1.0, 1.0))                                          # on it, not at (3, 2)
        (3, 1)
    """
    from scipy import ndimage

    foreground = labels > 0
    if not foreground.any():
        return None
    components, _ = ndimage.label(foreground, structure=np.ones((3,) * labels.ndim, bool))
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    voxels = np.argwhere(components == int(np.argmax(sizes)))
    scale = np.asarray(spacing, dtype=float)
    centroid = voxels.mean(axis=0)
    nearest = voxels[int(np.argmin((((voxels - centroid) * scale) ** 2).sum(axis=1)))]
    return tuple(int(v) for v in nearest)


def preview_planes(image: np.ndarray, labels: np.ndarray, geometry: Geometry) -> Planes:
    """Axial, coronal and sagittal planes (one axial plane in 2D) through the largest structure of ``labels``,
    laid out in radiological convention (see the module docstring).

    Args:
        image: one channel of the image, ``geometry.shape``.
        labels: the label map on the same grid.
        geometry: the grid, for the orientation and the spacing.

    Raises:
        ValueError: an array does not lie on the grid.
    """
    img, spacing = to_lps(np.asarray(image), geometry)
    lab, _ = to_lps(np.asarray(labels), geometry)
    if not np.issubdtype(lab.dtype, np.integer):  # a label map read back as floats holding whole numbers
        lab = lab.astype(np.int64)
    centre = structure_centre(lab, spacing)
    found = centre is not None
    i, j, k = centre if found else tuple(s // 2 for s in lab.shape)
    sx, sy, sz = spacing

    def cut(view: str, take, aspect: float, sides: tuple[str, str, str, str]) -> Plane:
        return Plane(view, take(img), take(lab), aspect, sides)

    planes = [cut("axial", lambda a: a[:, :, k].T, sy / sx, ("R", "L", "A", "P"))]
    if geometry.ndim == 3:
        planes += [cut("coronal", lambda a: a[:, j, :].T[::-1], sz / sx, ("R", "L", "S", "I")),
                   cut("sagittal", lambda a: a[i, :, :].T[::-1], sz / sy, ("A", "P", "S", "I"))]
    counts = np.bincount(lab.ravel()) if found else np.zeros(1, np.int64)
    present = tuple(int(v) for v in np.flatnonzero(counts) if v > 0)
    return Planes(planes, (i, j) if geometry.ndim == 2 else (i, j, k), found, present)
