"""QC images: radiological orientation from the affine, orientation letters, legend and metric in the title."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.tracking.qc import _VIEWS, case_dice, render_qc, to_ras


def _phantom():
    """A blob on the patient's right and posterior (RAS voxel order: high x, low y)."""
    volume = np.zeros((20, 24, 10), np.uint8)
    volume[14:18, 3:7, 2:8] = 1
    return volume


def test_to_ras_undoes_any_storage_order():
    ras = _phantom()
    lps = ras[::-1, ::-1].copy()
    lps_affine = np.diag([-0.5, -0.5, 2.0, 1.0])
    (back,), spacing = to_ras(lps_affine, lps)
    assert np.array_equal(back, ras) and spacing == (0.5, 0.5, 2.0)
    permuted = np.ascontiguousarray(ras.transpose(2, 0, 1))  # stored S, R, A
    affine = np.array([[0, 0.5, 0, 0], [0, 0, 0.5, 0], [2.0, 0, 0, 0], [0, 0, 0, 1]])
    (back,), spacing = to_ras(affine, permuted)
    assert np.array_equal(back, ras) and spacing == (0.5, 0.5, 2.0)


def test_views_are_radiological():
    ras = _phantom()
    centre = (15, 4, 5)
    axial = {v[0]: v for v in _VIEWS}["axial"]
    image = axial[1](ras, centre)  # rows: screen up with origin="lower"; columns: screen right
    rows, cols = np.nonzero(image)
    assert cols.max() < image.shape[1] / 2, "patient right on the image's left"
    assert rows.max() < image.shape[0] / 2, "posterior at the bottom"
    assert axial[3] == ("R", "L", "A", "P")
    sagittal = {v[0]: v for v in _VIEWS}["sagittal"]
    cols = np.nonzero(sagittal[1](ras, centre))[1]
    assert cols.min() > ras.shape[1] / 2, "posterior on the right, anterior on the left"


def test_rendered_figure_has_legend_letters_and_metric(tmp_path, monkeypatch):
    import matplotlib.figure

    figures = []
    original = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda self, *a, **k: (figures.append(self), original(self, *a, **k))[1])
    label = _phantom()
    pred = np.roll(label, 1, axis=0)
    dice = case_dice(label, pred, {1: "hippocampus"})
    assert dice["hippocampus"] == pytest.approx(0.75)
    path = render_qc(label.astype(np.float32), label, pred, "case 7, epoch 3: val/mean_dice 0.7500", tmp_path / "q.png",
                     affine=np.diag([-1.0, -1.0, 1.0, 1.0]), label_names={1: "hippocampus"})
    assert path.read_bytes()[:4] == b"\x89PNG"
    (fig,) = figures
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["hippocampus"]
    assert "val/mean_dice 0.7500" in fig._suptitle.get_text() and "patient right on image left" in \
        fig._suptitle.get_text()
    letters = [t.get_text() for t in fig.axes[0].texts]
    assert letters == ["R", "L", "A", "P"]
