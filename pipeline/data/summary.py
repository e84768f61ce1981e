"""Dataset summary: cases, shapes, spacings, orientations, label counts and intensity statistics.

Built from the :class:`~pipeline.data.validation.CaseReport` list of one read of the dataset; printed by
``python -m pipeline synth`` / ``summary`` and logged as tags by the MLflow helpers.

Example:
    >>> summary = summarize_datalist(load_datalist("demo_output/data"))   # doctest: +SKIP
    >>> print(summary.to_text())                                           # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from pipeline.data.datalist import Datalist
from pipeline.data.validation import CaseReport, inspect_datalist

__all__ = ["DatasetSummary", "summarize_datalist", "summarize_reports"]


@dataclass
class DatasetSummary:
    """Aggregate facts about a dataset.

    Args:
        source: where the datalist came from.
        layout: its datalist format (msd, nnunet, paired, csv).
        cases: number of cases.
        labels: declared labels (id -> name), or the ids found when undeclared.
        channels: channel names, or the channel count as strings.
        shape_min, shape_median, shape_max: per-axis grid sizes.
        spacing_min, spacing_median, spacing_max: per-axis voxel sizes in mm.
        orientations: stored orientation code -> number of cases.
        label_voxels: label id -> voxels over all cases.
        label_cases: label id -> cases in which it occurs.
        intensity: medians over cases of each case's intensity statistics (channel 0).
        problems: number of broken rules found.
        rows: one row per case (case, shape, spacing, orientation, label voxel counts).
    """

    source: str
    layout: str
    cases: int
    labels: dict[int, str]
    channels: list[str]
    shape_min: list[int] = field(default_factory=list)
    shape_median: list[float] = field(default_factory=list)
    shape_max: list[int] = field(default_factory=list)
    spacing_min: list[float] = field(default_factory=list)
    spacing_median: list[float] = field(default_factory=list)
    spacing_max: list[float] = field(default_factory=list)
    orientations: dict[str, int] = field(default_factory=dict)
    label_voxels: dict[int, int] = field(default_factory=dict)
    label_cases: dict[int, int] = field(default_factory=dict)
    intensity: dict[str, float] = field(default_factory=dict)
    problems: int = 0
    rows: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain JSON-able dict."""
        return asdict(self)

    def to_text(self, max_rows: int = 20) -> str:
        """A readable multi-line table; per-case rows when there are at most ``max_rows`` cases."""
        def fmt(values: list[float], digits: int = 3) -> str:
            return "x".join(f"{v:.{digits}g}" for v in values)

        names = self.labels
        out = [f"dataset   {self.source} ({self.layout})",
               f"cases     {self.cases}    channels {', '.join(self.channels) or '-'}"]
        if self.shape_min:
            out.append(f"shape     min {fmt(self.shape_min, 5)}  median {fmt(self.shape_median, 5)}  "
                       f"max {fmt(self.shape_max, 5)}")
            out.append(f"spacing   min {fmt(self.spacing_min)}  median {fmt(self.spacing_median)}  "
                       f"max {fmt(self.spacing_max)} mm")
            out.append("orient.   " + ", ".join(f"{k} {v}" for k, v in sorted(self.orientations.items())))
        if self.intensity:
            out.append("intensity " + ", ".join(f"{k} {v:.4g}" for k, v in self.intensity.items())
                       + " (medians over cases)")
        for lid in sorted(set(names) | set(self.label_voxels)):
            out.append(f"label {lid:<3} {names.get(lid, '?'):<14} {self.label_voxels.get(lid, 0):>12,d} voxels "
                       f"in {self.label_cases.get(lid, 0)}/{self.cases} cases")
        if self.rows and len(self.rows) <= max_rows:
            out.append("")
            out.append(f"{'case':<24} {'shape':<14} {'spacing (mm)':<18} {'orient.':<7} label voxels")
            for row in self.rows:
                counts = " ".join(f"{k}:{v}" for k, v in row["label_counts"].items() if k != 0) or "-"
                out.append(f"{row['case']:<24} {row['shape']:<14} {row['spacing']:<18} {row['orientation']:<7} "
                           f"{counts}")
        if self.problems:
            out.append(f"PROBLEMS  {self.problems} broken rule(s): run `python -m pipeline validate` for the list")
        return "\n".join(out)


def summarize_reports(datalist: Datalist, reports: list[CaseReport]) -> DatasetSummary:
    """Aggregate per-case reports of ``datalist`` into a :class:`DatasetSummary`."""
    readable = [r for r in reports if r.geometry is not None]
    found_labels = sorted({k for r in reports for k in r.label_counts})
    labels = dict(datalist.labels) if datalist.labels else {k: str(k) for k in found_labels}
    channels = datalist.channels or [str(i) for i in range(reports[0].channels if reports else 0)]
    summary = DatasetSummary(str(datalist.source), datalist.format, len(reports), labels, channels,
                             problems=sum(len(r.problems) for r in reports))
    if readable:
        shapes = np.array([r.geometry.shape for r in readable])
        spacings = np.array([r.geometry.spacing for r in readable])
        summary.shape_min, summary.shape_max = shapes.min(0).tolist(), shapes.max(0).tolist()
        summary.shape_median = np.median(shapes, 0).tolist()
        summary.spacing_min, summary.spacing_max = spacings.min(0).tolist(), spacings.max(0).tolist()
        summary.spacing_median = np.median(spacings, 0).tolist()
        summary.orientations = dict(Counter(r.geometry.orientation for r in readable))
    voxels: Counter = Counter()
    present: Counter = Counter()
    for r in reports:
        voxels.update(r.label_counts)
        present.update(k for k, v in r.label_counts.items() if v > 0)
    summary.label_voxels, summary.label_cases = dict(sorted(voxels.items())), dict(sorted(present.items()))
    stats = [r.intensity for r in reports if r.intensity]
    if stats:
        summary.intensity = {k: float(np.median([s[k] for s in stats])) for k in stats[0]}
    for r in reports:
        g = r.geometry
        summary.rows.append({
            "case": r.case,
            "shape": "x".join(map(str, g.shape)) if g else "?",
            "spacing": "x".join(f"{s:.3g}" for s in g.spacing) if g else "?",
            "orientation": g.orientation if g else "?",
            "label_counts": r.label_counts,
        })
    return summary


def summarize_datalist(datalist: Datalist, intensity: bool = True, progress: bool = True) -> DatasetSummary:
    """Read every case once and summarise (problems are counted, not raised).

    Args:
        datalist: the dataset.
        intensity: read image voxels for intensity statistics. Defaults to True.
        progress: show a progress bar. Defaults to True.
    """
    reports = inspect_datalist(datalist, read_voxels=True, intensity=intensity, progress=progress)
    return summarize_reports(datalist, reports)
