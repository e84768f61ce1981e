"""Per-class validation metrics and a metrics report (JSON + CSV) for MONAI evaluators.

MONAI's ``MeanDice`` and ``HausdorffDistance`` handlers reduce over classes; ``per_class_metrics`` builds one
handler per foreground class by feeding each the channel of that class, so that every class has its own named
metric (``val_dice_anterior``, ``val_hd95_liver``), logged by ``StatsHandler`` and MLflow like any other.
``MetricsReport`` writes, when the evaluator completes, ``metrics.json`` (means and per-case values) and
``metrics.csv`` (one row per case).

Example (bundle config)::

    "additional_metrics": "$pipeline.training.per_class_metrics(@label_names, ('dice', 'hd95'))"
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data.utils import affine_to_spacing
from monai.handlers import IgniteMetricHandler, MeanDice, from_engine
from monai.metrics import HausdorffDistanceMetric
from monai.utils import string_list_all_gather

from pipeline.io.atomic import write_text_atomic

__all__ = ["MetricsReport", "dice_scores", "per_class_metrics"]

logger = logging.getLogger(__name__)

_KINDS = ("dice", "hd95")


def dice_scores(pred: np.ndarray, truth: np.ndarray, labels: Mapping[str, str]) -> dict[str, float]:
    """Dice per named foreground label of two label maps (NaN where the label is absent from both).

    Args:
        pred: predicted label ids.
        truth: reference label ids, same shape.
        labels: label id (string) -> name; id 0 (background) is skipped.

    Example:
        >>> dice_scores(np.array([0, 1, 1]), np.array([0, 1, 0]), {"0": "background", "1": "liver"})
        {'liver': 0.6666666666666666}
    """
    scores = {}
    for key, name in labels.items():
        k = int(key)
        if k == 0:
            continue
        p, t = pred == k, truth == k
        total = p.sum() + t.sum()
        scores[name] = float(2.0 * np.logical_and(p, t).sum() / total) if total else float("nan")
    return scores


def _label_spacing(y: torch.Tensor) -> list[float] | None:
    """Voxel size of a (batched) label from its affine; None when it carries none."""
    affine = getattr(y, "affine", None)
    if affine is None:
        return None
    affine = torch.as_tensor(affine, dtype=torch.float64)
    return [float(v) for v in affine_to_spacing(affine[0] if affine.ndim == 3 else affine, r=y.ndim - 2)]


class _SpacedHausdorff(HausdorffDistanceMetric):
    """HD95 in millimetres: MONAI's metric with a voxel spacing (its ignite handler passes none): fixed, or
    ``"label"`` for each case's own, read from the label's affine (evaluation on the original grids)."""

    def __init__(self, spacing: Sequence[float] | str | None, **kwargs: object) -> None:
        super().__init__(**kwargs)
        if isinstance(spacing, str) and spacing != "label":
            raise ValueError(f"HD95 spacing must be a list of mm, 'label' or None, got '{spacing}'")
        self.spacing = spacing if spacing is None or isinstance(spacing, str) else [float(s) for s in spacing]

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: object) -> torch.Tensor:
        spacing = _label_spacing(y) if self.spacing == "label" else self.spacing
        return super()._compute_tensor(y_pred, y, spacing=spacing)


def _channel(c: int) -> Callable:
    pick = from_engine(["pred", "label"])

    def transform(output: object) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        preds, labels = pick(output)
        return [p[c: c + 1] for p in preds], [y[c: c + 1] for y in labels]

    return transform


def per_class_metrics(label_names: Mapping, kinds: Iterable[str] = ("dice",), prefix: str = "val",
                      save_details: bool = True, spacing: Sequence[float] | str | None = None) -> dict:
    """One MONAI metric handler per (kind, foreground class), keyed ``{prefix}_{kind}_{name}``.

    Args:
        label_names: label id -> name, background (id 0) included or not; id 0 is skipped.
        kinds: any of ``"dice"``, ``"hd95"``. Defaults to ``("dice",)``.
        prefix: metric name prefix. Defaults to ``"val"``.
        save_details: keep per-case values in ``engine.state.metric_details`` (for reports). Defaults to True.
        spacing: voxel size in mm of the evaluated grid, so that HD95 is in mm, or ``"label"``: each case's own,
            from its label's affine (evaluation on the original grids). Defaults to None (voxels).

    The evaluator's ``pred`` and ``label`` must be one-hot, ``(C, *spatial)`` per case.
    """
    metrics = {}
    for kind in kinds:
        if kind not in _KINDS:
            raise ValueError(f"metric kind must be one of {', '.join(_KINDS)}, got '{kind}'")
        for key, name in sorted(label_names.items(), key=lambda kv: int(kv[0])):
            c = int(key)
            if c == 0:
                continue
            if kind == "dice":
                handler = MeanDice(include_background=True, output_transform=_channel(c), save_details=save_details)
            else:
                metric = _SpacedHausdorff(spacing, include_background=True, percentile=95.0)
                handler = IgniteMetricHandler(metric_fn=metric, output_transform=_channel(c),
                                              save_details=save_details)
            metrics[f"{prefix}_{kind}_{name}"] = handler
    return metrics


def _number(value: object) -> float | None:
    try:
        number = float(value.item() if isinstance(value, torch.Tensor) else value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) or math.isinf(number) else number


class MetricsReport:
    """Write ``metrics.json`` and ``metrics.csv`` into ``output_dir`` when the evaluator completes, and append the
    means, with the epoch and the seconds since the handler was attached, to ``history.jsonl``.

    Args:
        output_dir: folder (created).
        image_key: key whose ``meta["filename_or_obj"]`` names each case. Defaults to ``"image"``.
        prefix: only metrics whose names start with it are reported. Defaults to ``""`` (all).
        grid: the grid the metrics were computed on, written into ``metrics.json`` (e.g. ``"original"`` or
            ``"resampled to 1.0x1.0x1.0 mm"``). Defaults to None (not stated).

    NaN and infinite values (e.g. HD95 of a class absent from both prediction and label) are written as null
    in JSON and empty in CSV, and left out of the means.
    """

    def __init__(self, output_dir: str | os.PathLike, image_key: str = "image", prefix: str = "",
                 grid: str | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.grid = grid
        self.image_key = image_key
        self.prefix = prefix
        self._names: list[str] = []
        self._started = time.time()

    def attach(self, engine: Engine) -> None:
        self._started = time.time()
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._names = []

    def _collect(self, engine: Engine) -> None:
        # the decollated output items carry the image (with its file name); fall back to the collated batch
        output = engine.state.output
        items = output if isinstance(output, list) and output and isinstance(output[0], dict) else None
        if items is None or self.image_key not in items[0]:
            batch = engine.state.batch
            items = batch if isinstance(batch, list) else [batch]
        for item in items:
            meta = getattr(item.get(self.image_key), "meta", {}) if isinstance(item, dict) else {}
            names = meta.get("filename_or_obj", "?")
            for name in names if isinstance(names, (list, tuple)) else [names]:
                self._names.append(str(name))

    def _write(self, engine: Engine) -> None:
        names = string_list_all_gather(self._names)
        if torch.distributed.is_available() and torch.distributed.is_initialized() and \
                torch.distributed.get_rank() != 0:
            return
        metrics = {k: _number(v) for k, v in engine.state.metrics.items() if k.startswith(self.prefix)}
        details = {k: v for k, v in (engine.state.metric_details or {}).items() if k.startswith(self.prefix)}
        per_case = []
        for index, name in enumerate(names):
            row = {"case": name}
            for metric, values in details.items():
                tensor = torch.as_tensor(values)
                if index < tensor.shape[0]:
                    row[metric] = _number(tensor[index].float().nanmean())
            per_case.append(row)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        elapsed = round(time.time() - self._started, 1)
        report = {"epoch": engine.state.epoch, "elapsed_s": elapsed, "cases": len(names), "grid": self.grid,
                  "mean": metrics, "per_case": per_case}
        write_text_atomic(self.output_dir / "metrics.json", json.dumps(report, indent=2) + "\n")
        with (self.output_dir / "history.jsonl").open("a") as handle:
            handle.write(json.dumps({"epoch": engine.state.epoch, "elapsed_s": elapsed, **metrics}) + "\n")
        columns = ["case", *details]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in per_case:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
        write_text_atomic(self.output_dir / "metrics.csv", buffer.getvalue())
        logger.info("metrics of %d cases written to %s (metrics.json, metrics.csv): %s", len(names),
                    self.output_dir, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if v is not None))
