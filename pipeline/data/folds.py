"""Seeded K-fold splits, saved to JSON so that a run can be repeated exactly, and bound to the dataset they split.

A split file holds ``{"seed", "num_folds", "num_cases", "cases_sha256", "folds": [{"train": [case ids], "val": [case
ids]}, ...]}``: ``cases_sha256`` is the dataset's fingerprint (the SHA-256 of its sorted case ids, one per line). A
bare list of ``{"train", "val"}`` dicts (nnU-Net's ``splits_final.json``) is read as well, so nnU-Net folds can be
reused as they are. Cases are shuffled with ``numpy.random.default_rng(seed)`` and dealt into ``num_folds``
near-equal validation sets; fold ``k`` trains on the others.

Folds belong to a dataset: :func:`fold_datalist` reuses a saved split only when it splits exactly the datalist's
cases into ``num_folds`` folds. Otherwise (a copy of a bundle retrained on other data, cases added or removed) it
makes new folds, saves them in its place, keeps the old file beside it (``splits.<fingerprint>.json``) and logs one
line saying so.

Example:
    >>> splits = make_splits([f"case_{i}" for i in range(10)], num_folds=5, seed=0)
    >>> len(splits["folds"]), len(splits["folds"][0]["val"]), len(splits["folds"][0]["train"])
    (5, 2, 8)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from pipeline.errors import DatasetError
from pipeline.io.atomic import write_text_atomic

__all__ = ["cases_fingerprint", "fold_datalist", "load_splits", "make_splits", "save_splits", "split_items",
           "split_mismatch"]

logger = logging.getLogger(__name__)


def cases_fingerprint(cases: list[str]) -> str:
    """SHA-256 of the sorted, unique case ids, one per line: what a split file records of its dataset.

    Args:
        cases: case ids.

    Example:
        >>> cases_fingerprint(["b", "a"]) == cases_fingerprint(["a", "b"])
        True
    """
    return hashlib.sha256("\n".join(sorted(set(cases))).encode()).hexdigest()


def make_splits(cases: list[str], num_folds: int = 5, seed: int = 0) -> dict:
    """Shuffle ``cases`` with ``seed`` and deal them into ``num_folds`` folds.

    Args:
        cases: unique case ids (their order does not matter: they are sorted first).
        num_folds: K, >= 2 and <= number of cases. Defaults to 5.
        seed: shuffle seed. Defaults to 0.

    Raises:
        ValueError: ``num_folds`` out of range, or duplicate case ids.
    """
    ordered = sorted(cases)
    if len(set(ordered)) != len(ordered):
        dupes = sorted({c for c in ordered if ordered.count(c) > 1})
        raise ValueError(f"case ids must be unique to split into folds, got duplicates {dupes[:5]}")
    if not 2 <= int(num_folds) <= len(ordered):
        raise ValueError(f"num_folds must be >= 2 and <= the number of cases ({len(ordered)}), got {num_folds}")
    order = np.random.default_rng(int(seed)).permutation(len(ordered))
    val_sets = [sorted(ordered[i] for i in part) for part in np.array_split(order, int(num_folds))]
    folds = [{"train": sorted(set(ordered) - set(val)), "val": val} for val in val_sets]
    return {"seed": int(seed), "num_folds": int(num_folds), "num_cases": len(ordered),
            "cases_sha256": cases_fingerprint(ordered), "folds": folds}


def save_splits(splits: dict, path: str | os.PathLike) -> Path:
    """Write ``splits`` to ``path`` as JSON (atomically)."""
    return write_text_atomic(path, json.dumps(splits, indent=1) + "\n")  # unique temp names: DDP ranks race


def load_splits(path: str | os.PathLike) -> dict:
    """Read a split file written by :func:`save_splits`, or nnU-Net's ``splits_final.json``."""
    src = Path(path)
    try:
        data = json.loads(src.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(src, "a split file must be readable JSON", exc) from exc
    if isinstance(data, list):
        data = {"seed": None, "num_folds": len(data), "folds": data}
    folds = data.get("folds") if isinstance(data, dict) else None
    if not isinstance(folds, list) or not all(isinstance(f, dict) and {"train", "val"} <= set(f) for f in folds):
        raise DatasetError(src, "a split file must hold a list of {'train': [...], 'val': [...]} folds")
    return data


def split_items(items: list[dict], splits: dict, fold: int) -> tuple[list[dict], list[dict]]:
    """The (train, val) datalist items of ``fold``, in datalist order.

    Args:
        items: datalist items with a ``case`` key.
        splits: from :func:`make_splits` or :func:`load_splits`.
        fold: 0-based fold index.

    Raises:
        ValueError: fold out of range, or the split names cases the datalist lacks.
    """
    folds = splits["folds"]
    if not 0 <= int(fold) < len(folds):
        raise ValueError(f"fold must be >= 0 and < {len(folds)}, got {fold}")
    chosen = folds[int(fold)]
    known = {item["case"] for item in items}
    missing = sorted((set(chosen["train"]) | set(chosen["val"])) - known)
    if missing:
        raise ValueError(f"the split names {len(missing)} case(s) the datalist does not hold, e.g. {missing[:3]}")
    train, val = set(chosen["train"]), set(chosen["val"])
    unassigned = known - train - val
    if unassigned:
        logger.warning("%d case(s) are in neither the train nor the val part of fold %d, e.g. %s",
                       len(unassigned), fold, sorted(unassigned)[:3])
    return [i for i in items if i["case"] in train], [i for i in items if i["case"] in val]


def split_mismatch(splits: dict, cases: list[str], num_folds: int) -> str | None:
    """Why ``splits`` is not a split of ``cases`` into ``num_folds`` folds, or None when it is.

    Args:
        splits: from :func:`load_splits`.
        cases: the datalist's case ids.
        num_folds: the folds asked for.
    """
    split_cases = {c for f in splits["folds"] for part in ("train", "val") for c in f[part]}
    extra, missing = sorted(split_cases - set(cases)), sorted(set(cases) - split_cases)
    if extra or missing:
        return (f"it names {len(extra)} case(s) the datalist does not hold{f' (e.g. {extra[:2]})' if extra else ''} "
                f"and lacks {len(missing)} of its {len(set(cases))}{f' (e.g. {missing[:2]})' if missing else ''}")
    if len(splits["folds"]) != int(num_folds):
        return f"it has {len(splits['folds'])} folds, num_folds is {num_folds}"
    return None


def _replace_split(path: Path, old: dict, items: list[dict], num_folds: int, seed: int, reason: str) -> dict:
    splits = make_splits([i["case"] for i in items], num_folds, seed)
    old_fp = old.get("cases_sha256") or cases_fingerprint(
        [c for f in old["folds"] for part in ("train", "val") for c in f[part]])
    kept = path.with_name(f"{path.stem}.{old_fp[:12]}{path.suffix}")
    try:  # DDP ranks race here: the first keeps the old split, later ones find the new one (the same) in place
        if split_mismatch(load_splits(path), [i["case"] for i in items], num_folds) is None:
            return load_splits(path)
        if not kept.exists():
            os.replace(path, kept)
    except (FileNotFoundError, DatasetError):
        pass
    save_splits(splits, path)
    logger.warning("%s was made for another dataset (%s): new %d-fold split (seed %d) of these %d cases saved in its "
                   "place; the old one is kept as %s", path, reason, num_folds, seed, len(items), kept.name)
    return splits


def fold_datalist(items: list[dict], fold: int = 0, num_folds: int = 5, seed: int = 0,
                  splits_file: str | os.PathLike | None = None) -> tuple[list[dict], list[dict]]:
    """Train/val items of one fold, reusing ``splits_file`` when it splits these cases into ``num_folds`` folds,
    and writing a new split there when it does not exist or was made for another dataset (module docstring).

    Args:
        items: datalist items with a ``case`` key.
        fold: fold index. Defaults to 0.
        num_folds: K for a new split. Defaults to 5.
        seed: seed for a new split. Defaults to 0.
        splits_file: where the split is kept. Defaults to None (compute, do not save).

    Raises:
        ValueError: ``fold`` out of range, or a split that cannot be made (duplicate ids, too few cases).
    """
    cases = [i["case"] for i in items]
    path = Path(splits_file) if splits_file is not None else None
    if path is not None and path.exists():
        splits = load_splits(path)
        reason = split_mismatch(splits, cases, num_folds)
        if reason is None:
            logger.info("using the folds of %s", path)
        else:
            splits = _replace_split(path, splits, items, num_folds, seed, reason)
    else:
        splits = make_splits(cases, num_folds, seed)
        if path is not None:
            save_splits(splits, path)
            logger.info("wrote %d-fold split (seed %d) to %s", num_folds, seed, path)
    return split_items(items, splits, fold)
