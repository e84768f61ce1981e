"""Check a datalist before any training starts, and gather per-case facts in the same single read.

Rules (each problem names the file, the rule and the value found):
    - the dataset holds at least one case;
    - every image (every channel) exists and is readable; channels share one grid;
    - every case has the same number of channels (the network's ``in_channels`` where given; a 4D file counts
      its fourth axis);
    - every case with a ``label`` entry has that file, readable;
    - the label has the image's shape and lies on its grid (spacing, origin, direction);
    - label values are whole numbers among the declared labels (where the layout declares them);
    - every case id and every image appears once; no file is shorter than its header declares.

Example:
    >>> reports = validate_datalist(load_datalist("data/Task04_Hippocampus"))      # doctest: +SKIP
    >>> reports[0].label_counts                                                    # doctest: +SKIP
    {0: 61234, 1: 512, 2: 430}
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.console import tracked
from pipeline.data.datalist import Datalist
from pipeline.errors import DatasetError, DatasetValidationError, ImageReadError
from pipeline.io.geometry import Geometry
from pipeline.io.reader import read_header, read_image

__all__ = ["CaseReport", "DatasetValidationError", "channel_problems", "duplicate_problems", "inspect_case",
           "inspect_datalist", "validate_datalist"]

logger = logging.getLogger(__name__)


@dataclass
class CaseReport:
    """What one read of a case found.

    Args:
        case: case id.
        image: first image path.
        geometry: grid of the first image (None if unreadable).
        channels: number of image files.
        label_counts: voxels per label value (empty without a readable label or when values were not read).
        intensity: image statistics of channel 0 (``mean``, ``std``, ``p00_5``, ``p50``, ``p99_5``) when read.
        problems: the rules this case breaks.
    """

    case: str
    image: str
    geometry: Geometry | None = None
    channels: int = 1
    label_counts: dict[int, int] = field(default_factory=dict)
    intensity: dict[str, float] = field(default_factory=dict)
    problems: list[DatasetError] = field(default_factory=list)


def _intensity(array: np.ndarray) -> dict[str, float]:
    values = np.asarray(array, dtype=np.float64).ravel()
    p0, p50, p100 = np.percentile(values, [0.5, 50, 99.5])
    return {"mean": float(values.mean()), "std": float(values.std()), "p00_5": float(p0), "p50": float(p50),
            "p99_5": float(p100)}


def inspect_case(item: dict, labels: dict[int, str] | None = None, read_voxels: bool = True,
                 intensity: bool = False) -> CaseReport:
    """Read one case's headers (and label voxels) and record what breaks the rules.

    Args:
        item: datalist entry with ``image`` (path or list of paths) and optionally ``label`` and ``case``.
        labels: declared label ids; None skips the membership check (whole numbers are still required).
        read_voxels: read the label voxels (value checks, counts). Defaults to True.
        intensity: also read channel 0's voxels for :attr:`CaseReport.intensity`. Defaults to False.
    """
    images = item["image"] if isinstance(item["image"], list) else [item["image"]]
    report = CaseReport(case=str(item.get("case", Path(images[0]).name)), image=str(images[0]),
                        channels=len(images))
    geometries = []
    components = 0
    for path in images:
        if not Path(path).exists():
            report.problems.append(DatasetError(path, "every image named by the datalist must exist"))
            continue
        try:
            header = read_header(path)
        except ImageReadError as exc:
            report.problems.append(DatasetError(path, "images must be readable", exc.reason))
            continue
        geometries.append((path, header.geometry))
        components += header.components
    if len(geometries) == len(images):
        report.channels = components  # a 4D file counts its fourth axis
    if geometries:
        report.geometry = geometries[0][1]
        for path, geom in geometries[1:]:
            diffs = report.geometry.differences(geom)
            if diffs:
                report.problems.append(DatasetError(path, "all channels of a case must share one grid",
                                                    "; ".join(diffs)))
    if intensity and geometries and len(geometries) == len(images):
        try:
            report.intensity = _intensity(read_image(images[0]).array)
        except ImageReadError as exc:
            report.problems.append(DatasetError(images[0], "images must be readable", exc.reason))
    label = item.get("label")
    if label is None:
        return report
    if not Path(label).exists():
        report.problems.append(DatasetError(label, "every training case must have its label file (missing label)"))
        return report
    try:
        label_geom = read_header(label).geometry
    except ImageReadError as exc:
        report.problems.append(DatasetError(label, "labels must be readable", exc.reason))
        return report
    if report.geometry is not None:
        if label_geom.shape != report.geometry.shape:
            report.problems.append(DatasetError(label, f"the label's shape must equal the image's "
                                                f"{report.geometry.shape}", label_geom.shape))
            return report
        diffs = report.geometry.differences(label_geom)
        if diffs:
            report.problems.append(DatasetError(label, "the label must lie on the image's grid (same spacing, "
                                                "origin and direction; affine mismatch)", "; ".join(diffs)))
    if read_voxels:
        _check_values(report, label, labels)
    return report


def _check_values(report: CaseReport, label: str, labels: dict[int, str] | None) -> None:
    try:
        array = read_image(label).array
    except ImageReadError as exc:
        report.problems.append(DatasetError(label, "labels must be readable", exc.reason))
        return
    values, counts = np.unique(array, return_counts=True)
    if np.issubdtype(values.dtype, np.floating):
        fractional = values[~np.isfinite(values) | (values != np.round(values))]
        if fractional.size:
            report.problems.append(DatasetError(label, "label values must be whole numbers",
                                                np.round(fractional[:5], 4).tolist()))
            return
    report.label_counts = {int(v): int(c) for v, c in zip(values, counts)}
    if labels is not None:
        unexpected = sorted(set(report.label_counts) - set(labels))
        if unexpected:
            report.problems.append(DatasetError(label, f"label values must be among the declared labels "
                                                f"{sorted(labels)}", unexpected))


def inspect_datalist(datalist: Datalist, read_voxels: bool = True, intensity: bool = False,
                     progress: bool = True, workers: int = 2) -> list[CaseReport]:
    """:func:`inspect_case` for every item (in order), a few at a time, with a progress bar.

    Args:
        datalist: what to inspect.
        read_voxels: read label voxels. Defaults to True.
        intensity: read image voxels for intensity statistics. Defaults to False.
        progress: show progress (:func:`pipeline.console.progress`). Defaults to True.
        workers: reading threads. Defaults to 2.
    """
    def one(item: dict) -> CaseReport:
        return inspect_case(item, datalist.labels, read_voxels=read_voxels, intensity=intensity)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(one, datalist.items)
        return list(tracked(results, len(datalist.items), "checking cases", "case", enabled=progress, leave=False))


def channel_problems(reports: list[CaseReport], channels: int | None = None) -> list[DatasetError]:
    """Cases whose channel count differs from ``channels`` (the network's input), or, when None, from the count
    most cases have."""
    counts = [r.channels for r in reports if r.geometry is not None]
    if not counts:
        return []
    if channels is not None:
        rule, want = f"every case must have the {channels} channel(s) the network takes (in_channels)", int(channels)
    else:
        want = max(set(counts), key=counts.count)
        rule = f"all cases must have the same number of channels ({want}, as most cases have)"
    return [DatasetError(r.image, f"{r.case}: {rule}", r.channels) for r in reports
            if r.geometry is not None and r.channels != want]


def duplicate_problems(datalist: Datalist) -> list[DatasetError]:
    """Case ids and images named more than once (training refuses both: folds would leak a case)."""
    problems = []
    for key in ("case", "image"):
        seen: dict[str, int] = {}
        for item in datalist.items:
            value = str(item.get(key))
            seen[value] = seen.get(value, 0) + 1
        problems += [DatasetError(datalist.source, f"every {key} must appear once in the datalist", f"'{v}' {n} times")
                     for v, n in seen.items() if n > 1]
    return problems


def validate_datalist(datalist: Datalist, read_voxels: bool = True, intensity: bool = False,
                      progress: bool = True, channels: int | None = None) -> list[CaseReport]:
    """Inspect every case and raise if any rule is broken.

    Args:
        datalist: what to check.
        read_voxels: also check label values (reads every label). Defaults to True.
        intensity: also gather intensity statistics. Defaults to False.
        progress: show a progress bar. Defaults to True.
        channels: the number of input channels every case must have. Defaults to None (all cases the same).

    Returns:
        The per-case reports (for summaries), when nothing is wrong.

    Raises:
        DatasetError: the dataset is empty.
        DatasetValidationError: anything else; ``problems`` lists every broken rule.
    """
    if not datalist.items:
        raise DatasetError(datalist.source, "a dataset must hold at least one case", "0 cases")
    reports = inspect_datalist(datalist, read_voxels=read_voxels, intensity=intensity, progress=progress)
    problems = [p for r in reports for p in r.problems] + channel_problems(reports, channels)
    problems += duplicate_problems(datalist)
    if problems:
        raise DatasetValidationError(datalist.source, problems)
    logger.debug("%s: %d cases passed validation", datalist.source, len(reports))  # callers report it
    return reports
