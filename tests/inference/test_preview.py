"""The preview picture (segment --preview): radiological convention whatever the storage, physical aspect, the
centre through the largest structure, the PNG's layout, an empty label map, 2D images and an atomic write."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.inference.planes import preview_planes, structure_centre, to_lps
from pipeline.inference.preview import (
    PANEL_PX,
    TITLE_PX,
    draw_preview,
    label_colour,
    preview_size,
    window,
    write_preview,
)
from pipeline.io import Geometry

SPACING = (1.0, 1.5, 2.0)  # along L, P, S: every plane has its own aspect
NAMES = {"0": "background", "1": "liver", "2": "kidney"}


def _patient(shape=(20, 16, 12)) -> tuple[np.ndarray, np.ndarray]:
    """An image and labels stored LPS (index axes point Left, Posterior, Superior): the patient's right half bright,
    a marker label at the right, anterior, superior corner."""
    image = np.zeros(shape, np.float32)
    image[: shape[0] // 2] = 1000.0  # low x is the patient's right in LPS storage
    labels = np.zeros(shape, np.uint8)
    labels[2:5, 2:5, 8:11] = 1
    return image, labels


def _stored(array: np.ndarray, perm: tuple[int, ...], flips: tuple[int, ...]) -> tuple[np.ndarray, Geometry]:
    """``array`` (LPS) stored with index axis a along LPS axis ``perm[a]``, reversed where a is in ``flips``, and
    the geometry that says so (built by hand: ITK direction columns, no orientation library)."""
    stored = np.transpose(array, perm)
    for axis in flips:
        stored = np.flip(stored, axis)
    direction = np.zeros((3, 3))
    for axis, lps_axis in enumerate(perm):
        direction[lps_axis, axis] = -1.0 if axis in flips else 1.0
    spacing = tuple(SPACING[p] for p in perm)
    return np.ascontiguousarray(stored), Geometry(stored.shape, spacing, (0.0, 0.0, 0.0), tuple(direction.ravel()))


STORAGES = {"LPS": ((0, 1, 2), ()), "RAS": ((0, 1, 2), (0, 1)), "LAS": ((0, 1, 2), (1,)),
            "SLP": ((2, 0, 1), ()), "IRA": ((2, 0, 1), (0, 1, 2)), "PSR": ((1, 2, 0), (2,))}


@pytest.mark.parametrize("code", list(STORAGES))
def test_planes_are_radiological_whatever_the_storage(code):
    """The marker on the patient's right, anterior, superior: left and top in the axial (anterior up) and coronal
    (superior up) views, left (anterior) and top in the sagittal view; the same pictures from every storage."""
    image, labels = _patient()
    perm, flips = STORAGES[code]
    stored_image, geometry = _stored(image, perm, flips)
    stored_labels, _ = _stored(labels, perm, flips)
    assert geometry.orientation == code  # the hand-made geometry says what the test means
    cut = preview_planes(stored_image, stored_labels, geometry)
    reference = preview_planes(image, labels, _stored(image, (0, 1, 2), ())[1])
    assert [p.view for p in cut.planes] == ["axial", "coronal", "sagittal"] and cut.found
    assert cut.centre == (3, 3, 9)  # the marker's middle voxel, on the LPS grid
    for plane, same in zip(cut.planes, reference.planes):
        rows, cols = np.nonzero(plane.labels)
        height, width = plane.labels.shape
        assert cols.max() < width / 2 and rows.max() < height / 2, (code, plane.view)
        assert np.array_equal(plane.image, same.image) and np.array_equal(plane.labels, same.labels)
    axial, coronal, sagittal = cut.planes
    assert axial.image[:, 0].min() == 1000 and axial.image[:, -1].max() == 0  # the right half on the left
    assert (axial.aspect, coronal.aspect, sagittal.aspect) == (1.5, 2.0, pytest.approx(2.0 / 1.5))
    assert axial.labels.shape == (16, 20) and coronal.labels.shape == (12, 20) and sagittal.labels.shape == (12, 16)
    assert (axial.sides, coronal.sides, sagittal.sides) == (("R", "L", "A", "P"), ("R", "L", "S", "I"),
                                                             ("A", "P", "S", "I"))


def test_to_lps_reads_an_affine_stored_ras():
    image, _ = _patient()
    ras = image[::-1, ::-1]  # the same patient stored RAS, its geometry from a NIfTI-style affine
    geometry = Geometry.from_affine(ras.shape, np.diag([*SPACING, 1.0]))
    assert geometry.orientation == "RAS"
    turned, spacing = to_lps(ras, geometry)
    assert np.array_equal(turned, image) and spacing == SPACING


def test_the_centre_is_on_the_largest_connected_structure():
    labels = np.zeros((30, 20, 10), np.uint8)
    labels[1:3, 1:3, 1:6] = 1  # label 1 in two parts of 20 voxels: the largest label (40 voxels)...
    labels[25:27, 15:17, 1:6] = 1
    labels[10:13, 8:11, 2:6] = 2  # ...but label 2 is the largest connected structure (36 voxels)
    assert structure_centre(labels, (1.0, 1.0, 1.0)) == (11, 9, 3)
    arc = np.zeros((15, 15, 3), np.uint8)  # a C shape: its centroid lies off it; the centre is on it
    arc[2:13, 2, 1] = arc[2, 2:13, 1] = arc[12, 2:13, 1] = 1
    centre = structure_centre(arc, (1.0, 1.0, 1.0))
    assert arc[centre] == 1 and centre == (7, 2, 1)
    assert structure_centre(np.zeros((4, 4, 4), np.uint8), (1.0, 1.0, 1.0)) is None


def test_an_empty_label_map_cuts_through_the_image_centre(tmp_path):
    image, _ = _patient()
    geometry = _stored(image, (0, 1, 2), ())[1]
    cut = preview_planes(image, np.zeros(image.shape, np.uint8), geometry)
    assert not cut.found and cut.centre == (10, 8, 6) and cut.present == ()
    out = write_preview(tmp_path / "e_preview.png", image, np.zeros(image.shape, np.uint8), geometry, NAMES, "e")
    assert Image.open(out).size == preview_size(3, 1)  # one legend row: the note "no structure found"


def test_title_views_legend_and_note():
    """The case's name as title, the three views named, a legend of the labels the map holds (also one the planes
    miss, none it lacks), and the note instead of a legend for an empty map."""
    image, labels = _patient()
    labels[15, 12, 1] = 2  # one voxel, off the planes through the larger label 1
    geometry = _stored(image, (0, 1, 2), ())[1]
    names = {**NAMES, "3": "spleen"}  # a label the map does not hold
    cut = preview_planes(image, labels, geometry)
    assert cut.present == (1, 2) and not any((p.labels == 2).any() for p in cut.planes)
    figure = draw_preview(cut, names, "case_07", window(image))
    texts = [t.get_text() for t in figure.texts]
    assert texts[0] == "case_07" and {"axial", "coronal", "sagittal"} <= set(texts)
    (legend,) = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == ["liver", "kidney"]
    empty = draw_preview(preview_planes(image, np.zeros_like(labels), geometry), names, "case_08", window(image))
    assert "no structure found" in [t.get_text() for t in empty.texts] and not empty.legends


def _panel(pixels: np.ndarray, index: int) -> np.ndarray:
    return pixels[TITLE_PX: TITLE_PX + PANEL_PX, index * PANEL_PX: (index + 1) * PANEL_PX]


@pytest.mark.parametrize("code", ["LPS", "RAS"])
def test_the_png_shows_the_patients_right_on_the_left(tmp_path, code):
    """Read back from the PNG: three panels side by side under the title, the bright right half of the patient on
    the left of the axial and coronal panels, the labels in colour, nothing left beside the file."""
    image, labels = _patient()
    labels[12:14, 2:5, 8:11] = 2  # a second, smaller label on the patient's left, in the same axial and coronal planes
    perm, flips = STORAGES[code]
    stored_image, geometry = _stored(image, perm, flips)
    out = write_preview(tmp_path / "case_preview.png", stored_image, _stored(labels, perm, flips)[0], geometry,
                        NAMES, "case")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case_preview.png"]  # no temporary file left
    picture = Image.open(out)
    assert picture.format == "PNG" and picture.size == preview_size(3, 2) == (1200, 478)
    pixels = np.asarray(picture.convert("RGB")).astype(int)
    for index in (0, 1):  # axial, coronal
        grey = _panel(pixels, index).sum(axis=2)
        assert grey[:, :PANEL_PX // 2].mean() > 3 * grey[:, PANEL_PX // 2:].mean(), index
    panels = pixels[TITLE_PX: TITLE_PX + PANEL_PX]
    blue = (panels[..., 2] - panels[..., 0] > 40).sum()  # tab10 blue (liver) over grey
    orange = (panels[..., 0] - panels[..., 2] > 40) & (panels[..., 1] < panels[..., 0] - 20)  # tab10 orange (kidney)
    assert blue > 100 and orange.sum() > 100


def test_a_2d_image_gets_one_axial_panel(tmp_path):
    image = np.zeros((24, 18), np.float32)
    image[18:] = 500.0  # high x: the patient's right, since this grid is stored RA
    labels = np.zeros(image.shape, np.uint8)
    labels[19:22, 3:6] = 1  # right and posterior (low y points posterior here)
    geometry = Geometry(image.shape, (0.5, 0.5), (0.0, 0.0), (-1.0, 0.0, 0.0, -1.0))
    cut = preview_planes(image, labels, geometry)
    (axial,) = cut.planes
    rows, cols = np.nonzero(axial.labels)
    assert axial.view == "axial" and cut.centre == (3, 13) and geometry.orientation == "RA"
    assert cols.max() < axial.labels.shape[1] / 2 and rows.min() > axial.labels.shape[0] / 2
    out = write_preview(tmp_path / "flat_preview.png", image, labels, geometry, NAMES, "flat")
    assert Image.open(out).size == preview_size(1, 1) == (400, 478)


def test_a_failing_draw_or_write_leaves_nothing(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def broken(self, path, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"\x89PNG half a picture")
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(Figure, "savefig", broken)
    image, labels = _patient()
    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_preview(tmp_path / "x_preview.png", image, labels, _stored(image, (0, 1, 2), ())[1], NAMES, "x")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="does not lie on the grid"):
        preview_planes(image, labels[:-1], _stored(image, (0, 1, 2), ())[1])


def test_window_and_colours():
    values = np.concatenate([np.full(10, -3000.0), np.linspace(0, 100, 10_000), np.full(10, 1e6)])
    low, high = window(values)
    assert 0 <= low < 1 and 99 < high <= 100  # outliers on both sides do not set the window
    assert window(np.full((3, 3), 7.0)) == (7.0, 8.0)
    small = {label_colour(k, 10) for k in range(1, 11)}
    many = {label_colour(k, 104) for k in range(1, 105)}
    assert len(small) == 10 and len(many) == 104  # every label its own colour


@pytest.mark.realdata
@pytest.mark.parametrize("image, seg, table", [("example_ct.nii.gz", "example_ct_seg_v1.nii.gz", "total_v1"),
                                               ("example_mr_sm.nii.gz", "example_seg_mr.nii.gz", "total_mr")])
def test_real_scans_show_the_liver_left_of_the_spleen(ct_mr_examples, image, seg, table):
    """TotalSegmentator's CT (stored RAS) and MR (stored LPS) with their label maps: wherever a plane cuts both, the
    liver (the patient's right) lies left of the spleen in the axial and coronal views."""
    import json

    from pipeline.io import read_image

    names = json.loads((ct_mr_examples / "class_map_total_v1_total_totalmr.json").read_text())[table]
    ids = {name: int(k) for k, name in names.items()}
    volume, labels = read_image(ct_mr_examples / image), read_image(ct_mr_examples / seg).array
    cut = preview_planes(volume.array, labels, volume.geometry)
    compared = 0
    for plane in cut.planes[:2]:
        liver, spleen = (np.nonzero(plane.labels == ids[n])[1] for n in ("liver", "spleen"))
        if liver.size and spleen.size:
            assert liver.mean() < plane.labels.shape[1] / 2 < spleen.mean(), (image, plane.view)
            compared += 1
    assert compared >= 1, f"{image}: no axial or coronal plane cuts both the liver and the spleen"
