"""Datalists for bundle configs: the train/val parts of a fold, checked at start-up; inputs for inference.

``prepare_fold`` is what a train config calls (``"datalist": "$pipeline.training.prepare_fold(...)"``): it
loads the dataset in any supported layout, checks every rule of :mod:`pipeline.data.validation` in the main
process before any worker starts (so a missing file or an unexpected label value stops training at once, with
the file and the rule named), checks that the network has an output channel for every declared label, and
splits it with a seeded, saved K-fold split.

Example:
    >>> parts = prepare_fold("data/Task04_Hippocampus", fold=0, num_folds=5, seed=0, num_classes=3)  # doctest: +SKIP
    >>> len(parts["train"]), len(parts["val"])                                                      # doctest: +SKIP
    (166, 42)
"""

from __future__ import annotations

import logging
import os

from pipeline.data.datalist import load_datalist
from pipeline.data.discover import find_cases
from pipeline.data.folds import fold_datalist
from pipeline.data.validation import validate_datalist
from pipeline.errors import DatasetError

__all__ = ["inference_items", "prepare_fold"]

logger = logging.getLogger(__name__)

_CHECKS = ("full", "headers", "none")


def prepare_fold(dataset_dir: str | os.PathLike, fold: int = 0, num_folds: int = 5, seed: int = 0,
                 splits_file: str | os.PathLike | None = None, num_classes: int | None = None,
                 fmt: str = "auto", check: str = "full", channels: int | None = None,
                 on_error: str = "raise") -> dict[str, list[dict]]:
    """Load, check and split a dataset.

    Args:
        dataset_dir: dataset folder (MSD or nnU-Net v2 raw) or CSV datalist.
        fold: fold index. Defaults to 0.
        num_folds: K. Defaults to 5.
        seed: split seed. Defaults to 0.
        splits_file: JSON file keeping the split; reused when it exists, so a run can be repeated exactly.
            Defaults to None (not saved).
        num_classes: the network's output channels; every declared label id must be below it.
            Defaults to None (not checked).
        fmt: datalist layout, see :func:`pipeline.data.load_datalist`. Defaults to ``"auto"``.
        check: ``"full"`` (headers and label values), ``"headers"`` (files, shapes, grids) or ``"none"``.
            Defaults to ``"full"``.
        channels: the network's input channels (``in_channels``); every case must have as many.
            Defaults to None (all cases the same).
        on_error: ``"raise"``, or ``"exit"``: log the problems and end the process with status 1 (what a bundle
            run on the command line wants: the rule and the file, not a traceback through MONAI's config
            machinery). Defaults to ``"raise"``.

    Returns:
        ``{"train": [...], "val": [...], "all": [...]}`` of datalist items.

    Raises:
        DatasetError: the dataset breaks a rule (every problem is listed).
    """
    if check not in _CHECKS:
        raise ValueError(f"check must be one of {', '.join(_CHECKS)}, got '{check}'")
    if on_error not in ("raise", "exit"):
        raise ValueError(f"on_error must be 'raise' or 'exit', got '{on_error}'")
    try:
        return _prepare(dataset_dir, fold, num_folds, seed, splits_file, num_classes, fmt, check, channels)
    except (DatasetError, ValueError) as exc:
        # MONAI wraps errors raised inside config expressions in "Failed to evaluate ..."; say it plainly first.
        logger.error("the dataset cannot be used for training: %s", exc)
        if on_error == "exit":
            raise SystemExit(1) from None
        raise


def _prepare(dataset_dir: str | os.PathLike, fold: int, num_folds: int, seed: int,
             splits_file: str | os.PathLike | None, num_classes: int | None, fmt: str,
             check: str, channels: int | None) -> dict[str, list[dict]]:
    datalist = load_datalist(dataset_dir, fmt=fmt)
    if num_classes is not None and not datalist.labels:  # undeclared (CSV, paired): values must fit the network
        datalist.labels = {k: f"class {k}" for k in range(int(num_classes))}
    if num_classes is not None and datalist.labels:
        too_big = sorted(k for k in datalist.labels if k >= int(num_classes))
        if too_big:
            raise DatasetError(datalist.source, f"declared label ids must be < the network's {num_classes} output "
                               "channels (set out_channels / num_classes to the number of labels)", too_big)
    if check != "none":
        validate_datalist(datalist, read_voxels=check == "full", progress=True, channels=channels)
    elif not datalist.items:
        raise DatasetError(datalist.source, "a dataset must hold at least one case", "0 cases")
    train, val = fold_datalist(datalist.items, fold, num_folds, seed, splits_file)
    logger.info("%s: fold %d of %d: %d training and %d validation cases", datalist.source, fold, num_folds,
                len(train), len(val))
    return {"train": train, "val": val, "all": datalist.items}


def inference_items(input_path: str | os.PathLike, channels: int = 1) -> list[dict]:
    """``[{"image": path or [channel paths], "case": id}, ...]`` for every case under ``input_path`` (see
    :func:`pipeline.data.find_cases`: with several channels, 4D files, nnU-Net channel files or CSV rows).

    Args:
        input_path: an image, a DICOM series folder, a folder (searched recursively) or a CSV list.
        channels: the network's input channels. Defaults to 1.

    Raises:
        DatasetError: nothing to segment, a bad path, or cases that cannot be completed (each one named).
    """
    cases = find_cases(input_path, channels=int(channels))
    if not cases:
        raise DatasetError(input_path, "the input must hold at least one image (NIfTI, NRRD, MHA or a DICOM "
                           "series)", "none found")
    broken = [c.error for c in cases if c.error]
    if broken:
        raise DatasetError(input_path, f"every case must be complete ({len(broken)} are not)", "; ".join(broken))
    return [{"image": c.paths[0] if len(c.paths) == 1 else list(c.paths), "case": c.name} for c in cases]
