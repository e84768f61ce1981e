"""The descriptive tags of a run: bundle, git commit, host, device, dataset summary, folder, name and datalist
hash, and MLflow's source tags (the params, the executed config's values, come from
:mod:`pipeline.tracking.resolved`).

Example:
    >>> sorted(run_tags({"name": "b", "version": "1"}, "cpu"))[:3]       # doctest: +SKIP
    ['bundle.display_name', 'bundle.name', 'bundle.version']
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pipeline.io import read_header, read_image
from pipeline.tracking.lineage import dataset_identity, source_tags

__all__ = ["datalist_hash", "dataset_tags", "git_commit", "run_tags"]

logger = logging.getLogger(__name__)

def git_commit(path: str | os.PathLike | None = None) -> str:
    """Commit of the git checkout holding ``path`` (default: this package), ``+dirty`` if modified, or
    ``"unknown"``."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"],
                             check=False, cwd=where, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], check=False, cwd=where,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def datalist_hash(parts: Mapping[str, Sequence[Mapping]]) -> str:
    """SHA-1 (12 hex digits) of the case ids and file names of each part: changes when the data or split do."""
    digest = hashlib.sha1()
    for part in sorted(parts):
        if part == "all":
            continue
        for item in parts[part]:
            images = item.get("image")
            names = [Path(p).name for p in (images if isinstance(images, list) else [images])]
            digest.update(json.dumps([part, item.get("case"), names, Path(str(item.get("label", ""))).name]).encode())
    return digest.hexdigest()[:12]


def dataset_tags(parts: Mapping[str, Sequence[Mapping]], sample: int = 16) -> dict[str, str]:
    """Case counts, spacing (all training cases, from headers) and intensity statistics (a fixed sample of
    ``sample`` training cases) of a fold's datalist."""
    train = list(parts.get("train", []))
    tags = {"dataset.train_cases": str(len(train)), "dataset.val_cases": str(len(parts.get("val", []))),
            "dataset.cases": str(len(parts.get("all", train)))}

    def first(item: Mapping) -> str:
        image = item["image"]
        return image[0] if isinstance(image, list) else image

    try:
        spacings = np.array([read_header(first(i)).geometry.spacing for i in train])
        if len(spacings):
            tags["dataset.spacing_median"] = json.dumps(np.round(np.median(spacings, 0), 4).tolist())
            tags["dataset.spacing_min"] = json.dumps(np.round(spacings.min(0), 4).tolist())
            tags["dataset.spacing_max"] = json.dumps(np.round(spacings.max(0), 4).tolist())
        picked = train[:: max(1, len(train) // sample)][:sample]
        stats = []
        for item in picked:
            values = np.asarray(read_image(first(item)).array, dtype=np.float64).ravel()
            stats.append(np.percentile(values, [0.5, 50, 99.5]).tolist() + [values.mean(), values.std()])
        if stats:
            med = np.median(np.array(stats), 0)
            for name, value in zip(("p00_5", "p50", "p99_5", "mean", "std"), med):
                tags[f"dataset.intensity_{name}"] = f"{value:.5g}"
            tags["dataset.intensity_sampled_cases"] = str(len(stats))
    except Exception as exc:  # noqa: BLE001 - tags are descriptive; a read problem must not stop training
        logger.warning("dataset statistics for MLflow tags are incomplete: %s", exc)
    return tags


def run_tags(meta: Mapping | None, device: object, parts: Mapping | None = None, fold: int | None = None,
             num_folds: int | None = None, seed: int | None = None, bundle_name: str = "") -> dict[str, str]:
    """Tags of a training run: bundle name and version, git commit, host, device, dataset summary and hash, and
    MLflow's ``mlflow.source.*`` and ``mlflow.user`` (:func:`pipeline.tracking.lineage.source_tags`).

    Args:
        meta: the bundle metadata (``@_meta_``).
        device: the training device.
        parts: the fold datalist (``@datalist``: ``train``, ``val``, ``all``). Defaults to None.
        fold, num_folds, seed: the split. Default to None.
        bundle_name: the bundle's folder name. Defaults to ``""``.
    """
    import torch

    meta = meta or {}
    commit = git_commit()
    tags = {
        **source_tags(commit),
        "bundle.name": bundle_name or str(meta.get("name", "")),
        "bundle.display_name": str(meta.get("name", "")),
        "bundle.version": str(meta.get("version", "")),
        "git.commit": commit,
        "host": socket.gethostname(),
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available() and str(device).startswith("cuda"):
        tags["device.name"] = torch.cuda.get_device_name(torch.device(str(device)))
    if fold is not None:
        tags["dataset.fold"] = str(fold)
    if num_folds is not None:
        tags["dataset.num_folds"] = str(num_folds)
    if seed is not None:
        tags["dataset.seed"] = str(seed)
    if parts:
        tags["dataset.datalist_sha1"] = datalist_hash(parts)
        tags.update(dataset_identity(parts))
        tags.update(dataset_tags(parts))
    return tags
