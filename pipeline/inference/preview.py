"""A quick-look PNG of a segmented case (``segment --preview``): three orthogonal planes through the largest
structure, the image in grey, the labels over it in colour, a legend, the case's name as title.

The planes and their layout are :mod:`pipeline.inference.planes` (radiological convention: the patient's right on
the picture's left in the axial and coronal views; physical aspect ratios from the spacing). The grey window is the
image's 0.5th to 99.5th percentile (taken on an even sample of at most :data:`WINDOW_SAMPLE` voxels, so that a
large CT costs no full sort). Labels are drawn at :data:`ALPHA` opacity in fixed colours by label id (matplotlib's
``tab10`` up to 10 labels, ``tab20`` up to 20, evenly spread hues beyond); the legend names the labels present in the label map. An
empty label map gets the planes through the image's centre and the note "no structure found".

Matplotlib is imported only here, inside :func:`draw_preview`, and drawn through its Agg canvas on a figure of its
own (no pyplot state, nothing changed in the host program's backend); a job without ``--preview`` does not import
it. Matplotlib does not promise thread safety and the job draws from its writer and reader threads, so one
picture is drawn and saved at a time (:data:`_DRAWING`).

Example:
    >>> write_preview("out/a_preview.png", volume.array, labels, volume.geometry, {"1": "liver"}, "a")  # doctest: +SKIP
    PosixPath('out/a_preview.png')
"""

from __future__ import annotations

import colorsys
import logging
import math
import os
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pipeline.inference.planes import Planes, preview_planes
from pipeline.io.atomic import atomic_path
from pipeline.io.geometry import Geometry

__all__ = ["ALPHA", "PANEL_PX", "WINDOW_SAMPLE", "draw_preview", "label_colour", "preview_size", "window",
           "write_preview"]

logger = logging.getLogger(__name__)

#: width and height of one panel, in pixels
PANEL_PX = 400
#: height of the title band (the case's name, then each panel's view) and of one legend row, in pixels
TITLE_PX, LEGEND_ROW_PX = 56, 22
#: legend entries per row for each panel
LEGEND_COLUMNS_PER_PANEL = 2
#: opacity of the label overlay
ALPHA = 0.45
#: the most voxels the grey window's percentiles are taken from (an even sample beyond)
WINDOW_SAMPLE = 4_000_000
_DPI = 100
#: one picture drawn at a time in this process (matplotlib's font cache and text layout are shared)
_DRAWING = threading.Lock()


def window(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """The grey window: the ``low`` and ``high`` percentiles of ``image`` (on an even sample of at most
    :data:`WINDOW_SAMPLE` voxels); a constant image gets a window one unit wide.

    Args:
        image: the image (any shape).
        low: lower percentile. Defaults to 0.5.
        high: upper percentile. Defaults to 99.5.

    Example:
        >>> window(np.arange(1001.0))
        (5.0, 995.0)
    """
    flat = np.asarray(image).ravel()
    step = max(1, math.ceil(flat.size / WINDOW_SAMPLE))
    lo, hi = (float(v) for v in np.percentile(flat[::step], [low, high]))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def label_colour(label: int, largest: int) -> tuple[float, float, float]:
    """The RGB colour (0..1) of ``label`` in a map whose largest label id is ``largest``: matplotlib's ``tab10``
    colours up to 10 labels, ``tab20``'s up to 20, evenly spread hues (golden-ratio steps, so neighbours differ)
    beyond.

    Example:
        >>> [round(c, 3) for c in label_colour(2, 2)]        # tab10's orange
        [1.0, 0.498, 0.055]
    """
    if largest <= 10:
        return _TAB20[2 * ((label - 1) % 10)]  # tab10 is tab20's even entries
    if largest <= 20:
        return _TAB20[(label - 1) % 20]
    hue = ((label - 1) * 0.6180339887498949) % 1.0
    return colorsys.hsv_to_rgb(hue, 0.85, 0.95 if label % 2 else 0.75)


# matplotlib's tab20 (its even entries are tab10), kept here so that colours need no matplotlib import
_TAB20 = [tuple(int(h[i:i + 2], 16) / 255 for i in (0, 2, 4)) for h in (
    "1f77b4", "aec7e8", "ff7f0e", "ffbb78", "2ca02c", "98df8a", "d62728", "ff9896", "9467bd", "c5b0d5",
    "8c564b", "c49c94", "e377c2", "f7b6d2", "7f7f7f", "c7c7c7", "bcbd22", "dbdb8d", "17becf", "9edae5")]


def preview_size(panels: int, legend_entries: int) -> tuple[int, int]:
    """Width and height in pixels of a preview with ``panels`` panels and ``legend_entries`` legend entries (the
    note "no structure found" counts as one).

    Example:
        >>> preview_size(3, 2)
        (1200, 478)
    """
    rows = math.ceil(max(1, legend_entries) / (LEGEND_COLUMNS_PER_PANEL * panels))
    return panels * PANEL_PX, TITLE_PX + PANEL_PX + rows * LEGEND_ROW_PX


def draw_preview(cut: Planes, names: Mapping[str, str], title: str, grey: tuple[float, float]):
    """The preview as a matplotlib Figure (Agg canvas), laid out as :func:`preview_size` says.

    Args:
        cut: the planes (:func:`~pipeline.inference.planes.preview_planes`).
        names: label id -> name (the model card's labels).
        title: the picture's title (the case's name).
        grey: the grey window ``(low, high)`` (:func:`window`).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    ids = {int(k): str(v) for k, v in names.items() if int(k) != 0}
    present = list(cut.present)  # the legend names every label of the map, also those the planes miss
    largest = max([*ids, *present, 1])
    entries = [Patch(color=label_colour(k, largest), label=ids.get(k, f"label {k}")) for k in present]
    width, height = preview_size(len(cut.planes), len(entries) if cut.found else 1)
    figure = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)
    FigureCanvasAgg(figure)
    figure.patch.set_facecolor("black")
    figure.text(0.5, 1 - 18 / height, title, color="white", ha="center", va="center", fontsize=13)
    colours = np.zeros((largest + 1, 4))
    for k in range(1, largest + 1):
        colours[k] = (*label_colour(k, largest), ALPHA)
    bottom = 1 - (TITLE_PX + PANEL_PX) / height
    for index, plane in enumerate(cut.planes):
        axes = figure.add_axes((index / len(cut.planes), bottom, 1 / len(cut.planes), PANEL_PX / height))
        axes.set_facecolor("black")
        axes.imshow(plane.image, cmap="gray", vmin=grey[0], vmax=grey[1], aspect=plane.aspect,
                    interpolation="nearest")
        axes.imshow(colours[np.clip(plane.labels.astype(np.int64), 0, largest)], aspect=plane.aspect,
                    interpolation="nearest")
        axes.set_axis_off()
        figure.text((index + 0.5) / len(cut.planes), 1 - (TITLE_PX - 10) / height, plane.view, color="white",
                    ha="center", va="center", fontsize=10)
        for (x, y, ha, va), side in zip(((0.01, 0.5, "left", "center"), (0.99, 0.5, "right", "center"),
                                         (0.5, 0.99, "center", "top"), (0.5, 0.01, "center", "bottom")), plane.sides):
            axes.text(x, y, side, color="yellow", ha=ha, va=va, fontsize=9, transform=axes.transAxes,
                      bbox={"facecolor": "black", "alpha": 0.6, "pad": 1, "edgecolor": "none"})
    legend_box = (0, 0, 1, bottom)
    if entries:
        figure.legend(handles=entries, loc="center", bbox_to_anchor=legend_box, frameon=False, fontsize=9,
                      labelcolor="white", ncol=LEGEND_COLUMNS_PER_PANEL * len(cut.planes), handlelength=1.2)
    elif not cut.found:
        figure.text(0.5, bottom / 2, "no structure found", color="white", ha="center", va="center", fontsize=10)
    return figure


def write_preview(path: str | os.PathLike, image: np.ndarray, labels: np.ndarray, geometry: Geometry,
                  names: Mapping[str, str], title: str) -> Path:
    """Draw the preview of ``labels`` over ``image`` and write it to ``path`` as PNG, atomically (a temporary file
    in the same folder, renamed into place; nothing is left under either name when drawing fails).

    Args:
        path: the PNG to write.
        image: one channel of the image, on ``geometry``'s grid.
        labels: the label map on the same grid.
        geometry: the grid.
        names: label id -> name.
        title: the title (the case's name).

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: an array does not lie on the grid.
        DiskFullError: the file system ran out of space.
    """
    cut = preview_planes(image, labels, geometry)
    grey = window(image)
    with _DRAWING, atomic_path(path, suffix=".png") as tmp:
        figure = draw_preview(cut, names, title, grey)
        figure.savefig(tmp, format="png", dpi=_DPI, facecolor=figure.get_facecolor())
    logger.debug("wrote %s (planes through %s)", path, cut.centre)
    return Path(path)
