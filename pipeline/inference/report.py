"""The batch job's report: per-case status, seconds and label volumes, as JSON and CSV, written atomically.

With ``--statistics`` (``JobReport(extras=("statistics",))``) each case also holds its per-label statistics
(:mod:`pipeline.inference.statistics`) and the CSV gets ``<label>_voxels``, ``<label>_mean``, ``<label>_median``,
``<label>_std`` for each label, in label order, after the volume columns; with ``--preview`` each case names its
picture. Without them both files are as they were before these options existed.

Example:
    >>> report = JobReport(model="ct.ts", output_dir="out", labels={"1": "liver"})
    >>> report.add(CaseResult(case="a", input="a.nii.gz", output="out/a_seg.nii.gz", status="ok", seconds=1.5,
    ...                       volumes_ml={"liver": 1520.3}))
    >>> report.counts()
    {'ok': 1, 'skipped': 0, 'failed': 0}
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.inference.statistics import STATISTICS_FIELDS
from pipeline.io.atomic import write_text_atomic

__all__ = ["CaseResult", "JobReport"]


@dataclass
class CaseResult:
    """One input's outcome.

    Args:
        case: case name (the output's stem).
        input: the input path.
        output: the label map written (or found, when skipped).
        status: ``"ok"``, ``"skipped"`` (output already complete) or ``"failed"``.
        seconds: wall time spent on it.
        error: why it failed.
        volumes_ml: label name -> volume in millilitres.
        warning: why its labels may be meaningless although it ran (e.g. a constant image), or which optional
            output (statistics, preview) could not be made and why.
        statistics: label name -> ``{"voxels", "mean", "median", "std"}`` (``--statistics``); None: not asked for,
            or not made (the warning says why). Left out of the JSON when None.
        preview: the preview PNG written (``--preview``); None: not asked for, or not made. Left out of the JSON when
            None.
    """

    case: str
    input: str
    output: str = ""
    status: str = "ok"
    seconds: float = 0.0
    error: str = ""
    volumes_ml: dict[str, float] = field(default_factory=dict)
    warning: str = ""
    statistics: dict[str, dict] | None = None
    preview: str | None = None

    def to_dict(self) -> dict:
        """The case as ``report.json`` holds it (the optional outputs only where present)."""
        return {k: v for k, v in asdict(self).items() if v is not None or k not in _OPTIONAL}


_OPTIONAL = ("statistics", "preview")


@dataclass
class JobReport:
    """All cases of one job (or one shard of it).

    Args:
        model: the TorchScript file.
        output_dir: where labels and reports go.
        labels: label id -> name (background included or not).
        shard: ``(index, count)``. Defaults to ``(0, 1)``.
        settings: device, level, overlap, TTA, ... as run. Defaults to empty.
        ignored: files found under the input that are not images to segment (DICOM SEG, SR, RT objects, damaged
            files...), as ``{"path", "reason", "damaged"}``; they are not cases and do not fail the job.
    """

    model: str
    output_dir: str
    labels: dict[str, str]
    shard: tuple[int, int] = (0, 1)
    settings: dict = field(default_factory=dict)
    cases: list[CaseResult] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    ignored: list[dict] = field(default_factory=list)
    extras: tuple[str, ...] = ()

    def add(self, result: CaseResult) -> None:
        self.cases.append(result)

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.cases) for s in ("ok", "skipped", "failed")}

    def incomplete(self) -> list[CaseResult]:
        """The cases with a label map (``ok`` or ``skipped``) that lack an optional output asked for."""
        return [c for c in self.cases if c.status != "failed" and any(getattr(c, n) is None for n in self.extras)]

    @property
    def stem(self) -> str:
        index, count = self.shard
        return "report" if count == 1 else f"report.shard-{index}-of-{count}"

    def to_dict(self) -> dict:
        return {"model": self.model, "output_dir": self.output_dir, "shard": list(self.shard),
                "settings": self.settings, "labels": self.labels, "counts": self.counts(),
                "seconds": round(time.time() - self.started, 2), "cases": [c.to_dict() for c in self.cases],
                "ignored": self.ignored}

    def write(self) -> tuple[Path, Path]:
        """Write ``<stem>.json`` and ``<stem>.csv`` into the output folder (temporary file, then rename)."""
        folder = Path(self.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        names = [n for k, n in sorted(self.labels.items(), key=lambda kv: int(kv[0])) if str(k) != "0"]
        stats = [(n, f) for n in names for f in STATISTICS_FIELDS] if "statistics" in self.extras else []
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["case", "status", "seconds", *[f"{n}_ml" for n in names], *[f"{n}_{f}" for n, f in stats],
                         "input", "output", "error", "warning"])
        for c in self.cases:
            writer.writerow([c.case, c.status, f"{c.seconds:.2f}", *[_ml(c.volumes_ml.get(n)) for n in names],
                             *[_stat((c.statistics or {}).get(n, {}).get(f)) for n, f in stats],
                             c.input, c.output, c.error, c.warning])
        for item in self.ignored:  # a spreadsheet shows them beside the cases
            writer.writerow(["", "ignored", "", *["" for _ in names], *["" for _ in stats], item["path"], "",
                             item["reason"], ""])
        paths = (folder / f"{self.stem}.json", folder / f"{self.stem}.csv")
        for path, text in zip(paths, (json.dumps(self.to_dict(), indent=1) + "\n", buffer.getvalue())):
            write_text_atomic(path, text)
        return paths


def _ml(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _stat(value: float | None) -> str:
    """A statistic in the CSV: a count as it is, an intensity to 6 significant digits, blank when absent."""
    if value is None:
        return ""
    return str(value) if isinstance(value, int) else f"{value:.6g}"
