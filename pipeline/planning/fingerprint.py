"""Dataset fingerprint: what the planner needs to know about a dataset, read once and cached.

Per case: stored and RAS-ordered shape and spacing, orientation, channels, the size of the non-zero region and of
the body (above -500 HU) region, voxels per label and each label's bounding box. Per channel: intensity statistics
of the voxels inside the labelled foreground (mean, std, 0.5/50/99.5 percentiles, from up to
:data:`SAMPLES_PER_CASE` voxels per case with a fixed seed), and of the whole image (0.5/99.5 percentiles), which
tell CT (air at -1000 HU) from MRI. The fingerprint is saved as JSON next to the plan and reused while every
file of the dataset has the same size and modification time.

Example:
    >>> fp = fingerprint_dataset(load_datalist("data/Task04"), cache="plans/fingerprint.json")  # doctest: +SKIP
    >>> fp.median("ras_spacing"), fp.channels[0]["foreground"]["p99_5"]                       # doctest: +SKIP
    ([1.0, 1.0, 1.0], 88134.1)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from pipeline.console import tracked
from pipeline.data.datalist import Datalist
from pipeline.errors import DatasetError, ImageReadError
from pipeline.io.atomic import write_text_atomic
from pipeline.io.reader import read_case, read_image

__all__ = ["FINGERPRINT_VERSION", "SAMPLES_PER_CASE", "CaseFingerprint", "Fingerprint", "fingerprint_dataset"]

logger = logging.getLogger(__name__)

#: Layout version of ``fingerprint.json`` (a cache with another version is recomputed).
FINGERPRINT_VERSION = 2
#: Foreground voxels sampled per case and channel for the intensity statistics.
SAMPLES_PER_CASE = 20000
#: Hounsfield value above which a CT voxel is body, not air (the body crop of the CT bundle).
BODY_HU = -500.0


@dataclass
class CaseFingerprint:
    """Facts about one case (all sizes in voxels, spacings in mm).

    Args:
        case: case id.
        shape, spacing: stored grid (index order).
        ras_shape, ras_spacing: the grid after reorientation to RAS (what the network sees).
        orientation: stored axis codes.
        channels: number of input channels.
        nonzero_shape: RAS-ordered bounding box of the voxels that are non-zero in any channel.
        body_shape: RAS-ordered bounding box of channel 0 above -500 (meaningful for CT).
        label_voxels: label id -> voxels.
        label_extent_mm: label id -> RAS-ordered bounding-box size in mm (foreground labels present).
        read_seconds: time to read the case (an estimate of caching cost).
        label_centroid_mm: label id -> centre of mass in mm along the physical axes (R-L, A-P, S-I order; the
            world frame, so that the classes' order along an axis compares across cases of any orientation).
    """

    case: str
    shape: list[int]
    spacing: list[float]
    ras_shape: list[int]
    ras_spacing: list[float]
    orientation: str
    channels: int
    nonzero_shape: list[int]
    body_shape: list[int]
    label_voxels: dict[str, int] = field(default_factory=dict)
    label_extent_mm: dict[str, list[float]] = field(default_factory=dict)
    read_seconds: float = 0.0
    label_centroid_mm: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Fingerprint:
    """A dataset's fingerprint.

    Args:
        source: the dataset folder or datalist file.
        key: digest of every file's path, size and modification time (the cache key).
        labels: label id -> name (declared, or the ids found).
        channel_names: channel names as declared (may be empty).
        modality_hint: what the dataset declares about modality (e.g. ``"CT"``, ``"MRI"``), or ``""``.
        cases: per-case facts.
        channels: per channel, ``{"foreground": {mean, std, p00_5, p50, p99_5}, "image": {p00_5, p99_5},
            "integer": bool}``.
    """

    source: str
    key: str
    labels: dict[str, str]
    channel_names: list[str]
    modality_hint: str
    cases: list[CaseFingerprint]
    channels: list[dict[str, Any]]
    version: int = FINGERPRINT_VERSION

    @property
    def spatial_dims(self) -> int:
        return len(self.cases[0].ras_shape) if self.cases else 3

    def array(self, name: str) -> np.ndarray:
        """Per-case values of a :class:`CaseFingerprint` field as a ``(cases, axes)`` array."""
        return np.asarray([getattr(c, name) for c in self.cases], dtype=float)

    def median(self, name: str) -> list[float]:
        """Per-axis median of a per-case field (e.g. ``"ras_spacing"``)."""
        return np.median(self.array(name), axis=0).tolist()

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Fingerprint:
        data = json.loads(text)
        data["cases"] = [CaseFingerprint(**c) for c in data["cases"]]
        return cls(**data)


def _files(item: dict) -> list[str]:
    images = item["image"] if isinstance(item["image"], list) else [item["image"]]
    return [*images, *([item["label"]] if item.get("label") else [])]


def dataset_key(datalist: Datalist) -> str:
    """Digest of every file's path, size and modification time: the fingerprint is reused while it holds."""
    digest = hashlib.sha1()
    for item in datalist.items:
        for path in _files(item):
            try:
                stat = os.stat(path)
                digest.update(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{path}|missing\n".encode())
    return digest.hexdigest()


def _bbox_shape(mask: np.ndarray) -> list[int]:
    if not mask.any():
        return [0] * mask.ndim
    out = []
    for axis in range(mask.ndim):
        hits = np.nonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))[0]
        out.append(int(hits[-1] - hits[0] + 1))
    return out


def _ras_axes(geometry) -> list[int]:
    """For each physical axis (R-L, A-P, S-I; x, y in 2D), the voxel axis that points along it: the order of the
    axes after ``Orientationd(axcodes="RAS")``."""
    direction = geometry.direction_matrix  # rows: physical axes, columns: voxel axes
    order = [int(np.argmax(np.abs(direction[d]))) for d in range(geometry.ndim)]
    return order if sorted(order) == list(range(geometry.ndim)) else list(range(geometry.ndim))


def _sample(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return values if values.size <= SAMPLES_PER_CASE else rng.choice(values, SAMPLES_PER_CASE, replace=False)


def _case(item: dict, index: int) -> tuple[CaseFingerprint, list[dict[str, np.ndarray]]]:
    started = time.time()
    volume = read_case(item["image"])
    geometry = volume.geometry
    array = volume.array if volume.channels > 1 else volume.array[..., None]
    label = None
    if item.get("label"):
        label = np.asarray(read_image(item["label"]).array)
        if label.shape != geometry.shape:
            raise DatasetError(item["label"], f"the label's shape must equal the image's {geometry.shape}",
                               label.shape)
    order = _ras_axes(geometry)
    spacing = np.asarray(geometry.spacing)
    nonzero = _bbox_shape((array != 0).any(axis=-1))
    body = _bbox_shape(array[..., 0] > BODY_HU)
    counts, extents, centroids = {}, {}, {}
    if label is not None:
        ids, voxels = np.unique(label.astype(np.int64), return_counts=True)
        counts = {str(int(k)): int(v) for k, v in zip(ids, voxels)}
        foreground = [int(k) for k in ids[ids > 0]]
        for k in foreground:
            extent = np.asarray(_bbox_shape(label == k)) * spacing
            extents[str(k)] = [float(extent[a]) for a in order]
        # weighted by the label itself: constant within each class, so the plain centre, without a volume of ones
        centres = ndimage.center_of_mass(label, label, foreground) if foreground else []
        for k, centre in zip(foreground, centres):
            world = geometry.direction_matrix @ (np.asarray(centre) * spacing)
            centroids[str(k)] = [round(float(v), 2) for v in world]
    rng = np.random.default_rng([index, 17])
    fg = label > 0 if label is not None and (label > 0).any() else np.ones(geometry.shape, bool)
    samples = [{"fg": _sample(array[..., c][fg].astype(np.float64), rng),
                "all": _sample(array[..., c].ravel().astype(np.float64), rng),
                "integer": bool(np.issubdtype(array.dtype, np.integer))} for c in range(array.shape[-1])]
    fp = CaseFingerprint(
        case=str(item.get("case", Path(str(volume.path)).name)), shape=list(geometry.shape),
        spacing=[float(s) for s in spacing], ras_shape=[int(geometry.shape[a]) for a in order],
        ras_spacing=[float(spacing[a]) for a in order], orientation=geometry.orientation,
        channels=int(array.shape[-1]), nonzero_shape=[nonzero[a] for a in order], body_shape=[body[a] for a in order],
        label_voxels=counts, label_extent_mm=extents, label_centroid_mm=centroids,
        read_seconds=round(time.time() - started, 3))
    return fp, samples


def _stats(values: np.ndarray) -> dict[str, float]:
    p0, p50, p100 = np.percentile(values, [0.5, 50, 99.5])
    return {"mean": float(values.mean()), "std": float(values.std()), "p00_5": float(p0), "p50": float(p50),
            "p99_5": float(p100)}


def _modality_hint(datalist: Datalist) -> str:
    names = " ".join(datalist.channels).upper()
    if "CT" in names.split() or names.startswith("CT"):
        return "CT"
    if any(t in names for t in ("MR", "T1", "T2", "FLAIR", "ADC", "DWI", "PD")):
        return "MRI"
    return ""


def fingerprint_dataset(datalist: Datalist, cache: str | os.PathLike | None = None, workers: int = 2,
                        progress: bool = True) -> Fingerprint:
    """Read every case once (or reuse ``cache`` while the files are unchanged) and fingerprint the dataset.

    Args:
        datalist: the dataset (labelled cases; images may have several channels).
        cache: ``fingerprint.json`` to reuse and (re)write. Defaults to None (no cache).
        workers: reading threads. Defaults to 2.
        progress: show a progress bar. Defaults to True.

    Raises:
        DatasetError: an empty dataset, or a case that cannot be read (the file and the reason are named).
    """
    if not datalist.items:
        raise DatasetError(datalist.source, "a dataset must hold at least one case", "0 cases")
    key = dataset_key(datalist)
    cache_path = Path(cache) if cache else None
    if cache_path is not None and cache_path.is_file():
        try:
            cached = Fingerprint.from_json(cache_path.read_text())
            if cached.key == key and cached.version == FINGERPRINT_VERSION:
                logger.info("reusing the fingerprint in %s (the dataset's files are unchanged)", cache_path)
                return cached
        except (ValueError, TypeError, KeyError):
            logger.warning("%s is not a fingerprint of this version: computing it again", cache_path)

    def one(args: tuple[int, dict]) -> tuple[CaseFingerprint, list[dict[str, np.ndarray]]]:
        index, item = args
        try:
            return _case(item, index)
        except ImageReadError as exc:
            raise DatasetError(exc.path, "every image and label must be readable", exc.reason) from None

    with ThreadPoolExecutor(max_workers=max(1, int(workers))) as pool:
        results = list(tracked(pool.map(one, enumerate(datalist.items)), len(datalist.items), "fingerprint", "case",
                               enabled=progress, leave=False))
    cases = [r[0] for r in results]
    channels = []
    for c in range(cases[0].channels):
        per_case = [r[1][c] for r in results if len(r[1]) > c]
        channels.append({"foreground": _stats(np.concatenate([s["fg"] for s in per_case])),
                         "image": _stats(np.concatenate([s["all"] for s in per_case])),
                         "integer": all(s["integer"] for s in per_case)})
    found = sorted({int(k) for c in cases for k in c.label_voxels})
    labels = {str(k): v for k, v in (datalist.labels or {k: f"class {k}" for k in found}).items()}
    fp = Fingerprint(str(datalist.source), key, labels, list(datalist.channels), _modality_hint(datalist), cases,
                     channels)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(cache_path, fp.to_json())
        logger.info("wrote the fingerprint of %d cases to %s", len(cases), cache_path)
    return fp
