from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from pipeline.io import Geometry


def _sitk(size, spacing, origin, direction):
    img = sitk.Image(list(size), sitk.sitkUInt8)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    return img


@pytest.mark.parametrize("direction, code", [
    ((1, 0, 0, 0, 1, 0, 0, 0, 1), "LPS"),
    ((-1, 0, 0, 0, -1, 0, 0, 0, 1), "RAS"),
    ((1, 0, 0, 0, -1, 0, 0, 0, 1), "LAS"),
    ((0, 1, 0, 1, 0, 0, 0, 0, 1), "PLS"),
])
def test_orientation_and_affine_from_itk(direction, code):
    g = Geometry.from_sitk(_sitk((5, 6, 7), (0.8, 0.9, 2.5), (10.0, -20.0, 30.0), direction))
    assert g.orientation == code
    # RAS affine maps index (i, j, k) to the LPS physical point with x and y negated
    img = _sitk((5, 6, 7), (0.8, 0.9, 2.5), (10.0, -20.0, 30.0), direction)
    lps = np.array(img.TransformIndexToPhysicalPoint((2, 3, 4)))
    ras = g.affine @ np.array([2, 3, 4, 1.0])
    assert np.allclose(ras[:3], lps * [-1, -1, 1])
    assert Geometry.from_affine(g.shape, g.affine).same_grid(g)


def test_differences_name_what_differs():
    a = Geometry((4, 4, 4), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    assert a.differences(Geometry((4, 4, 5), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))) == ["shape (4, 4, 4) vs (4, 4, 5)"]
    diffs = a.differences(Geometry((4, 4, 4), (1.0, 1.0, 2.5), (0.0, 3.0, 0.0)))
    assert len(diffs) == 2 and diffs[0].startswith("spacing") and diffs[1].startswith("origin")
    assert a.same_grid(Geometry((4, 4, 4), (1.0, 1.0, 2.0000001), (0.0, 0.001, 0.0)))


def test_as_orientation_finds_the_same_grid_stored_flipped():
    lps = Geometry((8, 6, 4), (0.5, 0.5, 2.0), (-10.0, -20.0, 5.0))
    # the same voxel centres with the y axis stored the other way round (LAS)
    las = Geometry((8, 6, 4), (0.5, 0.5, 2.0), (-10.0, -20.0 + 5 * 0.5, 5.0), (1, 0, 0, 0, -1, 0, 0, 0, 1))
    assert not lps.same_grid(las)
    assert lps.as_orientation("RAS").same_grid(las.as_orientation("RAS"))
    assert lps.as_orientation("RAS").orientation == "RAS"
    permuted = Geometry((6, 8, 4), (0.5, 0.5, 2.0), (-10.0, -20.0, 5.0), (0, 1, 0, 1, 0, 0, 0, 0, 1))
    assert permuted.as_orientation("RAS").shape == (8, 6, 4)


def test_2d_and_bad_geometries():
    g = Geometry((10, 12), (0.5, 0.7), (1.0, 2.0))
    assert g.orientation == "LP" and g.affine.shape == (4, 4)
    with pytest.raises(ValueError, match="must be 2D or 3D, got 4 axes"):
        Geometry((1, 2, 3, 4), (1,) * 4, (0,) * 4)
    with pytest.raises(ValueError, match="must match 3 axes"):
        Geometry((1, 2, 3), (1.0, 1.0), (0.0, 0.0, 0.0))
