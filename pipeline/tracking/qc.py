"""Quality-control images: axial, coronal and sagittal slices with ground truth and prediction overlaid, logged
to MLflow for a few fixed validation cases each time the validation metric improves.

Each image is shown in the radiological convention (patient right on the image's left in axial and coronal views,
anterior on the left in the sagittal view) whatever the array's orientation: the volumes are reoriented to RAS
from their affine first, and every panel carries its orientation letters. A legend names each label's colour,
and the title names the metric: the validation key metric of the epoch and this case's Dice per label.

Example:
    >>> render_qc(image, label, pred, "case_001 epoch 12", "qc.png", affine=np.eye(4),
    ...           label_names={1: "anterior", 2: "posterior"})                   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from pipeline.tracking.safe_handler import SafeMLFlowHandler, metric_name
from pipeline.training.distributed import is_main_process
from pipeline.training.metrics import dice_scores

__all__ = ["ValidationTracker", "case_dice", "render_qc", "to_ras"]

logger = logging.getLogger(__name__)

_COLOURS = ["#00000000", "#ff3b30", "#34c759", "#007aff", "#ffcc00", "#af52de", "#5ac8fa", "#ff9500"]
# (name, slice of an RAS volume -> 2D array with rows = screen up, columns = screen right, aspect axes,
#  letters at the left, right, top and bottom edge). Columns run right-to-left in patient terms (radiological).
_VIEWS = (
    ("axial", lambda v, c: v[::-1, :, c[2]].T, (1, 0), ("R", "L", "A", "P")),
    ("coronal", lambda v, c: v[::-1, c[1], :].T, (2, 0), ("R", "L", "S", "I")),
    ("sagittal", lambda v, c: v[c[0], ::-1, :].T, (2, 1), ("A", "P", "S", "I")),
)


def to_ras(affine: np.ndarray, *volumes: np.ndarray) -> tuple[list[np.ndarray], tuple[float, ...]]:
    """Reorder and flip ``(X, Y, Z)`` volumes to RAS voxel order (nibabel's ``RAS+``: axis 0 runs from the
    patient's left to their right) from their affine; return them with the voxel size along R, A, S."""
    import nibabel.orientations as nio
    from monai.data.utils import affine_to_spacing

    affine = np.asarray(affine, dtype=float)
    ornt = nio.io_orientation(affine)
    spacing = affine_to_spacing(affine, r=3)
    ras_spacing = tuple(float(spacing[int(axis)]) for axis in np.argsort(ornt[:, 0]))
    return [nio.apply_orientation(v, ornt) for v in volumes], ras_spacing


def case_dice(label: np.ndarray, pred: np.ndarray, label_names: Mapping[int, str]) -> dict[str, float]:
    """Dice per named foreground label of one case (NaN where the label is absent from both)."""
    return dice_scores(pred, label, {str(k): v for k, v in label_names.items()})


def _centre(*volumes: np.ndarray) -> tuple[int, ...]:
    for vol in volumes:
        idx = np.argwhere(vol > 0)
        if len(idx):
            return tuple(int(v) for v in np.round(idx.mean(0)))
    return tuple(s // 2 for s in volumes[0].shape)


def _mark(ax: Any, letters: Sequence[str]) -> None:
    style = {"color": "yellow", "fontsize": 9, "fontweight": "bold", "transform": ax.transAxes}
    ax.text(0.02, 0.5, letters[0], ha="left", va="center", **style)
    ax.text(0.98, 0.5, letters[1], ha="right", va="center", **style)
    ax.text(0.5, 0.98, letters[2], ha="center", va="top", **style)
    ax.text(0.5, 0.02, letters[3], ha="center", va="bottom", **style)


def render_qc(image: np.ndarray, label: np.ndarray, pred: np.ndarray, title: str, path: str | os.PathLike,
              spacing: Sequence[float] = (1.0, 1.0, 1.0), affine: np.ndarray | None = None,
              label_names: Mapping[int, str] | None = None) -> Path:
    """Write a PNG: rows ground truth / prediction, columns axial / coronal / sagittal through the labelled centre.

    Args:
        image: (X, Y, Z) intensities.
        label: (X, Y, Z) label ids.
        pred: (X, Y, Z) predicted ids.
        title: figure title.
        path: destination PNG.
        spacing: voxel size, used when ``affine`` is None (the volumes are then taken as RAS). Defaults to 1 mm.
        affine: the volumes' voxel-to-RAS affine; they are reoriented to RAS with it. Defaults to None.
        label_names: label id -> name, for the legend. Defaults to ``label <id>``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    if affine is not None:
        (image, label, pred), spacing = to_ras(affine, image, label, pred)
    centre = _centre(label, pred, image)
    size = [float(s) for s in spacing]
    n_labels = int(max(label.max(initial=0), pred.max(initial=0), max(label_names or {0: ""}))) + 1
    cmap = ListedColormap(_COLOURS[: max(2, min(n_labels, len(_COLOURS)))])
    lo, hi = np.percentile(image, [0.5, 99.5]) if image.size else (0, 1)
    fig, axes = plt.subplots(2, 3, figsize=(10, 7))
    for row, (name, overlay) in enumerate((("ground truth", label), ("prediction", pred))):
        for col, (view, cut, (up, right), letters) in enumerate(_VIEWS):
            ax = axes[row, col]
            aspect = size[up] / size[right]
            ax.imshow(cut(image, centre), cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=aspect)
            mask = cut(overlay, centre).astype(float)
            ax.imshow(np.ma.masked_equal(mask, 0), cmap=cmap, vmin=0, vmax=cmap.N - 1, alpha=0.45,
                      origin="lower", aspect=aspect, interpolation="nearest")
            _mark(ax, letters)
            ax.set_title(f"{name}: {view}", fontsize=9)
            ax.axis("off")
    names = dict(label_names or {})
    handles = [Patch(color=_COLOURS[k], label=names.get(k, f"label {k}"))
               for k in range(1, min(n_labels, len(_COLOURS)))]
    fig.legend(handles=handles, loc="lower center", ncol=max(1, len(handles)), fontsize=9, frameon=False)
    fig.suptitle(title + "\nradiological view: patient right on image left", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=80)
    plt.close(fig)
    return dest


def _volume(value: Any, argmax: bool) -> np.ndarray:
    tensor = torch.as_tensor(value).detach().cpu()
    if argmax and tensor.shape[0] > 1:
        tensor = tensor.argmax(0)
    else:
        tensor = tensor[0]
    return tensor.float().numpy() if not argmax else tensor.to(torch.uint8).numpy()


class ValidationTracker(SafeMLFlowHandler):
    """The validator's MLflow handler (per-epoch metrics, as MONAI's) plus QC images on improvement.

    Args:
        qc_cases: number of fixed validation cases (the first ones the validator sees). Defaults to 3.
        qc_dir: local folder for the PNGs (``epoch_XXX/<case>.png``). Defaults to ``"qc"``.
        label_names: label id -> name, for the legend and the per-case Dice in the title. Defaults to None.
        **kwargs: as ``monai.handlers.MLFlowHandler``.
    """

    def __init__(self, qc_cases: int = 3, qc_dir: str | os.PathLike = "qc", label_names: Mapping | None = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("iteration_log", False)
        super().__init__(**kwargs)
        self.qc_cases = int(qc_cases)
        self.qc_dir = Path(qc_dir)
        self.label_names = {int(k): str(v) for k, v in (label_names or {}).items() if int(k) != 0}
        self.chosen: list[str] = []
        self.kept: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self.kept.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.log_qc)

    def collect(self, engine: Engine) -> None:
        """Keep image, label and prediction of the chosen cases from this iteration's output."""
        if self.qc_cases < 1 or not is_main_process():
            return
        outputs = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        for item in outputs:
            if not isinstance(item, dict) or "pred" not in item or "label" not in item:
                continue
            meta = getattr(item["image"], "meta", {})
            name = Path(str(meta.get("filename_or_obj", f"case{len(self.kept)}"))).name
            if name not in self.chosen and len(self.chosen) < self.qc_cases:
                self.chosen.append(name)
            if name in self.chosen:
                affine = np.asarray(torch.as_tensor(meta.get("affine", torch.eye(4))).cpu(), dtype=float)
                self.kept[name] = (_volume(item["image"], False), _volume(item["label"], True),
                                   _volume(item["pred"], True), affine)

    def log_qc(self, engine: Engine) -> None:
        """On an epoch that improved the key metric, render the kept cases and log them under ``qc/``."""
        if not self.kept or not is_main_process():
            return
        if getattr(engine.state, "best_metric_epoch", -1) != engine.state.epoch:
            return
        folder = self.qc_dir / f"epoch_{engine.state.epoch:03d}"
        metric = getattr(engine.state, "best_metric", float("nan"))
        key = metric_name(str(getattr(engine.state, "key_metric_name", None) or "key metric"))
        for name, (image, label, pred, affine) in sorted(self.kept.items()):
            if image.ndim != 3 or affine.shape != (4, 4):
                continue
            stem = name.split(".")[0]
            names = self.label_names or {k: f"label {k}" for k in range(1, int(label.max(initial=0)) + 1)}
            dice = ", ".join(f"{n} {d:.3f}" for n, d in case_dice(label, pred, names).items())
            title = f"{stem}, epoch {engine.state.epoch}: {key} {metric:.4f} (all validation cases)\n" \
                    f"this case's Dice: {dice}"
            render_qc(image, label, pred, title, folder / f"{stem}.png", affine=affine, label_names=names)
        if self.cur_run is not None:
            self.guarded("QC image logging", self.client.log_artifacts, self.cur_run.info.run_id, str(folder),
                         f"qc/{folder.name}")
