"""Quality-control images: axial, coronal and sagittal slices with ground truth and prediction overlaid, logged
to MLflow for a few fixed validation cases each time the validation metric improves.

Example:
    >>> render_qc(image, label, pred, "case_001 epoch 12", "qc.png", spacing=(1, 1, 1))   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from pipeline.tracking.safe_handler import SafeMLFlowHandler
from pipeline.training.distributed import is_main_process

__all__ = ["ValidationTracker", "render_qc"]

logger = logging.getLogger(__name__)

_COLOURS = ["#00000000", "#ff3b30", "#34c759", "#007aff", "#ffcc00", "#af52de", "#5ac8fa", "#ff9500"]


def _centre(*volumes: np.ndarray) -> tuple[int, ...]:
    for vol in volumes:
        idx = np.argwhere(vol > 0)
        if len(idx):
            return tuple(int(v) for v in np.round(idx.mean(0)))
    return tuple(s // 2 for s in volumes[0].shape)


def render_qc(image: np.ndarray, label: np.ndarray, pred: np.ndarray, title: str, path: str | os.PathLike,
              spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> Path:
    """Write a PNG: rows ground truth / prediction, columns axial / coronal / sagittal through the labelled centre.

    Args:
        image: (X, Y, Z) intensities (RAS voxel order).
        label: (X, Y, Z) label ids.
        pred: (X, Y, Z) predicted ids.
        title: figure title.
        path: destination PNG.
        spacing: voxel size, for the aspect ratio. Defaults to isotropic.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    cx, cy, cz = _centre(label, pred, image)
    sx, sy, sz = (float(s) for s in spacing)
    views = [("axial", lambda v: v[:, :, cz].T, sy / sx), ("coronal", lambda v: v[:, cy, :].T, sz / sx),
             ("sagittal", lambda v: v[cx, :, :].T, sz / sy)]
    n_labels = int(max(label.max(initial=0), pred.max(initial=0))) + 1
    cmap = ListedColormap(_COLOURS[: max(2, min(n_labels, len(_COLOURS)))])
    lo, hi = np.percentile(image, [0.5, 99.5]) if image.size else (0, 1)
    fig, axes = plt.subplots(2, 3, figsize=(10, 6.5))
    for row, (name, overlay) in enumerate((("ground truth", label), ("prediction", pred))):
        for col, (view, cut, aspect) in enumerate(views):
            ax = axes[row, col]
            ax.imshow(cut(image), cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=aspect)
            mask = cut(overlay).astype(float)
            ax.imshow(np.ma.masked_equal(mask, 0), cmap=cmap, vmin=0, vmax=cmap.N - 1, alpha=0.45,
                      origin="lower", aspect=aspect, interpolation="nearest")
            ax.set_title(f"{name}: {view}", fontsize=9)
            ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
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
        **kwargs: as ``monai.handlers.MLFlowHandler``.
    """

    def __init__(self, qc_cases: int = 3, qc_dir: str | os.PathLike = "qc", **kwargs: Any) -> None:
        kwargs.setdefault("iteration_log", False)
        super().__init__(**kwargs)
        self.qc_cases = int(qc_cases)
        self.qc_dir = Path(qc_dir)
        self.chosen: list[str] = []
        self.kept: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, ...]]] = {}

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
                spacing = tuple(float(s) for s in torch.as_tensor(meta.get("pixdim", [1, 1, 1, 1]))[1:4])
                self.kept[name] = (_volume(item["image"], False), _volume(item["label"], True),
                                   _volume(item["pred"], True), spacing or (1.0, 1.0, 1.0))

    def log_qc(self, engine: Engine) -> None:
        """On an epoch that improved the key metric, render the kept cases and log them under ``qc/``."""
        if not self.kept or not is_main_process():
            return
        if getattr(engine.state, "best_metric_epoch", -1) != engine.state.epoch:
            return
        folder = self.qc_dir / f"epoch_{engine.state.epoch:03d}"
        metric = getattr(engine.state, "best_metric", float("nan"))
        for name, (image, label, pred, spacing) in sorted(self.kept.items()):
            if image.ndim != 3:
                continue
            stem = name.split(".")[0]
            render_qc(image, label, pred, f"{stem}  epoch {engine.state.epoch}  best {metric:.4f}",
                      folder / f"{stem}.png", spacing)
        if self.cur_run is not None:
            self.guarded("QC image logging", self.client.log_artifacts, self.cur_run.info.run_id, str(folder),
                         f"qc/{folder.name}")
