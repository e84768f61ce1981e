"""The optional outputs of a segmented case beyond its label map: per-label statistics (``--statistics``) and a
preview picture (``--preview``).

Both are made from the label map as stored (a DICOM SEG's filled gap slices count as background, as in the
volumes) and the image as read, on the input's own grid; for a multi-channel case from its first channel (the
model card's first channel name), so that the report keeps one set of columns per label. A case skipped because
its output is complete gets them as well: the job reads its label map and its input back.

They never cost a case its label map: when one cannot be made the case keeps its status and label map, the
reason is its warning, and :meth:`pipeline.inference.report.JobReport.incomplete` names it (``segment`` then
exits with status 1, as for a failed case; a re-run skips the label map and makes what is missing). A full disk
still stops the job, as it does for label maps.

Example:
    >>> extras = Extras(statistics=True)
    >>> extras.preview_name("case_01"), bool(extras), bool(Extras())
    ('case_01_preview.png', True, False)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import DiskFullError
from pipeline.inference.statistics import label_statistics
from pipeline.io import Volume

__all__ = ["PREVIEW_SUFFIX", "CaseExtras", "Extras", "first_channel"]

logger = logging.getLogger(__name__)

#: a preview's name is the case's name (its label map's, less ``_seg<ending>``) with this ending
PREVIEW_SUFFIX = "_preview.png"


def first_channel(volume: Volume) -> np.ndarray:
    """The image the statistics and the preview read: the volume itself, or its first channel."""
    return volume.array if volume.channels == 1 else volume.array[..., 0]


@dataclass
class CaseExtras:
    """What was made for one case.

    Args:
        statistics: label name -> ``{"voxels", "mean", "median", "std"}`` (None when not asked for or not made).
        preview: the PNG written (None when not asked for or not made).
        problems: why something asked for was not made, one phrase each.
    """

    statistics: dict[str, dict] | None = None
    preview: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def warning(self) -> str:
        return "; ".join(self.problems)


@dataclass(frozen=True)
class Extras:
    """Which optional outputs a job makes.

    Args:
        statistics: per-label voxel count and intensity mean, median and std in the reports. Defaults to False.
        preview: ``<case>_preview.png`` beside each label map. Defaults to False.
    """

    statistics: bool = False
    preview: bool = False

    def __bool__(self) -> bool:
        return self.statistics or self.preview

    @property
    def names(self) -> tuple[str, ...]:
        """The outputs asked for, e.g. ``("statistics", "preview")``."""
        return tuple(n for n in ("statistics", "preview") if getattr(self, n))

    def preview_name(self, case: str) -> str:
        """The preview's file name for case ``case``."""
        return f"{case}{PREVIEW_SUFFIX}"

    def unavailable(self, case: str, reason: str) -> CaseExtras:
        """Nothing made for ``case``, for ``reason`` (e.g. a skipped case's input could not be read back)."""
        problem = f"{' and '.join(self.names)} not made: {reason}"
        logger.warning("%s: %s", case, problem)
        return CaseExtras(problems=[problem])

    def make(self, labels: np.ndarray, volume: Volume, names: Mapping[str, str], folder: Path,
             case: str) -> CaseExtras:
        """The statistics and the preview of one case, as asked; a failure of either is a problem, not an error.

        Args:
            labels: the label map as stored, on ``volume``'s grid.
            volume: the image as read.
            names: label id -> name (the model card's labels).
            folder: where the preview goes (the label map's folder).
            case: the case's name (the preview's title and name).

        Raises:
            DiskFullError: the preview could not be written for lack of space (the job stops, as for a label map).
        """
        done = CaseExtras()
        image = first_channel(volume)
        if self.statistics:
            try:
                stats = label_statistics(labels, image, names)
                done.statistics = {name: s.as_dict() for name, s in stats.items()}
            except Exception as exc:  # noqa: BLE001 - the label map is written; the case keeps it
                done.problems.append(f"statistics not computed: {_reason(exc)}")
        if self.preview:
            try:
                from pipeline.inference.preview import write_preview

                path = write_preview(folder / self.preview_name(case), image, labels, volume.geometry, names, case)
                done.preview = str(path)
            except DiskFullError:
                raise
            except Exception as exc:  # noqa: BLE001 - the label map is written; the case keeps it
                done.problems.append(f"preview not written: {_reason(exc)}")
        for problem in done.problems:
            logger.warning("%s: %s", case, problem)
        return done


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, (ValueError, OSError)) else f"{type(exc).__name__}: {exc}"
