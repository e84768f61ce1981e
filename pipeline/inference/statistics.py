"""Per-label statistics of a label map against the image it was made from: voxel count and the image's intensity
mean, median and standard deviation under each label (``segment --statistics``).

Both arrays lie on one grid (the label map as written, the image as read, index order ``(X, Y[, Z])``); the
volume in mL is the job's own ``volumes_ml``. One pass over the volume: the foreground voxels are taken once,
``np.bincount`` gives every label's count, sum and squared deviations together, and one stable sort by label
(a radix sort for ``uint8`` labels) lays each label's intensities side by side, so each median reads only its
own label's voxels. No label is found with a mask over the whole volume.

- The standard deviation is the population one (``ddof=0``, numpy's default): 0 for a label of one voxel.
- The median of an even count is the mean of the two middle values (numpy's rule), so an integer image can give
  a half-integer median.
- A label the map does not hold has ``voxels`` 0 and ``None`` for the rest (``null`` in JSON, blank in CSV); no
  NaN is ever produced.
- Background (label 0) is left out.

Example:
    >>> labels = np.array([[0, 1], [1, 2]], np.uint8)
    >>> image = np.array([[5.0, 1.0], [3.0, 7.0]])
    >>> stats = label_statistics(labels, image, {"1": "a", "2": "b", "3": "c"})
    >>> stats["a"].as_dict()
    {'voxels': 2, 'mean': 2.0, 'median': 2.0, 'std': 1.0}
    >>> stats["c"].as_dict()
    {'voxels': 0, 'mean': None, 'median': None, 'std': None}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["STATISTICS_FIELDS", "LabelStatistics", "label_statistics"]

#: the fields of each label, in the order of the report's CSV columns (``<label>_voxels``, ``<label>_mean``...)
STATISTICS_FIELDS = ("voxels", "mean", "median", "std")


@dataclass(frozen=True)
class LabelStatistics:
    """One label's voxel count and the image's intensities under it.

    Args:
        voxels: number of voxels holding the label.
        mean: mean intensity, None when ``voxels`` is 0.
        median: median intensity, None when ``voxels`` is 0.
        std: population standard deviation of the intensities, None when ``voxels`` is 0.
    """

    voxels: int
    mean: float | None = None
    median: float | None = None
    std: float | None = None

    def as_dict(self) -> dict[str, int | float | None]:
        """The fields as a dict, in :data:`STATISTICS_FIELDS` order (what ``report.json`` holds)."""
        return asdict(self)


def label_statistics(labels: np.ndarray, image: np.ndarray, names: Mapping[str | int, str]) -> \
        dict[str, LabelStatistics]:
    """Voxel count, mean, median and standard deviation of ``image`` under each named label of ``labels``.

    Args:
        labels: the label map, non-negative integers (any integer dtype, or floats holding whole numbers).
        image: one channel of the image, the same shape as ``labels`` (any real dtype; summed in float64).
        names: label id -> name (the model card's labels); id 0 (background) is left out.

    Returns:
        Label name -> :class:`LabelStatistics`, in order of label id.

    Raises:
        ValueError: the shapes differ, or a label is negative or not a whole number.

    Example:
        >>> label_statistics(np.array([0, 2, 2]), np.array([9, 4, 6]), {1: "x", 2: "y"})["y"].as_dict()
        {'voxels': 2, 'mean': 5.0, 'median': 5.0, 'std': 1.0}
    """
    labels, image = np.asarray(labels), np.asarray(image)
    if labels.shape != image.shape:
        raise ValueError(f"labels and image must have one shape, got {labels.shape} and {image.shape} (statistics "
                         "take one channel of the image)")
    ids = {int(k): str(v) for k, v in names.items() if int(k) != 0}
    where = np.flatnonzero(labels)  # the foreground, taken once; background voxels are never read again
    found = labels.ravel()[where]
    if found.size and not np.issubdtype(found.dtype, np.integer):
        if not np.array_equal(found, np.round(found)):
            raise ValueError("labels must be whole numbers, got fractional values in the label map")
        found = found.astype(np.int64)
    if found.size and found.min() < 0:
        raise ValueError(f"labels must be >= 0, got {int(found.min())}")
    values = image.ravel()[where].astype(np.float64)
    size = max([*ids, int(found.max()) if found.size else 0]) + 1
    counts = np.bincount(found, minlength=size)
    means = np.bincount(found, weights=values, minlength=size) / np.maximum(counts, 1)
    # two passes over the foreground (the mean first) rather than E[x^2] - E[x]^2, which cancels for CT numbers
    squares = np.bincount(found, weights=(values - means[found]) ** 2, minlength=size)
    stds = np.sqrt(squares / np.maximum(counts, 1))
    order = np.argsort(found, kind="stable")  # each label's intensities become one contiguous run
    runs = values[order]
    ends = np.cumsum(counts)
    out = {}
    for label in sorted(ids):
        count = int(counts[label])
        if count == 0:
            out[ids[label]] = LabelStatistics(0)
            continue
        run = runs[ends[label] - count: ends[label]]
        out[ids[label]] = LabelStatistics(count, float(means[label]), float(np.median(run)), float(stds[label]))
    return out
